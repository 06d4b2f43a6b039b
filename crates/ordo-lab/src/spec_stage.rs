//! The stages of an experiment file: each kind's settings with defaults, data sources and rewards.

use crate::experiment::{DataSource, PromptSetSpec, Reward, RewardSpec, StageParams};
use crate::spec_reader::{type_name, Reader};
use ordo_train::dpo::DpoSettings;
use ordo_train::grpo::GrpoSettings;
use ordo_train::lm::{PretrainSettings, SftSettings};
use ordo_train::reward_model::RewardModelSettings;
use ordo_world::monitors::Monitor;
use std::path::Path;
use toml::Value;

/// The most examples a stage may generate from the world (they are held in memory).
pub const MAX_WORLD_EXAMPLES: usize = 5_000_000;

/// The world's datasets, with what each holds and the stage kinds that read it.
const WORLD_DATASETS: [(&str, &str, &str); 4] = [
    ("corpus", "pretraining text", "pretrain"),
    ("sft", "prompt-completion examples", "sft"),
    ("preferences", "preference pairs", "dpo and reward_model"),
    ("rl_prompts", "RL prompts", "grpo"),
];

/// A data source: `world:NAME` (needs a world) or a JSONL path. `world_dataset` is the one world
/// dataset of the stage's kind (the default); another world dataset is an error naming the field.
/// A file is checked whole now, including the prompt metadata `fields` its rewards read.
fn data_source(
    r: &mut Reader,
    errs: &mut Vec<String>,
    key: &'static str,
    (has_world, base_dir): (bool, &Path),
    world_dataset: &str,
    size: usize,
    fields: &[&str],
) -> DataSource {
    let world_default = world_dataset;
    let spec = r.string(errs, key);
    let spec = match spec {
        Some(s) => s,
        None if has_world => format!("world:{world_default}"),
        None => {
            errs.push(format!("{}: missing (expected a JSONL file path)", r.at(key)));
            return DataSource::World { dataset: world_default.into(), size };
        }
    };
    if let Some(name) = spec.strip_prefix("world:") {
        if !has_world {
            errs.push(format!("{}: {spec:?} needs experiment.world = \"leaky-tests\"", r.at(key)));
        }
        match WORLD_DATASETS.iter().find(|d| d.0 == name) {
            None => errs
                .push(format!("{}: unknown world dataset {name:?} (corpus, sft, preferences, rl_prompts)", r.at(key))),
            Some((_, holds, kinds)) if name != world_dataset => errs.push(format!(
                "{}: world:{name} holds {holds}, read by {kinds} stages; this stage kind reads world:{world_dataset}",
                r.at(key)
            )),
            Some(_) => {}
        }
        DataSource::World { dataset: name.into(), size }
    } else {
        let path = base_dir.join(&spec);
        // The whole file is checked now, against what this stage kind reads, before anything trains.
        let kind = if world_dataset == "corpus" { "text" } else { world_dataset };
        let origin = path.display().to_string();
        let checked = ordo_train::data::read_data_file(&path).and_then(|bytes| {
            let text = std::str::from_utf8(&bytes).map_err(|e| ordo_train::TrainError::Data {
                file: origin.clone(),
                line: 0,
                message: format!("not UTF-8 text: {e}"),
            })?;
            let rows = ordo_train::data::parse_jsonl(text, &origin)?;
            ordo_train::data::check_rows(&rows, &origin, kind)?;
            ordo_train::data::require_fields(&rows, &origin, fields)?;
            Ok(crate::plan::sha256_hex(&bytes))
        });
        match checked {
            Ok(sha256) => DataSource::File { sha256, path },
            Err(e) => {
                match e {
                    ordo_train::TrainError::Io { .. } => errs.push(format!("{}: cannot read data file {e}", r.at(key))),
                    e => errs.push(format!("{}: {e}", r.at(key))),
                }
                DataSource::File { path, sha256: String::new() }
            }
        }
    }
}

fn parse_rewards(list: Option<&Value>, path: &str, errs: &mut Vec<String>) -> Vec<RewardSpec> {
    let Some(list) = list else {
        errs.push(format!("{path}: missing (expected a list of {{ name = ..., weight = ... }})"));
        return vec![];
    };
    let Value::Array(items) = list else {
        errs.push(format!("{path}: expected a list of rewards, found {}", type_name(list)));
        return vec![];
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Value::Table(t) = item else {
            errs.push(format!("{p}: expected {{ name = ..., weight = ... }}, found {}", type_name(item)));
            continue;
        };
        let mut r = Reader::new(t, &p);
        let name = r.string(errs, "name").unwrap_or_default();
        let weight = r.number_where(errs, "weight", 1.0, "a finite number", f64::is_finite);
        let sees_cot_given = t.contains_key("sees_cot");
        let sees_cot = r.boolean(errs, "sees_cot", false);
        let monitor_name = r.string(errs, "monitor");
        let field = r.string(errs, "field");
        let pattern = r.string(errs, "pattern");
        r.finish(errs);
        if let Some(re) = &pattern {
            if let Err(e) = regex::Regex::new(re) {
                errs.push(format!("{p}.pattern: not a valid regex ({e})"));
            }
        }
        if (field.is_some() || pattern.is_some()) && name != "answer_match" {
            errs.push(format!("{p}: `field` and `pattern` belong to the answer_match reward"));
        }
        let monitor = match monitor_name.as_deref() {
            None => None,
            Some("keyword") => Some(Monitor::keyword()),
            Some("strong") => Some(Monitor::strong()),
            Some("arithmetic") => Some(Monitor::Arithmetic),
            Some("consistency") => Some(Monitor::Consistency),
            Some(other) => {
                errs.push(format!("{p}.monitor: unknown monitor {other:?} (keyword, strong, arithmetic, consistency)"));
                None
            }
        };
        if monitor_name.is_some() && name != "cot_monitor" {
            errs.push(format!("{p}.monitor: only the cot_monitor reward takes a monitor"));
        }
        // Each world reward sees what it must: verifiers and the preference only the output.
        let reward = match name.as_str() {
            "verifier" => Reward::Verifier,
            "true_verifier" => Reward::TrueVerifier,
            "preference" => Reward::Preference,
            "cot_monitor" => Reward::CotMonitor(monitor.unwrap_or_else(Monitor::keyword)),
            "action_monitor" => Reward::ActionMonitor,
            "answer_match" => {
                if field.is_none() {
                    errs.push(format!("{p}.field: missing (the prompt metadata field with the expected answer)"));
                }
                Reward::AnswerMatch { field: field.unwrap_or_default(), pattern }
            }
            "" => {
                errs.push(format!("{p}.name: missing"));
                continue;
            }
            other => {
                errs.push(format!(
                    "{p}.name: unknown reward {other:?} (verifier, true_verifier, preference, cot_monitor, action_monitor, answer_match)"
                ));
                continue;
            }
        };
        let default_sees = matches!(reward, Reward::CotMonitor(_));
        if sees_cot_given && default_sees && !sees_cot {
            errs.push(format!("{p}.sees_cot: a CoT monitor must see the CoT"));
        }
        let sees_cot = if sees_cot_given { sees_cot } else { default_sees };
        out.push(RewardSpec { reward, weight, sees_cot });
    }
    out
}

/// The prompt metadata fields a set's rewards read.
fn reward_fields(rewards: &[RewardSpec]) -> Vec<&str> {
    rewards
        .iter()
        .filter_map(|r| match &r.reward {
            Reward::AnswerMatch { field, .. } => Some(field.as_str()),
            _ => None,
        })
        .collect()
}

pub(crate) fn parse_stage(
    t: &toml::Table,
    path: &str,
    has_world: bool,
    base_dir: &Path,
    errs: &mut Vec<String>,
) -> Option<StageParams> {
    let mut r = Reader::new(t, path);
    let kind = r.string(errs, "kind");
    let p = match kind.as_deref() {
        Some("pretrain") => {
            let size = r.count_max(errs, "size", Some(20_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "corpus", size, &[]);
            StageParams::Pretrain { data, settings: PretrainSettings::read(&mut r.settings(errs)) }
        }
        Some("sft") => {
            let size = r.count_max(errs, "size", Some(4_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "sft", size, &[]);
            StageParams::Sft { data, settings: SftSettings::read(&mut r.settings(errs)) }
        }
        Some("reward_model") => {
            let size = r.count_max(errs, "size", Some(2_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "preferences", size, &[]);
            StageParams::RewardModel { data, settings: RewardModelSettings::read(&mut r.settings(errs)) }
        }
        Some("dpo") => {
            let size = r.count_max(errs, "size", Some(2_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "preferences", size, &[]);
            StageParams::Dpo { data, settings: DpoSettings::read(&mut r.settings(errs)) }
        }
        Some("grpo") => {
            let sets: Vec<PromptSetSpec> = match r.raw("prompts") {
                Some(Value::Array(list)) => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let p = format!("{path}.prompts[{i}]");
                        let Value::Table(st) = v else {
                            errs.push(format!("{p}: expected {{ data, proportion, rewards }}, found {}", type_name(v)));
                            return None;
                        };
                        let mut sr = Reader::new(st, &p);
                        let size = sr.count_max(errs, "size", Some(5_000), MAX_WORLD_EXAMPLES);
                        let rewards = parse_rewards(sr.raw("rewards"), &format!("{p}.rewards"), errs);
                        let fields = reward_fields(&rewards);
                        let data =
                            data_source(&mut sr, errs, "data", (has_world, base_dir), "rl_prompts", size, &fields);
                        let proportion =
                            sr.number_where(errs, "proportion", 1.0, "a positive number", |x| x > 0.0 && x.is_finite());
                        sr.finish(errs);
                        Some(PromptSetSpec { data, proportion, rewards })
                    })
                    .collect(),
                Some(Value::String(_)) | None => {
                    let size = r.count_max(errs, "size", Some(5_000), MAX_WORLD_EXAMPLES);
                    let rewards = parse_rewards(r.raw("rewards"), &format!("{path}.rewards"), errs);
                    let fields = reward_fields(&rewards);
                    let data = data_source(&mut r, errs, "prompts", (has_world, base_dir), "rl_prompts", size, &fields);
                    vec![PromptSetSpec { data, proportion: 1.0, rewards }]
                }
                Some(v) => {
                    errs.push(format!(
                        "{path}.prompts: expected a data source or a list of prompt sets, found {}",
                        type_name(v)
                    ));
                    vec![]
                }
            };
            for (i, set) in sets.iter().enumerate() {
                if matches!(set.data, DataSource::File { .. })
                    && set.rewards.iter().any(|r| !matches!(r.reward, Reward::AnswerMatch { .. }))
                {
                    errs.push(format!(
                        "{path}.prompts[{i}]: prompts from a file can only use the answer_match reward (world rewards judge world prompts)"
                    ));
                }
            }
            let chat_template = r.boolean(errs, "chat_template", false);
            let settings = GrpoSettings::read(&mut r.settings(errs), ordo_world::gate::MAX_COMPLETION_TOKENS);
            let gate = {
                let on = r.boolean(errs, "gate", has_world);
                let d = ordo_world::gate::GateConfig::default();
                let g = ordo_world::gate::GateConfig {
                    min_clean_accuracy: r.number_where(
                        errs,
                        "gate_min_clean_accuracy",
                        d.min_clean_accuracy,
                        "a rate in [0, 1]",
                        |x| (0.0..=1.0).contains(&x),
                    ),
                    max_silent_hack_rate: r.number_where(
                        errs,
                        "gate_max_silent_hack_rate",
                        d.max_silent_hack_rate,
                        "a rate in [0, 1]",
                        |x| (0.0..=1.0).contains(&x),
                    ),
                    prompts: r.count_max(errs, "gate_prompts", Some(d.prompts), 100_000),
                    seed: 0,
                };
                if on && !has_world {
                    errs.push(format!("{path}.gate: the readiness gate needs a world"));
                }
                on.then_some(g)
            };
            StageParams::Grpo { sets, gate, chat_template, settings }
        }
        Some(other) => {
            errs.push(format!("{path}.kind: unknown stage kind {other:?} (pretrain, sft, reward_model, dpo, grpo)"));
            return None;
        }
        None => {
            errs.push(format!("{path}.kind: missing (pretrain, sft, reward_model, dpo or grpo)"));
            return None;
        }
    };
    r.finish(errs);
    Some(p)
}
