//! The experiment file: stages named once, arms as ordered lists of stage names, seeds.
//!
//! Parsing collects every problem with its path (`stages.rlvf.rewards[1].weight: expected a number`)
//! and rejects unknown keys. The schema is documented in `docs/experiments.md`.

use crate::experiment::{preset_config, presets, DataSource, Experiment, ModelInit, StageParams, WorldRef};
use crate::spec_reader::{type_name, Reader};
use crate::spec_stage::parse_stage;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Value;

/// Every problem found in an experiment file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
pub struct SpecError {
    pub file: String,
    pub problems: Vec<String>,
}

/// Reads and validates an experiment file.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let fail = |p: String| SpecError { file: file.clone(), problems: vec![p] };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file, base_dir)
}

/// Parses experiment text; `file` names it in errors and relative data paths resolve against `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Experiment, SpecError> {
    let root: toml::Table = toml::from_str(text)
        .map_err(|e| SpecError { file: file.into(), problems: vec![format!("not valid TOML: {e}")] })?;
    let mut errs = Vec::new();
    let mut top = Reader::new(&root, "");

    let exp = top.table(&mut errs, "experiment");
    let (mut name, mut seeds, mut base_seed, mut shared_base, mut world_name) =
        (String::from("experiment"), vec![1u64], 0u64, true, None);
    let mut checkpoint_every = 25;
    match exp {
        None => errs.push("experiment: missing (expected a table with name and seeds)".into()),
        Some(t) => {
            let mut r = Reader::new(t, "experiment");
            name = r.string(&mut errs, "name").unwrap_or_else(|| {
                errs.push("experiment.name: missing (expected a string)".into());
                name.clone()
            });
            if let Err(why) = check_experiment_name(&name) {
                errs.push(format!("experiment.name: {why}"));
            }
            match r.raw("seeds") {
                Some(Value::Array(a)) if !a.is_empty() => {
                    seeds = a
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| match v {
                            Value::Integer(x) if *x >= 0 => Some(*x as u64),
                            other => {
                                errs.push(format!(
                                    "experiment.seeds[{i}]: expected a non-negative integer, found {}",
                                    type_name(other)
                                ));
                                None
                            }
                        })
                        .collect();
                    let mut uniq = seeds.clone();
                    uniq.sort();
                    uniq.dedup();
                    if uniq.len() != seeds.len() {
                        errs.push("experiment.seeds: seeds must be distinct".into());
                    }
                }
                Some(v) => errs
                    .push(format!("experiment.seeds: expected a non-empty list of integers, found {}", type_name(v))),
                None => errs.push("experiment.seeds: missing (expected a non-empty list of integers)".into()),
            }
            base_seed = r.seed(&mut errs, "base_seed", 0);
            shared_base = r.boolean(&mut errs, "shared_base", true);
            checkpoint_every = r.seed(&mut errs, "checkpoint_every", 25) as usize;
            world_name = r.string(&mut errs, "world");
            r.finish(&mut errs);
        }
    }
    let world = match world_name.as_deref() {
        None => None,
        Some(name) => match ordo_worlds::find(name) {
            Some(entry) => match (entry.configure)(top.table(&mut errs, "world")) {
                Ok(w) => Some(WorldRef(w)),
                Err(problems) => {
                    // The rest of the file is still checked, against the world's default settings.
                    errs.extend(problems);
                    (entry.configure)(None).ok().map(WorldRef)
                }
            },
            None => {
                errs.push(format!("experiment.world: unknown world {name:?} (ordo has {})", ordo_worlds::names()));
                top.used.push("world");
                None
            }
        },
    };
    if world_name.is_none() && root.contains_key("world") {
        top.used.push("world");
        errs.push("world: settings given but experiment.world is not set".into());
    }

    let model = match top.table(&mut errs, "model") {
        None => {
            errs.push("model: missing (expected init = \"scratch\", \"hf:DIR\" or \"gguf:FILE\")".into());
            ModelInit::Scratch { preset: "organism".into(), init_std: 0.02 }
        }
        Some(t) => {
            let mut r = Reader::new(t, "model");
            let init = r.string(&mut errs, "init").unwrap_or_else(|| "scratch".into());
            let preset = r.string(&mut errs, "preset");
            let init_std = r.number_where(&mut errs, "init_std", 0.02, "a number in (0, 1]", |x| x > 0.0 && x <= 1.0);
            r.finish(&mut errs);
            if init == "scratch" {
                let available = presets(world.as_deref());
                let preset = preset.unwrap_or_else(|| available[0].0.to_string());
                if world_name.is_none() {
                    errs.push("model.init: \"scratch\" needs a world (its tokenizer); set experiment.world".into());
                } else if world.is_some() && !available.iter().any(|(n, _)| *n == preset) {
                    let names: Vec<String> = available.iter().map(|(n, _)| format!("{n:?}")).collect();
                    errs.push(format!("model.preset: unknown preset {preset:?} (expected {})", names.join(" or ")));
                }
                ModelInit::Scratch { preset, init_std }
            } else if let Some(dir) = init.strip_prefix("hf:") {
                let p = base_dir.join(dir);
                if !p.join("config.json").exists() {
                    errs.push(format!(
                        "model.init: {} is not an HF checkpoint directory (no config.json)",
                        p.display()
                    ));
                }
                ModelInit::Hf { path: p }
            } else if let Some(f) = init.strip_prefix("gguf:") {
                let p = base_dir.join(f);
                if !p.is_file() {
                    errs.push(format!("model.init: {} does not exist", p.display()));
                }
                ModelInit::Gguf { path: p }
            } else {
                errs.push(format!("model.init: expected \"scratch\", \"hf:DIR\" or \"gguf:FILE\", found {init:?}"));
                ModelInit::Scratch { preset: "organism".into(), init_std }
            }
        }
    };

    let mut stages = BTreeMap::new();
    match top.table(&mut errs, "stages") {
        None => errs.push("stages: missing (expected a table of named stages)".into()),
        Some(t) => {
            for (sname, v) in t {
                let path = format!("stages.{sname}");
                match v {
                    Value::Table(st) => {
                        if let Some(p) = parse_stage(st, &path, world.as_deref(), base_dir, &mut errs) {
                            stages.insert(sname.clone(), p);
                        }
                    }
                    other => errs.push(format!("{path}: expected a table, found {}", type_name(other))),
                }
            }
        }
    }

    // Packed sequences and prompt-plus-completion lengths must fit the model's positions (read from its
    // config.json, checked for sane sizes); SFT's max_len only truncates, so it may exceed them.
    let positions = match &model {
        ModelInit::Scratch { preset, .. } => preset_config(world.as_deref(), preset).map(|c| c.max_position_embeddings),
        ModelInit::Hf { path } if path.join("config.json").exists() => {
            match ordo_model::ModelConfig::from_file(&path.join("config.json")) {
                Ok(c) => Some(c.max_position_embeddings),
                Err(e) => {
                    errs.push(format!("model.init: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    if let (Some(max), Some(w)) = (positions, &world) {
        let need = w.max_prompt_tokens() + w.max_completion_tokens();
        if need > max {
            errs.push(format!(
                "world: its longest prompt ({}) and completion ({}) need {need} positions, more than the model's {max} \
                 (max_position_embeddings); evaluation and the probes sample that long",
                w.max_prompt_tokens(),
                w.max_completion_tokens()
            ));
        }
    }
    if let Some(max) = positions {
        for (sname, p) in &stages {
            let (field, len) = match p {
                StageParams::Pretrain { settings, .. } => ("seq_len", settings.seq_len),
                StageParams::Grpo { settings, sets, .. } => {
                    // World prompts have a known longest length; file prompts are checked when sampled.
                    let prompt = match &world {
                        Some(w) if sets.iter().any(|s| matches!(s.data, DataSource::World { .. })) => {
                            w.max_prompt_tokens()
                        }
                        _ => 1,
                    };
                    ("max_new_tokens", prompt + settings.max_new_tokens)
                }
                _ => continue,
            };
            if len > max {
                errs.push(format!(
                    "stages.{sname}.{field}: {len} positions{} do not fit the model's {max} (max_position_embeddings)",
                    if field == "max_new_tokens" { " (with the longest prompt)" } else { "" }
                ));
            }
        }
    }

    let mut arms = Vec::new();
    match top.table(&mut errs, "arms") {
        None => errs.push("arms: missing (expected arm = [\"stage\", ...] entries)".into()),
        Some(t) if t.is_empty() => errs.push("arms: no arms given".into()),
        Some(t) => {
            for (aname, v) in t {
                let path = format!("arms.{aname}");
                match v {
                    Value::Array(list) if list.is_empty() => {
                        errs.push(format!("{path}: an arm needs at least one stage"))
                    }
                    Value::Array(list) => {
                        let mut names = Vec::new();
                        for (i, s) in list.iter().enumerate() {
                            match s {
                                Value::String(s) if stages.contains_key(s) || t_has_stage(&root, s) => {
                                    names.push(s.clone())
                                }
                                Value::String(s) => errs.push(format!(
                                    "{path}[{i}]: unknown stage {s:?} (defined: {})",
                                    stage_names(&root)
                                )),
                                other => {
                                    errs.push(format!("{path}[{i}]: expected a stage name, found {}", type_name(other)))
                                }
                            }
                        }
                        arms.push((aname.clone(), names));
                    }
                    other => errs.push(format!("{path}: expected a list of stage names, found {}", type_name(other))),
                }
            }
        }
    }

    let eval = match (top.table(&mut errs, "eval"), world.as_deref()) {
        (t, Some(w)) => w.read_eval(t).unwrap_or_else(|problems| {
            errs.extend(problems);
            serde_json::Value::Null
        }),
        (Some(_), None) if world_name.is_none() => {
            errs.push("eval: evaluation runs in a world; set experiment.world".into());
            serde_json::Value::Null
        }
        (_, None) => serde_json::Value::Null,
    };
    let probe = match top.table(&mut errs, "probe") {
        Some(_) if world_name.is_none() => {
            errs.push("probe: the uptake probe is measured in a world; set experiment.world".into());
            None
        }
        _ if world.is_none() => None,
        t => {
            let built_in = world.as_ref().map_or_else(Default::default, |w| crate::spec_eval::BuiltInProbes {
                probe: w.default_probe(),
                transfer: w.default_transfer_probe(),
            });
            crate::spec_eval::parse_probe(t, &root, &mut errs, built_in, &mut |t, path, errs| {
                parse_stage(t, path, world.as_deref(), base_dir, errs)
            })
        }
    };
    crate::spec_stage::check_reward_models(&stages, &arms, probe.as_ref(), &mut errs);
    top.used.push("hypotheses");
    let hypotheses = crate::hypothesis::parse_table(&root, &arms, &mut errs);
    if !hypotheses.is_empty() && world.is_none() {
        errs.push("hypotheses: they compare a world's metrics; set experiment.world".into());
    }
    top.finish(&mut errs);
    if errs.is_empty() {
        Ok(Experiment {
            name,
            seeds,
            base_seed,
            shared_base,
            checkpoint_every,
            world,
            model,
            stages,
            arms,
            eval,
            probe,
            hypotheses,
        })
    } else {
        Err(SpecError { file: file.into(), problems: errs })
    }
}

/// Names that are not experiments: the run directory of an experiment is `RUNS/<name>`, beside the
/// shared stage cache `RUNS/cache`.
pub const RESERVED_NAMES: [&str; 1] = ["cache"];

/// An experiment name is a plain identifier (it names a directory beside others): a letter or digit,
/// then letters, digits, `-` or `_`, at most 64 characters, and not a reserved name.
pub fn check_experiment_name(name: &str) -> Result<(), String> {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain || name.len() > 64 {
        return Err(format!(
            "expected a plain name (a letter or digit, then letters, digits, '-' or '_'; at most 64), found {name:?}"
        ));
    }
    if RESERVED_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("{name:?} is reserved (the runs directory keeps its stage cache there)"));
    }
    Ok(())
}

fn t_has_stage(root: &toml::Table, s: &str) -> bool {
    root.get("stages").and_then(Value::as_table).is_some_and(|t| t.contains_key(s))
}

fn stage_names(root: &toml::Table) -> String {
    root.get("stages")
        .and_then(Value::as_table)
        .map(|t| t.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}
