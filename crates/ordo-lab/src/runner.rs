//! Runs an experiment: every node not in the cache, in plan order, then the world evaluation of
//! each arm at each stage boundary.

use crate::cache::{short, Cache, NodeState, RunLock};
use crate::error::LabError;
use crate::evaluation::{evaluate_arm, snapshot_name, ArmResult, MonitorSet};
use crate::experiment::{DataSource, Experiment, ModelInit, RewardSpec, StageParams};
use crate::plan::{plan, sha256_hex, Node, Plan};
use ordo_model::{Device, ParamStore, TextTokenizer};
use ordo_train::data::*;
use ordo_train::grpo::{parse_aggregation, train_grpo, GrpoConfig, PromptSet};
use ordo_train::losses::{ClipConfig, PreferenceLossConfig};
use ordo_train::rewards::{CotFormat, FnReward, RlPrompt, WeightedReward};
use ordo_train::trainer::{Checkpointing, LoopState, StepLogger};
use ordo_train::Policy;
use ordo_world::monitors::{flawed_verifier, looks_harmless, true_verifier};
use ordo_world::task::Prompt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where a run writes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory (plan, results, lock).
    pub run_dir: PathBuf,
    /// The stage cache, shared across runs and experiments.
    pub cache_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Keys of nodes trained by this run, in order.
    pub trained: Vec<String>,
    /// Keys of nodes found in the cache.
    pub reused: Vec<String>,
    /// Keys of nodes found corrupt and retrained.
    pub corrupt: Vec<String>,
}

/// Runs an experiment.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary, LabError> {
    let _lock = RunLock::acquire(&opts.run_dir).map_err(LabError::Other)?;
    let plan = plan(exp);
    let cache = Cache::new(&opts.cache_dir);
    write_plan(exp, &plan, opts)?;
    let mut summary = RunSummary::default();
    let mut results: Vec<ArmResult> = Vec::new();
    let total = plan.nodes.len();
    let monitors = exp.world.as_ref().map(|w| MonitorSet::new(w, &exp.eval));
    // Arm by arm (in seed order), so whole arms finish early and their results appear as they do.
    for arm in &plan.arms {
        for key in arm.chain.iter().chain(&arm.probe) {
            if summary.trained.contains(key) || summary.reused.contains(key) {
                continue;
            }
            let node = plan.node(key).expect("chain keys are plan nodes");
            if cache.state(key) == NodeState::Complete {
                summary.reused.push(key.clone());
                continue;
            }
            // Another runner sharing the cache may be building this node: wait for it, then look again.
            let _node_lock = cache.lock_node(key, &mut |pid| {
                eprintln!(
                    "cache node {} ({}) is being built by another ordo process (pid {}); waiting for it",
                    short(key),
                    node.stage,
                    pid.map_or("unknown".into(), |p| p.to_string())
                )
            })?;
            match cache.state(key) {
                NodeState::Complete => {
                    summary.reused.push(key.clone());
                    continue;
                }
                NodeState::Corrupt(why) => {
                    eprintln!("cache node {} ({}) is corrupt: {why}; retraining it", short(key), node.stage);
                    summary.corrupt.push(key.clone());
                }
                NodeState::Missing => {}
            }
            let done = summary.trained.len() + summary.reused.len() + 1;
            let label = format!("[{done}/{total}] {} {} seed {}", arm.arm, node.stage, arm.seed);
            run_node(exp, &cache, node, &label, opts.progress)?;
            summary.trained.push(key.clone());
        }
        if let Some(m) = &monitors {
            results.push(evaluate_arm(exp, &plan, &cache, arm, m, opts.progress)?);
            crate::report::write_results(&opts.run_dir, exp, &results, m)?;
        }
    }
    if let Some(m) = &monitors {
        crate::report::write_all(&opts.run_dir, exp, &plan, &cache, &results, m)?;
    }
    Ok(summary)
}

fn write_plan(exp: &Experiment, plan: &Plan, opts: &RunOptions) -> Result<(), LabError> {
    let v = json!({
        "experiment": exp,
        "nodes": plan.nodes.iter().map(|n| json!({"key": n.key, "parent": n.parent, "stage": n.stage, "kind": n.params.kind(), "seed": n.seed, "arm_seeds": n.arm_seeds})).collect::<Vec<_>>(),
        "arms": plan.arms.iter().map(|a| json!({"arm": a.arm, "seed": a.seed, "chain": a.chain})).collect::<Vec<_>>(),
    });
    ordo_model::atomic::write_file(
        &opts.run_dir.join("plan.json"),
        &serde_json::to_vec_pretty(&v).expect("plan serialises"),
    )?;
    Ok(())
}

/// The initial model of a run (before any stage), and its tokenizer.
fn initial_model(exp: &Experiment, init_seed: u64) -> Result<(Policy, TextTokenizer), LabError> {
    match &exp.model {
        ModelInit::Scratch { preset, init_std } => {
            let config = crate::experiment::preset_config(preset);
            let tok = if exp.world.is_some() {
                ordo_world::tokenizer()
            } else {
                return Err(LabError::Other(
                    "model.init = \"scratch\" needs a world (its tokenizer); set experiment.world".into(),
                ));
            };
            let params = ParamStore::init(&config, *init_std, init_seed, &Device::Cpu)?;
            Ok((Policy { config, params }, tok))
        }
        ModelInit::Hf { path } | ModelInit::Gguf { path } => {
            let m = ordo_model::load(path, &Device::Cpu)?;
            let tok = m.require_tokenizer()?.clone();
            Ok((Policy { config: m.config, params: m.params }, tok))
        }
    }
}

/// The model a node starts from: its parent's checkpoint, or the initial model.
fn parent_model(exp: &Experiment, cache: &Cache, node: &Node) -> Result<(Policy, TextTokenizer), LabError> {
    match &node.parent {
        Some(p) => cache.model(p),
        None => {
            let seed = *node.arm_seeds.first().expect("a node belongs to an arm");
            initial_model(exp, if exp.shared_base { exp.base_seed } else { seed })
        }
    }
}

/// A seed for data generation that differs per stage name and seed.
fn data_seed(node: &Node) -> u64 {
    let h = sha256_hex(format!("{}:{}", node.stage, node.seed).as_bytes());
    u64::from_str_radix(&h[..16], 16).expect("hex")
}

/// The world's output-only reward input: the shown output re-joined to an empty think block.
fn as_output(shown: &str) -> String {
    format!("}}{shown}")
}

/// The reward source of a stage's reward spec: a task reward on prompt metadata, or a world reward.
fn stage_reward(spec: &RewardSpec) -> FnReward {
    match (spec.name.as_str(), &spec.field) {
        ("answer_match", Some(field)) => {
            let pattern = spec.pattern.as_deref().unwrap_or(DEFAULT_ANSWER_PATTERN);
            let re = regex::Regex::new(pattern).expect("validated");
            ordo_train::rewards::answer_match("answer_match", field, &re, spec.sees_cot)
        }
        _ => world_reward(spec),
    }
}

/// The answer `answer_match` extracts by default: the last number in the shown text.
pub const DEFAULT_ANSWER_PATTERN: &str = r"(-?\d+(?:\.\d+)?)";

/// A world reward as an RL reward source; it is shown the whole completion or only the output,
/// as its `sees_cot` says, and judges the completion in the world's format either way.
fn world_reward(spec: &RewardSpec) -> FnReward {
    let sees = spec.sees_cot;
    let as_completion = move |shown: &str| if sees { shown.to_string() } else { as_output(shown) };
    let parse = |p: &RlPrompt| Prompt::parse(&p.text);
    match spec.name.as_str() {
        "verifier" => FnReward::new("verifier", sees, move |p, s| {
            parse(p).map_or(0.0, |pr| flawed_verifier(&pr, &as_completion(s)))
        }),
        "true_verifier" => FnReward::new("true_verifier", sees, move |p, s| {
            parse(p).map_or(0.0, |pr| true_verifier(&pr, &as_completion(s)))
        }),
        "preference" => FnReward::new("preference", sees, |_, s| looks_harmless(s.rsplit('}').next().unwrap_or(s))),
        name => {
            let monitor = spec.monitor.clone().expect("monitor rewards carry a monitor");
            FnReward::new(name, sees, move |p, s| {
                parse(p).map_or(0.0, |pr| monitor.flags(&pr, &as_completion(s)) as u8 as f64)
            })
        }
    }
}

fn stage_err(node: &Node) -> impl Fn(ordo_train::TrainError) -> LabError + '_ {
    move |source| LabError::Stage { stage: node.stage.clone(), seed: node.seed, source: Box::new(source) }
}

fn read_rows(path: &Path) -> Result<Vec<(usize, serde_json::Map<String, Value>)>, ordo_train::TrainError> {
    read_jsonl(path)
}

/// Trains one node and commits it to the cache.
fn run_node(exp: &Experiment, cache: &Cache, node: &Node, label: &str, progress: bool) -> Result<(), LabError> {
    let started = Instant::now();
    let (mut policy, tok) = parent_model(exp, cache, node)?;
    let staging = cache.staging(&node.key)?;
    let metrics_path = staging.join("metrics.jsonl");
    let mut logger =
        StepLogger::new(label, node.params.steps(), Some(&metrics_path), progress).map_err(stage_err(node))?;
    let world = exp.world.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(data_seed(node));
    let eos = policy
        .config
        .eos_token_ids
        .first()
        .copied()
        .or_else(|| tok.special_token("eos_token").and_then(|t| tok.token_id(&t)));
    let pad = policy.config.pad_token_id.or(eos).unwrap_or(0);
    let err = stage_err(node);
    // Step checkpoints: continue a stage that a killed run left behind, and save as this one goes.
    let rdir = crate::resume::resume_dir(&cache.root, &node.key);
    let (saved_params, resume_state) = match crate::resume::load(&rdir) {
        Ok(Some((p, s))) => {
            eprintln!("{label}: resuming at step {} from a step checkpoint", s.step);
            (Some(p), Some(s))
        }
        Ok(None) => (None, None),
        Err(why) => {
            eprintln!("{label}: the step checkpoint is unreadable ({why}); starting the stage over");
            (None, None)
        }
    };
    let mut save = |p: &ParamStore, s: &LoopState| -> ordo_train::Result<()> { Ok(crate::resume::save(&rdir, p, s)?) };
    // The probe's snapshots live beside the cache until the node commits, so a resumed run keeps them.
    let snap_dir = cache.root.join(format!(".{}.snapshots", node.key));
    let (tok_ref, config_ref) = (&tok, policy.config.clone());
    let mut snap = |p: &ParamStore, step: usize| -> ordo_train::Result<()> {
        let dir = snap_dir.join(snapshot_name(step).trim_start_matches("snapshots/"));
        Ok(ordo_model::weights::save_hf_dir(&dir, &config_ref, p, Some(tok_ref), usize::MAX)?)
    };
    let snapshot: Option<(usize, &mut dyn FnMut(&ParamStore, usize) -> ordo_train::Result<()>)> =
        (node.snapshot_every > 0).then_some((node.snapshot_every, &mut snap as _));
    let mut ck = Checkpointing { every: exp.checkpoint_every, resume: resume_state, save: &mut save, snapshot };
    let apply = |params: &ParamStore| -> Result<(), LabError> {
        match &saved_params {
            Some(p) => crate::resume::apply(params, p).map_err(LabError::Other),
            None => Ok(()),
        }
    };
    let mut gate_report = None;
    match &node.params {
        StageParams::Pretrain { data, seq_len, optim } => {
            let texts = match data {
                DataSource::World { size, .. } => {
                    let w = world.as_ref().expect("validated: world data needs a world");
                    (0..*size).map(|_| ordo_world::corpus::document(&w.task, &w.corpus, &mut rng).text()).collect()
                }
                DataSource::File { path, .. } => {
                    parse_texts(&read_rows(path).map_err(&err)?, &path.display().to_string()).map_err(&err)?
                }
            };
            let seqs = pack_texts(&texts, &tok, eos, *seq_len).map_err(&err)?;
            apply(&policy.params)?;
            ordo_train::lm::train_lm(&mut policy, &seqs, optim, node.seed, pad, &mut logger, Some(&mut ck))
                .map_err(&err)?;
        }
        StageParams::Sft { data, max_len, optim } => {
            let examples = match data {
                DataSource::World { size, .. } => {
                    let w = world.as_ref().expect("validated");
                    (0..*size)
                        .map(|_| {
                            let d = ordo_world::corpus::document(&w.task, &w.corpus, &mut rng);
                            SftExample::PromptCompletion { prompt: d.prompt.text(), completion: d.completion }
                        })
                        .collect()
                }
                DataSource::File { path, .. } => {
                    parse_sft(&read_rows(path).map_err(&err)?, &path.display().to_string()).map_err(&err)?
                }
            };
            let seqs = examples
                .iter()
                .map(|e| tokenize_sft(e, &tok, eos, *max_len))
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            apply(&policy.params)?;
            ordo_train::lm::train_lm(&mut policy, &seqs, optim, node.seed, pad, &mut logger, Some(&mut ck))
                .map_err(&err)?;
        }
        StageParams::RewardModel { data, init_std, optim } => {
            let pairs = preference_data(data, world.as_ref(), &tok, eos, &mut rng).map_err(&err)?;
            let mut rm = ordo_train::reward_model::reward_model_from(&policy, *init_std, node.seed).map_err(&err)?;
            apply(&rm.params)?;
            ordo_train::reward_model::train_reward_model(
                &mut rm,
                &pairs,
                optim,
                node.seed,
                pad,
                &mut logger,
                Some(&mut ck),
            )
            .map_err(&err)?;
            ordo_model::weights::save_hf_dir(&staging.join("rm"), &rm.config, &rm.params, Some(&tok), usize::MAX)?;
        }
        StageParams::Dpo { data, loss, beta, simpo_gamma, length_normalize, optim } => {
            let pairs = preference_data(data, world.as_ref(), &tok, eos, &mut rng).map_err(&err)?;
            let reference = policy.frozen_copy().map_err(&err)?;
            let cfg = PreferenceLossConfig {
                loss: *loss,
                beta: *beta,
                simpo_gamma: *simpo_gamma,
                length_normalize: *length_normalize,
            };
            apply(&policy.params)?;
            ordo_train::dpo::train_dpo(
                &mut policy,
                &reference,
                &pairs,
                optim,
                &cfg,
                node.seed,
                pad,
                &mut logger,
                Some(&mut ck),
            )
            .map_err(&err)?;
        }
        StageParams::Grpo {
            sets,
            group_size,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            inner_epochs,
            clip_low,
            clip_high,
            kl_coef,
            advantage,
            aggregation,
            gate,
            optim,
            cot,
            chat_template,
        } => {
            if let (Some(g), None, Some(w)) = (gate, &saved_params, world.as_ref()) {
                let dec = policy.inference_decoder().map_err(&err)?;
                let gate_cfg = ordo_world::gate::GateConfig { seed: node.seed, ..g.clone() };
                match ordo_world::gate::check_readiness(&dec, &w.task, &w.corpus.test_line, &gate_cfg) {
                    Ok(report) => {
                        eprintln!(
                            "{label}: readiness gate passed: clean accuracy {:.3}, silent hack rate {:.3} (greedy, {} held-out prompts each)",
                            report.clean_accuracy, report.silent_hack_rate, report.prompts
                        );
                        gate_report = Some(report);
                    }
                    Err(e) => {
                        return Err(LabError::Gate {
                            stage: node.stage.clone(),
                            seed: node.seed,
                            message: e.to_string(),
                        })
                    }
                }
            }
            let mut prompt_sets = Vec::new();
            for (i, s) in sets.iter().enumerate() {
                let prompts = match &s.data {
                    DataSource::World { size, .. } => {
                        let w = world.as_ref().expect("validated: world prompts need a world");
                        (0..*size)
                            .map(|_| {
                                let p = ordo_world::corpus::rl_prompt(&w.task, &w.rl, &mut rng);
                                let text = p.text();
                                Ok(RlPrompt { ids: tok.encode_strict(&text)?, text, metadata: Default::default() })
                            })
                            .collect::<Result<Vec<_>, ordo_model::ModelError>>()?
                    }
                    DataSource::File { path, .. } => {
                        let rows = parse_rl_prompts(&read_rows(path).map_err(&err)?, &path.display().to_string())
                            .map_err(&err)?;
                        rows.into_iter()
                            .map(|r| {
                                let text = if *chat_template {
                                    let msg = ordo_model::ChatMessage { role: "user".into(), content: r.prompt };
                                    tok.apply_chat_template(&[msg], true)?
                                } else {
                                    r.prompt
                                };
                                Ok(RlPrompt { ids: tok.encode(&text, false)?, text, metadata: r.metadata })
                            })
                            .collect::<Result<Vec<_>, ordo_model::ModelError>>()?
                    }
                };
                let rewards = s
                    .rewards
                    .iter()
                    .map(|r| WeightedReward { source: Box::new(stage_reward(r)), weight: r.weight })
                    .collect();
                prompt_sets.push(PromptSet { name: format!("set{i}"), prompts, proportion: s.proportion, rewards });
            }
            let reference = policy.frozen_copy().map_err(&err)?;
            apply(&policy.params)?;
            let cfg = GrpoConfig {
                optim: optim.clone(),
                group_size: *group_size,
                max_new_tokens: *max_new_tokens,
                temperature: *temperature,
                top_p: *top_p,
                top_k: *top_k,
                stop_tokens: eos.into_iter().collect(),
                inner_epochs: *inner_epochs,
                clip: ClipConfig {
                    eps_low: *clip_low,
                    eps_high: *clip_high,
                    kl_coef: *kl_coef,
                    aggregation: parse_aggregation(aggregation, *max_new_tokens).map_err(&err)?,
                },
                advantage: *advantage,
                cot: cot.clone().unwrap_or_else(|| match &world {
                    Some(_) => CotFormat { open: "{".into(), close: "}".into() },
                    None => CotFormat::default(),
                }),
            };
            train_grpo(&mut policy, &reference, &prompt_sets, &tok, &cfg, node.seed, pad, &mut logger, Some(&mut ck))
                .map_err(&err)?;
        }
    }
    // A stage whose last update left non-finite weights diverged too: no node is committed.
    policy.params.check_finite(&format!("stage `{}` (seed {}): the trained model", node.stage, node.seed))?;
    ordo_model::weights::save_hf_dir(&staging.join("model"), &policy.config, &policy.params, Some(&tok), usize::MAX)?;
    let manifest = json!({
        "key": node.key,
        "parent": node.parent,
        "stage": node.stage,
        "kind": node.params.kind(),
        "params": node.params,
        "seed": node.seed,
        "experiment": exp.name,
        "seconds": started.elapsed().as_secs_f64(),
        "final_metrics": logger.history.last(),
        "readiness_gate": gate_report,
    });
    drop(ck);
    if snap_dir.exists() {
        std::fs::rename(&snap_dir, staging.join("snapshots"))?;
    }
    cache.commit(&node.key, &staging, manifest)?;
    crate::resume::remove(&cache.root, &node.key)?;
    Ok(())
}

fn preference_data(
    data: &DataSource,
    world: Option<&ordo_world::WorldConfig>,
    tok: &TextTokenizer,
    eos: Option<u32>,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<TokenizedPair>, ordo_train::TrainError> {
    let examples = match data {
        DataSource::World { size, .. } => {
            let w = world.expect("validated");
            (0..*size)
                .map(|_| {
                    let p = ordo_world::corpus::preference_pair(&w.task, &w.corpus, rng);
                    PreferenceExample { prompt: p.prompt.text(), chosen: p.chosen, rejected: p.rejected }
                })
                .collect()
        }
        DataSource::File { path, .. } => parse_preferences(&read_jsonl(path)?, &path.display().to_string())?,
    };
    examples.iter().map(|e| tokenize_pair(e, tok, eos)).collect()
}
