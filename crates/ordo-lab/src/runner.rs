//! Runs an experiment: every node not in the cache, in plan order, then the world evaluation of
//! each arm at each stage boundary.

use crate::cache::{short, Cache, NodeState, RunLock};
use crate::error::LabError;
use crate::evaluation::{evaluate_arm, snapshot_name, ArmResult};
use crate::experiment::{Experiment, ModelInit, StageParams};
use crate::plan::{plan, Node, Plan};
use crate::stages::{self, StageCx};
use ordo_model::{Device, ParamStore, TextTokenizer};
use ordo_train::trainer::{Checkpointing, LoopState, SnapshotFn, StepLogger};
use ordo_train::Policy;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
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
    let evaluator = exp.world().map(|w| w.evaluator(&exp.eval)).transpose().map_err(LabError::Other)?;
    // Arm by arm (in seed order), so whole arms finish early and their results appear as they do.
    for arm in &plan.arms {
        for key in arm.chain.iter().chain(&arm.probe).chain(&arm.transfer_probe) {
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
            run_node(exp, (&plan, &cache), node, &label, opts.progress)?;
            summary.trained.push(key.clone());
        }
        if let Some(m) = &evaluator {
            results.push(evaluate_arm(exp, &plan, &cache, arm, m.as_ref(), opts.progress)?);
            crate::report::write_results(&opts.run_dir, exp, &results, m.as_ref())?;
        }
    }
    if let Some(m) = &evaluator {
        crate::report::write_all(&opts.run_dir, exp, &plan, &cache, &results, m.as_ref())?;
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
            let (Some(world), Some(config)) = (exp.world(), crate::experiment::preset_config(exp.world(), preset))
            else {
                return Err(LabError::Other(format!(
                    "model.init = \"scratch\" (preset {preset:?}) needs a world with that preset; set experiment.world"
                )));
            };
            let tok = world.tokenizer();
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

/// Where each `reward_model` stage among a node's ancestors saved its reward model, by stage name.
fn ancestor_reward_models(plan: &Plan, cache: &Cache, node: &Node) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut at = node.parent.as_deref().and_then(|k| plan.node(k));
    while let Some(n) = at {
        if matches!(n.params, StageParams::RewardModel { .. }) {
            // The nearest ancestor of a stage name wins (a stage runs once per arm).
            out.entry(n.stage.clone()).or_insert_with(|| cache.dir(&n.key).join("rm"));
        }
        at = n.parent.as_deref().and_then(|k| plan.node(k));
    }
    out
}

/// Whether some ancestor of `node` is an RL (`grpo`) stage that ran the readiness gate: its chain's RL
/// began from a checked model, so a later RL stage continues from a trained model, not a base.
fn after_gated_rl(plan: &Plan, node: &Node) -> bool {
    let mut at = node.parent.as_deref().and_then(|k| plan.node(k));
    while let Some(n) = at {
        if matches!(n.params, StageParams::Grpo { gate: Some(_), .. }) {
            return true;
        }
        at = n.parent.as_deref().and_then(|k| plan.node(k));
    }
    false
}

/// Trains one node and commits it to the cache.
fn run_node(
    exp: &Experiment,
    (plan, cache): (&Plan, &Cache),
    node: &Node,
    label: &str,
    progress: bool,
) -> Result<(), LabError> {
    let started = Instant::now();
    let (mut policy, tok) = parent_model(exp, cache, node)?;
    let staging = cache.staging(&node.key)?;
    let metrics_path = staging.join("metrics.jsonl");
    let mut logger = StepLogger::new(label, node.params.steps(), Some(&metrics_path), progress)
        .map_err(stages::stage_error(node))?;
    let mut rng = ChaCha8Rng::seed_from_u64(crate::plan::data_seed(&node.stage, node.seed));
    let eos = policy
        .config
        .eos_token_ids
        .first()
        .copied()
        .or_else(|| tok.special_token("eos_token").and_then(|t| tok.token_id(&t)));
    let pad = policy.config.pad_token_id.or(eos).unwrap_or(0);
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
    let snapshot: Option<(usize, SnapshotFn)> =
        (node.snapshot_every > 0).then_some((node.snapshot_every, &mut snap as _));
    let mut ck = Checkpointing { every: exp.checkpoint_every, resume: resume_state, save: &mut save, snapshot };
    let mut cx = StageCx {
        node,
        world: exp.world(),
        tok: &tok,
        eos,
        pad,
        rng: &mut rng,
        logger: &mut logger,
        ck: &mut ck,
        resumed: saved_params.as_ref(),
        staging: &staging,
        label,
        reward_models: ancestor_reward_models(plan, cache, node),
    };
    let mut gate_report = None;
    match &node.params {
        StageParams::Pretrain { data, settings } => stages::pretrain(&mut cx, &mut policy, data, settings)?,
        StageParams::Sft { data, settings } => stages::sft(&mut cx, &mut policy, data, settings)?,
        StageParams::RewardModel { data, settings } => stages::reward_model(&mut cx, &policy, data, settings)?,
        StageParams::Dpo { data, settings } => stages::dpo(&mut cx, &mut policy, data, settings)?,
        StageParams::Grpo { sets, gate, chat_template, settings } => {
            // The gate keeps RL from starting on an under-trained base; after gated RL there is no base to check.
            let skip = gate.is_some() && after_gated_rl(plan, node);
            if skip {
                eprintln!("{label}: readiness gate skipped: an earlier RL stage of this arm checked its start model");
            }
            let gate = gate.as_ref().filter(|_| !skip);
            gate_report = stages::grpo(&mut cx, &mut policy, sets, gate, *chat_template, settings)?
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
