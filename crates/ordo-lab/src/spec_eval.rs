//! The `[eval]` and `[probe]` tables of an experiment file.

use crate::experiment::{ProbeSpec, StageParams};
use toml::Value;

/// Reads `[eval]` into the evaluation settings and checks them.
pub fn parse_eval(t: &toml::Table, errs: &mut Vec<String>) -> ordo_eval::EvalConfig {
    let cfg: ordo_eval::EvalConfig = match Value::Table(t.clone()).try_into() {
        Ok(c) => c,
        Err(e) => {
            errs.push(format!("eval: {}", e.to_string().trim()));
            return ordo_eval::EvalConfig::default();
        }
    };
    let l = &cfg.learned_monitor;
    for (name, v, max) in [
        ("wrong_test_prompts", cfg.wrong_test_prompts, 100_000),
        ("clean_prompts", cfg.clean_prompts, 100_000),
        ("probe_prompts", cfg.probe_prompts, 100_000),
        ("learned_monitor.train", l.train, 1_000_000),
        ("learned_monitor.heldout", l.heldout, 1_000_000),
        ("learned_monitor.epochs", l.epochs, 10_000),
    ] {
        if v == 0 || v > max {
            errs.push(format!("eval.{name}: expected a positive integer of at most {max}, found {v}"));
        }
    }
    for (name, v) in [("learned_monitor.lr", l.lr), ("learned_monitor.l2", l.l2)] {
        if !(v >= 0.0 && v.is_finite()) || (name.ends_with("lr") && v == 0.0) {
            errs.push(format!("eval.{name}: expected a finite number (lr above 0, l2 at least 0), found {v}"));
        }
    }
    let f = &cfg.early_fractions;
    if f.len() < 2 || f.iter().any(|x| !(0.0..=1.0).contains(x)) || f.windows(2).any(|w| w[0] >= w[1]) {
        errs.push(format!("eval.early_fractions: expected at least two increasing fractions in [0, 1], found {f:?}"));
    }
    if let Some(re) = &cfg.keyword_regex {
        if let Err(e) = regex::Regex::new(re) {
            errs.push(format!("eval.keyword_regex: invalid monitor regex {re:?}: {e}"));
        }
    }
    if let Some(j) = &cfg.judge {
        if !(j.base_url.starts_with("http://") || j.base_url.starts_with("https://")) {
            errs.push("eval.judge.base_url: expected an http:// or https:// URL".into());
        }
        if j.base_url.starts_with("https://") {
            errs.push(
                "eval.judge.base_url: https is not built into this ordo (no TLS library); use an http:// endpoint \
                 such as a local vLLM or llama.cpp server, or a local proxy"
                    .into(),
            );
        }
        if !(j.timeout_s > 0.0 && j.timeout_s <= ordo_eval::judge::MAX_TIMEOUT_S) {
            errs.push(format!(
                "eval.judge.timeout_s: expected seconds in (0, {}], found {}",
                ordo_eval::judge::MAX_TIMEOUT_S,
                j.timeout_s
            ));
        }
        if j.retries > ordo_eval::judge::MAX_RETRIES {
            errs.push(format!(
                "eval.judge.retries: expected at most {}, found {}",
                ordo_eval::judge::MAX_RETRIES,
                j.retries
            ));
        }
        if ordo_eval::judge::has_credentials(&j.base_url) {
            errs.push(
                "eval.judge.base_url: holds credentials (user:password@) or a query string; ordo writes the URL \
                 into its plan and results, so give the key through the environment variable that api_key_env names"
                    .into(),
            );
        }
    }
    cfg
}

/// Parses one stage table at a path, recording problems.
pub type StageParser<'a> = dyn FnMut(&toml::Table, &str, &mut Vec<String>) -> Option<StageParams> + 'a;

/// Reads `[probe]`: `stage` (a stage name; default: the world's built-in probe), `every` (steps between
/// measurements, default 10) and `enabled` (default true).
pub fn parse_probe(
    t: Option<&toml::Table>,
    root: &toml::Table,
    errs: &mut Vec<String>,
    default_probe: Option<&str>,
    parse_stage: &mut StageParser,
) -> Option<ProbeSpec> {
    let empty = toml::Table::new();
    let t = t.unwrap_or(&empty);
    for k in t.keys() {
        if !["stage", "every", "enabled"].contains(&k.as_str()) {
            errs.push(format!("probe.{k}: unknown key (known keys here: enabled, every, stage)"));
        }
    }
    match t.get("enabled") {
        None | Some(Value::Boolean(true)) => {}
        Some(Value::Boolean(false)) => return None,
        Some(v) => errs.push(format!("probe.enabled: expected true or false, found {v}")),
    }
    let every = match t.get("every") {
        None => 10,
        Some(Value::Integer(i)) if *i > 0 => *i as usize,
        Some(v) => {
            errs.push(format!("probe.every: expected a positive integer, found {v}"));
            10
        }
    };
    let (stage, params) = match t.get("stage") {
        None => {
            let Some(text) = default_probe else {
                errs.push("probe.stage: this world has no built-in probe; name a stage of [stages]".into());
                return None;
            };
            let table: toml::Table = match toml::from_str(text) {
                Ok(t) => t,
                Err(e) => {
                    errs.push(format!("probe: the world's built-in probe is not valid TOML: {e}"));
                    return None;
                }
            };
            ("default_probe".to_string(), parse_stage(&table, "default_probe", errs)?)
        }
        Some(Value::String(name)) => {
            let Some(Value::Table(st)) = root.get("stages").and_then(|s| s.get(name.as_str())) else {
                errs.push(format!("probe.stage: unknown stage {name:?}; name a stage of [stages]"));
                return None;
            };
            (name.clone(), parse_stage(st, &format!("stages.{name}"), errs)?)
        }
        Some(v) => {
            errs.push(format!("probe.stage: expected a stage name, found {v}"));
            return None;
        }
    };
    if every > params.steps() {
        errs.push(format!("probe.every: {every} is more than the probe stage's {} steps", params.steps()));
    }
    Some(ProbeSpec { stage, params, every })
}
