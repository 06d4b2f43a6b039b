//! The stages of an experiment file: each kind's settings with defaults, data sources and rewards.

use crate::experiment::ProbeSpec;
use crate::experiment::{DataSource, PromptSetSpec, Reward, RewardSpec, StageParams};
use crate::spec_reader::{type_name, Reader};
use ordo_train::dpo::DpoSettings;
use ordo_train::grpo::{GrpoSettings, DEFAULT_MAX_NEW_TOKENS};
use ordo_train::lm::{PretrainSettings, SftSettings};
use ordo_train::reward_model::RewardModelSettings;
use ordo_train::rewards::RewardTarget;
use ordo_train::schedule::ValueSchedule;
use ordo_worlds::{DatasetKind, World, WorldReward};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Value;

/// The most examples a stage may generate from the world (they are held in memory).
pub const MAX_WORLD_EXAMPLES: usize = 5_000_000;

/// A data source: `world:NAME` (needs a world) or a JSONL path. The default is the world's first
/// dataset of the stage's `kind`; a world dataset of another kind is an error naming the field. A
/// file is checked whole now, against the kind and the prompt metadata `fields` its rewards read.
fn data_source(
    r: &mut Reader,
    errs: &mut Vec<String>,
    key: &'static str,
    (world, base_dir): (Option<&dyn World>, &Path),
    kind: DatasetKind,
    size: usize,
    fields: &[&str],
) -> DataSource {
    let default = world.and_then(|w| w.datasets().iter().find(|d| d.kind == kind)).map(|d| d.name);
    let spec = match (r.string(errs, key), default) {
        (Some(s), _) => s,
        (None, Some(d)) => format!("world:{d}"),
        (None, None) => {
            errs.push(format!("{}: missing (expected a JSONL file path)", r.at(key)));
            return DataSource::World { dataset: kind.file_format().into(), size };
        }
    };
    if let Some(name) = spec.strip_prefix("world:") {
        match world {
            None => errs.push(format!("{}: {spec:?} needs a world; set experiment.world", r.at(key))),
            Some(w) => match w.datasets().iter().find(|d| d.name == name) {
                None => {
                    let names: Vec<&str> = w.datasets().iter().map(|d| d.name).collect();
                    errs.push(format!("{}: unknown world dataset {name:?} ({})", r.at(key), names.join(", ")))
                }
                Some(d) if d.kind != kind => errs.push(format!(
                    "{}: world:{name} holds {}, read by {} stages; this stage kind reads {}",
                    r.at(key),
                    d.kind.holds(),
                    d.kind.read_by(),
                    default.map_or_else(|| kind.holds().to_string(), |d| format!("world:{d}"))
                )),
                Some(_) => {}
            },
        }
        DataSource::World { dataset: name.into(), size }
    } else {
        let path = base_dir.join(&spec);
        // The whole file is checked now, against what this stage kind reads, before anything trains.
        let origin = path.display().to_string();
        let checked = ordo_train::data::read_data_file(&path).and_then(|bytes| {
            let text = std::str::from_utf8(&bytes).map_err(|e| ordo_train::TrainError::Data {
                file: origin.clone(),
                line: 0,
                message: format!("not UTF-8 text: {e}"),
            })?;
            let rows = ordo_train::data::parse_jsonl(text, &origin)?;
            ordo_train::data::check_rows(&rows, &origin, kind.file_format())?;
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

fn parse_rewards(
    list: Option<&Value>,
    path: &str,
    world: Option<&dyn World>,
    errs: &mut Vec<String>,
) -> Vec<RewardSpec> {
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
        let weight = r.schedule(errs, "weight", 1.0, "finite numbers", f64::is_finite);
        let sees_cot_given = t.contains_key("sees_cot");
        let sees_cot = r.boolean(errs, "sees_cot", false);
        let monitor_name = r.string(errs, "monitor");
        let field = r.string(errs, "field");
        let pattern = r.string(errs, "pattern");
        let rm_stage = r.string(errs, "stage");
        let rm_truth = r.string(errs, "truth");
        let target = match r.string(errs, "targets").as_deref() {
            None | Some("all") => RewardTarget::All,
            Some("output") => RewardTarget::Output,
            Some("cot") => RewardTarget::Cot,
            Some(other) => {
                errs.push(format!("{p}.targets: expected \"all\", \"output\" or \"cot\", found {other:?}"));
                RewardTarget::All
            }
        };
        r.finish(errs);
        if let Some(re) = &pattern {
            if let Err(e) = regex::Regex::new(re) {
                errs.push(format!("{p}.pattern: not a valid regex ({e})"));
            }
        }
        if (field.is_some() || pattern.is_some()) && name != "answer_match" {
            errs.push(format!("{p}: `field` and `pattern` belong to the answer_match reward"));
        }
        if rm_stage.is_some() && name != "reward_model" {
            errs.push(format!("{p}.stage: `stage` belongs to the reward_model reward"));
        }
        if rm_truth.is_some() && name != "reward_model" {
            errs.push(format!("{p}.truth: `truth` belongs to the reward_model reward"));
        }
        let kinds = world.map_or(&[][..], |w| w.rewards());
        let world_reward = kinds.iter().find(|k| k.name == name);
        let monitors = world.map_or(&[][..], |w| w.monitor_names());
        if let Some(m) = &monitor_name {
            if !world_reward.is_some_and(|k| k.takes_monitor) {
                let takers: Vec<&str> = kinds.iter().filter(|k| k.takes_monitor).map(|k| k.name).collect();
                errs.push(match takers.is_empty() {
                    true => format!("{p}.monitor: no reward here takes a monitor (monitor rewards are a world's)"),
                    false => format!("{p}.monitor: only the {} reward takes a monitor", takers.join(" and ")),
                });
            } else if !monitors.contains(&m.as_str()) {
                errs.push(format!("{p}.monitor: unknown monitor {m:?} ({})", monitors.join(", ")));
            }
        }
        let (reward, default_sees, must_see) = match (name.as_str(), world_reward, world) {
            ("answer_match", _, _) => {
                if field.is_none() {
                    errs.push(format!("{p}.field: missing (the prompt metadata field with the expected answer)"));
                }
                (Reward::AnswerMatch { field: field.unwrap_or_default(), pattern }, false, false)
            }
            ("reward_model", _, _) => {
                let Some(stage) = rm_stage else {
                    errs.push(format!(
                        "{p}.stage: missing (the reward_model stage, earlier in the arm, whose model scores)"
                    ));
                    continue;
                };
                let truth = rm_truth.and_then(|t| match (world, kinds.iter().find(|k| k.name == t)) {
                    (Some(w), Some(k)) => Some(WorldReward { name: t.clone(), monitor: w.monitor(k.name, None) }),
                    (None, _) => {
                        errs.push(format!("{p}.truth: the ground truth is a world reward; set experiment.world"));
                        None
                    }
                    (Some(_), None) => {
                        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
                        errs.push(format!("{p}.truth: unknown world reward {t:?} ({})", names.join(", ")));
                        None
                    }
                });
                // The reward model was trained on whole completions (think block included).
                (Reward::RewardModel { stage, truth }, true, false)
            }
            ("", _, _) => {
                errs.push(format!("{p}.name: missing"));
                continue;
            }
            (_, Some(k), Some(w)) => {
                let monitor = w.monitor(k.name, monitor_name.as_deref().filter(|m| monitors.contains(m)));
                (Reward::World(WorldReward { name: name.clone(), monitor }), k.default_sees_cot, k.must_see_cot)
            }
            (other, _, None) => {
                errs.push(format!(
                    "{p}.name: unknown reward {other:?}: without a world (experiment.world) there are only answer_match \
                     and reward_model"
                ));
                continue;
            }
            (other, _, Some(_)) => {
                let mut names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
                names.extend(["answer_match", "reward_model"]);
                errs.push(format!("{p}.name: unknown reward {other:?} ({})", names.join(", ")));
                continue;
            }
        };
        if sees_cot_given && must_see && !sees_cot {
            errs.push(format!("{p}.sees_cot: a CoT monitor must see the CoT"));
        }
        let sees_cot = if sees_cot_given { sees_cot } else { default_sees };
        // A world reward the world cannot build with these settings is refused now, not after training.
        if let (Reward::World(wr), Some(w)) = (&reward, world) {
            if let Err(e) = w.reward(wr, sees_cot) {
                errs.push(format!("{p}: {e}"));
            }
        }
        out.push(RewardSpec { reward, weight, sees_cot, target });
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
    world: Option<&dyn World>,
    base_dir: &Path,
    errs: &mut Vec<String>,
) -> Option<StageParams> {
    let mut r = Reader::new(t, path);
    let kind = r.string(errs, "kind");
    let p = match kind.as_deref() {
        Some("pretrain") => {
            let size = r.count_max(errs, "size", Some(20_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (world, base_dir), DatasetKind::Text, size, &[]);
            StageParams::Pretrain { data, settings: PretrainSettings::read(&mut r.settings(errs)) }
        }
        Some("sft") => {
            let size = r.count_max(errs, "size", Some(4_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (world, base_dir), DatasetKind::Sft, size, &[]);
            StageParams::Sft { data, settings: SftSettings::read(&mut r.settings(errs)) }
        }
        Some("reward_model") => {
            let size = r.count_max(errs, "size", Some(2_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (world, base_dir), DatasetKind::Preferences, size, &[]);
            StageParams::RewardModel { data, settings: RewardModelSettings::read(&mut r.settings(errs)) }
        }
        Some("dpo") => {
            let size = r.count_max(errs, "size", Some(2_000), MAX_WORLD_EXAMPLES);
            let data = data_source(&mut r, errs, "data", (world, base_dir), DatasetKind::Preferences, size, &[]);
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
                        let rewards = parse_rewards(sr.raw("rewards"), &format!("{p}.rewards"), world, errs);
                        let fields = reward_fields(&rewards);
                        let data = data_source(
                            &mut sr,
                            errs,
                            "data",
                            (world, base_dir),
                            DatasetKind::RlPrompts,
                            size,
                            &fields,
                        );
                        let proportion = sr.schedule(
                            errs,
                            "proportion",
                            1.0,
                            "a positive number (0 allowed within a schedule)",
                            |x| x.is_finite() && x >= 0.0,
                        );
                        if let ValueSchedule::Constant(c) = proportion {
                            if c == 0.0 {
                                errs.push(format!("{p}.proportion: expected a positive number, found 0"));
                            }
                        }
                        sr.finish(errs);
                        Some(PromptSetSpec { data, proportion, rewards })
                    })
                    .collect(),
                Some(Value::String(_)) | None => {
                    let size = r.count_max(errs, "size", Some(5_000), MAX_WORLD_EXAMPLES);
                    let rewards = parse_rewards(r.raw("rewards"), &format!("{path}.rewards"), world, errs);
                    let fields = reward_fields(&rewards);
                    let data =
                        data_source(&mut r, errs, "prompts", (world, base_dir), DatasetKind::RlPrompts, size, &fields);
                    vec![PromptSetSpec { data, proportion: ValueSchedule::Constant(1.0), rewards }]
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
            let max_new_tokens = world.map_or(DEFAULT_MAX_NEW_TOKENS, |w| w.max_completion_tokens());
            let settings = GrpoSettings::read(&mut r.settings(errs), max_new_tokens);
            let on = r.boolean(errs, "gate", world.is_some());
            let gate = match world {
                Some(w) => {
                    let g = w.read_gate(&mut r.settings(errs));
                    on.then_some(g)
                }
                None => {
                    if on {
                        errs.push(format!("{path}.gate: the readiness gate needs a world"));
                    }
                    None
                }
            };
            let steps = settings.optim.steps;
            // A piecewise schedule's point at or after the stage's last step would never take effect.
            for (i, set) in sets.iter().enumerate() {
                let weights = set.rewards.iter().enumerate().map(|(j, r)| (format!("rewards[{j}].weight"), &r.weight));
                for (at, s) in std::iter::once(("proportion".to_string(), &set.proportion)).chain(weights) {
                    if let ValueSchedule::Steps { steps: points } = s {
                        if let Some((late, _)) = points.iter().find(|(p, _)| *p > 0 && *p >= steps) {
                            errs.push(format!(
                                "{path}.prompts[{i}].{at}: step {late} is not a step of this stage (steps 0 to {})",
                                steps.saturating_sub(1)
                            ));
                        }
                    }
                }
            }
            let valid = sets.iter().all(|set| set.proportion.values().iter().all(|v| *v >= 0.0));
            let mut candidates: Vec<usize> = sets.iter().flat_map(|set| set.proportion.breakpoints(steps)).collect();
            candidates.sort_unstable();
            candidates.dedup();
            let empty_step =
                candidates.into_iter().find(|&s| sets.iter().all(|set| set.proportion.at(s, steps) <= 0.0));
            if let Some(step) = empty_step.filter(|_| valid && !sets.is_empty()) {
                errs.push(format!(
                    "{path}.prompts: at step {step} of {steps} every prompt set's proportion is 0 (a schedule must leave \
                     one set in each step)"
                ));
            }
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

/// The reward-model stages a stage's rewards score with.
fn reward_model_stages(params: &StageParams) -> Vec<&str> {
    let StageParams::Grpo { sets, .. } = params else { return Vec::new() };
    let rewards = sets.iter().flat_map(|s| &s.rewards);
    rewards
        .filter_map(|r| match &r.reward {
            Reward::RewardModel { stage, .. } => Some(stage.as_str()),
            _ => None,
        })
        .collect()
}

/// Checks that every `reward_model` reward names a `reward_model` stage that comes before its stage
/// in every arm that runs it (the probes: in every arm).
pub(crate) fn check_reward_models(
    stages: &BTreeMap<String, StageParams>,
    arms: &[(String, Vec<String>)],
    probe: Option<&ProbeSpec>,
    errs: &mut Vec<String>,
) {
    // (stage name, settings, whether it is a probe, which runs after each arm's last stage)
    let transfer = probe.and_then(|p| p.transfer.as_ref()).map(|t| (t.stage.as_str(), &t.params, true));
    let probe = probe.map(|p| (p.stage.as_str(), &p.params, true)).into_iter().chain(transfer);
    for (name, params, is_probe) in stages.iter().map(|(n, p)| (n.as_str(), p, false)).chain(probe) {
        for rm in reward_model_stages(params) {
            if !matches!(stages.get(rm), Some(StageParams::RewardModel { .. })) {
                // A probe that is also a stage of [stages] was reported as that stage.
                if !(is_probe && stages.contains_key(name)) {
                    errs.push(format!("stages.{name}: its reward_model reward names {rm:?}, which is not a reward_model stage of [stages]"));
                }
                continue;
            }
            for (arm, chain) in arms {
                let runs_at = if is_probe { Some(chain.len()) } else { chain.iter().position(|s| s == name) };
                if runs_at.is_some_and(|i| !chain[..i].iter().any(|s| s == rm)) {
                    errs.push(format!(
                        "arms.{arm}: stage `{name}` scores with the reward model of stage `{rm}`, which does not come before it in this arm"
                    ));
                }
            }
        }
    }
}
