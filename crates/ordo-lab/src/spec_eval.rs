//! The `[probe]` table of an experiment file.

use crate::experiment::{ProbeSpec, StageParams, TransferProbe};
use toml::Value;

/// Parses one stage table at a path, recording problems.
pub type StageParser<'a> = dyn FnMut(&toml::Table, &str, &mut Vec<String>) -> Option<StageParams> + 'a;

/// The world's built-in probes, as stage TOML: the uptake probe and the transfer probe.
#[derive(Clone, Copy, Default)]
pub struct BuiltInProbes<'a> {
    pub probe: Option<&'a str>,
    pub transfer: Option<&'a str>,
}

/// Reads `[probe]`: `stage` (a stage name; default: the world's built-in probe), `transfer` (a stage
/// name, or false; default: the world's built-in transfer probe with the built-in probe, none with a
/// named one), `every` (steps between measurements, default 10) and `enabled` (default true).
pub fn parse_probe(
    t: Option<&toml::Table>,
    root: &toml::Table,
    errs: &mut Vec<String>,
    built_in: BuiltInProbes,
    parse_stage: &mut StageParser,
) -> Option<ProbeSpec> {
    // Without a `[probe]` table a world without a built-in probe has none.
    if t.is_none() && built_in.probe.is_none() {
        return None;
    }
    let empty = toml::Table::new();
    let t = t.unwrap_or(&empty);
    for k in t.keys() {
        if !["stage", "transfer", "every", "enabled"].contains(&k.as_str()) {
            errs.push(format!("probe.{k}: unknown key (known keys here: enabled, every, stage, transfer)"));
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
            let Some(text) = built_in.probe else {
                errs.push(
                    "probe.stage: this world has no built-in probe; name a stage of [stages], or leave out [probe]"
                        .into(),
                );
                return None;
            };
            ("default_probe".to_string(), built_in_stage(text, "default_probe", errs, parse_stage)?)
        }
        Some(v) => named_stage(v, "probe.stage", root, errs, parse_stage)?,
    };
    let transfer = match (t.get("transfer"), t.contains_key("stage")) {
        (Some(Value::Boolean(false)), _) | (None, true) => None,
        (None, false) => built_in.transfer.and_then(|text| {
            let name = "default_transfer_probe";
            built_in_stage(text, name, errs, parse_stage).map(|params| TransferProbe { stage: name.into(), params })
        }),
        (Some(v), _) => named_stage(v, "probe.transfer", root, errs, parse_stage)
            .map(|(stage, params)| TransferProbe { stage, params: without_gate(params) }),
    };
    if let Some(tp) = &transfer {
        if tp.stage == stage {
            errs.push(format!(
                "probe.transfer: {:?} is the probe stage itself; name a stage that teaches the values in the second \
                 context (prompts = \"world:rl_prompts_transfer\" or data = \"world:honesty_pairs_transfer\")",
                tp.stage
            ));
        }
        if every > tp.params.steps() {
            errs.push(format!(
                "probe.every: {every} is more than the transfer probe stage's {} steps",
                tp.params.steps()
            ));
        }
    }
    if every > params.steps() {
        errs.push(format!("probe.every: {every} is more than the probe stage's {} steps", params.steps()));
    }
    Some(ProbeSpec { stage, params: without_gate(params), every, transfer })
}

/// A probe measures every arm's final model, whatever it has become: a readiness gate, which keeps RL
/// from starting on an under-trained base, would refuse exactly the models it must measure.
fn without_gate(params: StageParams) -> StageParams {
    match params {
        StageParams::Grpo { sets, chat_template, settings, .. } => {
            StageParams::Grpo { sets, gate: None, chat_template, settings }
        }
        other => other,
    }
}

/// A built-in probe stage from the world's TOML.
fn built_in_stage(
    text: &str,
    name: &str,
    errs: &mut Vec<String>,
    parse_stage: &mut StageParser,
) -> Option<StageParams> {
    match toml::from_str::<toml::Table>(text) {
        Ok(table) => parse_stage(&table, name, errs).map(without_gate),
        Err(e) => {
            errs.push(format!("probe: the world's built-in {name} is not valid TOML: {e}"));
            None
        }
    }
}

/// The stage `v` names at `path` (`probe.stage` or `probe.transfer`).
fn named_stage(
    v: &Value,
    path: &str,
    root: &toml::Table,
    errs: &mut Vec<String>,
    parse_stage: &mut StageParser,
) -> Option<(String, StageParams)> {
    let Value::String(name) = v else {
        errs.push(format!("{path}: expected a stage name, found {v}"));
        return None;
    };
    let Some(Value::Table(st)) = root.get("stages").and_then(|s| s.get(name.as_str())) else {
        errs.push(format!("{path}: unknown stage {name:?}; name a stage of [stages]"));
        return None;
    };
    Some((name.clone(), parse_stage(st, &format!("stages.{name}"), errs)?))
}
