//! The stages of an experiment file: each kind's settings with defaults, data sources and rewards.

use crate::experiment::{DataSource, PromptSetSpec, RewardSpec, StageParams};
use crate::spec_reader::{type_name, Reader};
use ordo_train::losses::{AdvantageEstimator, PreferenceLoss};
use ordo_train::optim::AdamWConfig;
use ordo_train::schedule::Decay;
use ordo_train::trainer::OptimConfig;
use ordo_world::monitors::Monitor;
use std::path::Path;
use toml::Value;

/// The most examples a stage may generate from the world (they are held in memory).
pub const MAX_WORLD_EXAMPLES: usize = 5_000_000;
/// The longest sequence a setting may ask for (the model's own position limit is checked too).
pub const MAX_SEQUENCE: usize = 1 << 20;

/// The optimiser settings every stage kind accepts.
fn optim(r: &mut Reader, errs: &mut Vec<String>, batch: usize, lr: f64) -> OptimConfig {
    let steps = r.count(errs, "steps", None);
    let batch_size = r.count(errs, "batch_size", Some(batch));
    let micro_batch_size = r.count(errs, "micro_batch_size", Some(batch_size));
    let decay = match r.string(errs, "schedule").as_deref() {
        None | Some("constant") => Decay::Constant,
        Some("linear") => Decay::Linear,
        Some("cosine") => Decay::Cosine,
        Some(other) => {
            errs.push(format!(
                "{}: expected \"constant\", \"linear\" or \"cosine\", found {other:?}",
                r.at("schedule")
            ));
            Decay::Constant
        }
    };
    let cfg = OptimConfig {
        steps,
        batch_size,
        micro_batch_size,
        lr: r.number(errs, "lr", lr),
        warmup_steps: r.opt_count(errs, "warmup_steps").unwrap_or(0),
        decay,
        min_lr_ratio: r.number(errs, "min_lr_ratio", 0.1),
        adamw: AdamWConfig {
            beta1: r.number(errs, "beta1", 0.9),
            beta2: r.number(errs, "beta2", 0.999),
            eps: 1e-8,
            weight_decay: r.number(errs, "weight_decay", 0.01),
        },
        max_grad_norm: r.number(errs, "max_grad_norm", 1.0),
    };
    if let Err(e) = cfg.validate() {
        errs.push(format!("{}: {e}", r.path));
    }
    cfg
}

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
        // Each world reward sees what it must: verifiers and the preference only the output.
        let (default_sees, monitor) = match name.as_str() {
            "verifier" | "true_verifier" | "preference" => (false, None),
            "cot_monitor" => (true, Some(monitor.unwrap_or_else(Monitor::keyword))),
            "action_monitor" => (false, Some(Monitor::ActionOnly)),
            "answer_match" => {
                if field.is_none() {
                    errs.push(format!("{p}.field: missing (the prompt metadata field with the expected answer)"));
                }
                (false, None)
            }
            "" => {
                errs.push(format!("{p}.name: missing"));
                (false, None)
            }
            other => {
                errs.push(format!(
                    "{p}.name: unknown reward {other:?} (verifier, true_verifier, preference, cot_monitor, action_monitor, answer_match)"
                ));
                (false, None)
            }
        };
        if sees_cot_given && name == "cot_monitor" && !sees_cot {
            errs.push(format!("{p}.sees_cot: a CoT monitor must see the CoT"));
        }
        let sees_cot = if sees_cot_given { sees_cot } else { default_sees };
        out.push(RewardSpec { name, weight, sees_cot, monitor, field, pattern });
    }
    out
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
            let seq_len = r.count_max(errs, "seq_len", Some(128), MAX_SEQUENCE);
            let mut o = optim(&mut r, errs, 128, 2e-3);
            o.adamw.beta2 = if t.contains_key("beta2") { o.adamw.beta2 } else { 0.98 };
            StageParams::Pretrain { data, seq_len, optim: o }
        }
        Some("sft") => {
            let size = r.count_max(errs, "size", Some(4_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "sft", size, &[]);
            let max_len = r.count_max(errs, "max_len", Some(256), MAX_SEQUENCE);
            StageParams::Sft { data, max_len, optim: optim(&mut r, errs, 16, 1e-4) }
        }
        Some("reward_model") => {
            let size = r.count_max(errs, "size", Some(2_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "preferences", size, &[]);
            let init_std = r.number_where(errs, "init_std", 0.02, "a number in (0, 1]", |x| x > 0.0 && x <= 1.0);
            StageParams::RewardModel { data, init_std, optim: optim(&mut r, errs, 16, 1e-4) }
        }
        Some("dpo") => {
            let size = r.count_max(errs, "size", Some(2_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (has_world, base_dir), "preferences", size, &[]);
            let loss = match r.string(errs, "loss").as_deref() {
                None | Some("dpo") => PreferenceLoss::Dpo,
                Some("ipo") => PreferenceLoss::Ipo,
                Some("simpo") => PreferenceLoss::Simpo,
                Some(other) => {
                    errs.push(format!("{path}.loss: expected \"dpo\", \"ipo\" or \"simpo\", found {other:?}"));
                    PreferenceLoss::Dpo
                }
            };
            let beta = r.number_where(errs, "beta", 0.1, "a number in (0, 1000]", |x| x > 0.0 && x <= 1000.0);
            let simpo_gamma =
                r.number_where(errs, "simpo_gamma", 0.5, "a number in [0, 100]", |x| (0.0..=100.0).contains(&x));
            let length_normalize = r.boolean(errs, "length_normalize", false);
            StageParams::Dpo { data, loss, beta, simpo_gamma, length_normalize, optim: optim(&mut r, errs, 16, 1e-4) }
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
                        let fields: Vec<&str> = rewards.iter().filter_map(|r| r.field.as_deref()).collect();
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
                    let fields: Vec<&str> = rewards.iter().filter_map(|r| r.field.as_deref()).collect();
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
                if matches!(set.data, DataSource::File { .. }) && set.rewards.iter().any(|r| r.name != "answer_match") {
                    errs.push(format!(
                        "{path}.prompts[{i}]: prompts from a file can only use the answer_match reward (world rewards judge world prompts)"
                    ));
                }
            }
            let cot = match (r.string(errs, "cot_open"), r.string(errs, "cot_close")) {
                (None, None) => None,
                (Some(open), Some(close)) if !open.is_empty() && !close.is_empty() => {
                    Some(ordo_train::rewards::CotFormat { open, close })
                }
                _ => {
                    errs.push(format!("{path}: cot_open and cot_close go together and must not be empty"));
                    None
                }
            };
            let chat_template = r.boolean(errs, "chat_template", false);
            let advantage = match r.string(errs, "advantage").as_deref() {
                None | Some("grpo") => AdvantageEstimator::Grpo { scale_by_std: true },
                Some("dr_grpo") => AdvantageEstimator::Grpo { scale_by_std: false },
                Some("rloo") => AdvantageEstimator::Rloo,
                Some(other) => {
                    errs.push(format!("{path}.advantage: expected \"grpo\", \"dr_grpo\" or \"rloo\", found {other:?}"));
                    AdvantageEstimator::Grpo { scale_by_std: true }
                }
            };
            let aggregation = r.string(errs, "aggregation").unwrap_or_else(|| "sequence_mean".into());
            if ordo_train::grpo::parse_aggregation(&aggregation, 1).is_err() {
                errs.push(format!(
                    "{path}.aggregation: expected sequence_mean, token_mean or dr_grpo, found {aggregation:?}"
                ));
            }
            StageParams::Grpo {
                sets,
                group_size: {
                    let g = r.count_max(errs, "group_size", Some(8), 1024);
                    if g < 2 {
                        errs.push(format!(
                            "{path}.group_size: expected at least 2 (advantages compare samples within a group), found {g}"
                        ));
                    }
                    g
                },
                max_new_tokens: r.count_max(
                    errs,
                    "max_new_tokens",
                    Some(ordo_world::gate::MAX_COMPLETION_TOKENS),
                    MAX_SEQUENCE,
                ),
                temperature: r.number_where(errs, "temperature", 1.0, "a number in (0, 10]", |x| x > 0.0 && x <= 10.0),
                top_p: {
                    let v = r.opt_number(errs, "top_p");
                    if v.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
                        errs.push(format!("{path}.top_p: expected a number in (0, 1], found {}", v.unwrap_or(0.0)));
                    }
                    v
                },
                top_k: r.opt_count(errs, "top_k"),
                inner_epochs: r.count_max(errs, "inner_epochs", Some(1), 100),
                clip_low: r.number_where(errs, "clip_low", 0.2, "a number in [0, 1)", |x| (0.0..1.0).contains(&x)),
                clip_high: r.number_where(errs, "clip_high", 0.2, "a number in [0, 10]", |x| (0.0..=10.0).contains(&x)),
                kl_coef: r.number_where(errs, "kl_coef", 0.02, "a number in [0, 100]", |x| (0.0..=100.0).contains(&x)),
                advantage,
                aggregation,
                gate: {
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
                },
                optim: optim(&mut r, errs, 16, 1e-4),
                cot,
                chat_template,
            }
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
