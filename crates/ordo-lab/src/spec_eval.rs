//! The `[probe]` table of an experiment file.

use crate::experiment::{ProbeSpec, StageParams};
use toml::Value;

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
    // The probe measures every arm's final model, whatever it has become: a readiness gate, which keeps
    // RL from starting on an under-trained base, would refuse exactly the models it must measure.
    let params = match params {
        StageParams::Grpo { sets, chat_template, settings, .. } => {
            StageParams::Grpo { sets, gate: None, chat_template, settings }
        }
        other => other,
    };
    Some(ProbeSpec { stage, params, every })
}
