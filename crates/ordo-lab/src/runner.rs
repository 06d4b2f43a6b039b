//! Runs an experiment: every node not in the cache, several at once where they are independent, and
//! the world evaluation of each arm-seed at each stage boundary as soon as its nodes are trained.

use crate::cache::{short, Cache, NodeState, RunLock};
use crate::error::LabError;
use crate::evaluation::{evaluate_arm, snapshot_name, ArmResult};
use crate::experiment::{Experiment, ModelInit, StageParams};
use crate::plan::{plan, Node, Plan};
use crate::stages::{self, StageCx};
use crate::summary::ArmFailure;
use ordo_model::{Device, ParamStore, TextTokenizer};
use ordo_train::trainer::{Checkpointing, LoopState, SnapshotFn, StepLogger};
use ordo_train::Policy;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Where a run writes, and how many nodes it trains at once.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory (plan, results, lock).
    pub run_dir: PathBuf,
    /// The stage cache, shared across runs and experiments.
    pub cache_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
    /// Nodes (and arm evaluations) run at once, each on its own thread; results do not depend on it.
    pub jobs: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Keys of nodes trained by this run, in the order they finished.
    pub trained: Vec<String>,
    /// Keys of nodes found in the cache.
    pub reused: Vec<String>,
    /// Keys of nodes found corrupt and retrained.
    pub corrupt: Vec<String>,
    /// Arm-seeds that could not finish (a stage failed, or an earlier stage of theirs did).
    pub failed: Vec<ArmFailure>,
}

/// What a worker does next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Task {
    /// Train the node at this index of `Schedule::nodes`.
    Train(usize),
    /// Evaluate the arm-seed at this index of `plan.arms`.
    Evaluate(usize),
}

/// The shared state of a run's workers: which nodes are done, running or failed, which arm-seeds are
/// evaluated, and the results so far.
struct Schedule {
    /// Keys this run needs, in the order arms first need them.
    nodes: Vec<String>,
    done: Vec<bool>,
    started: Vec<bool>,
    /// Why a node failed (its own error, or its parent's failure).
    failed: Vec<Option<(String, String)>>,
    evaluated: Vec<bool>,
    /// Why an arm-seed's evaluation failed.
    eval_failed: Vec<Option<String>>,
    running: usize,
    summary: RunSummary,
    results: Vec<(usize, ArmResult)>,
    /// Estimated seconds of each node and everything below it along its longest path.
    path: Vec<f64>,
    /// Estimated seconds of every task, and of those finished (the overall ETA).
    total_work: f64,
    done_work: f64,
    /// The first error that is not one arm-seed's (writing the results), which stops the run.
    fatal: Option<LabError>,
}

impl Schedule {
    fn index(&self, key: &str) -> usize {
        self.nodes.iter().position(|k| k == key).expect("scheduled keys")
    }

    /// The first task that can start: in plan order, an arm-seed's evaluation as soon as its nodes are
    /// trained, else the first node whose parent is trained.
    /// The next task: an arm-seed's evaluation as soon as its nodes are trained (in plan order), else,
    /// of the nodes whose parent is trained, the one with the longest estimated path of work below it
    /// (longest first, so that a long chain does not start last and run alone; ties in plan order).
    fn next(&self, plan: &Plan) -> Option<Task> {
        let mut best: Option<usize> = None;
        for (a, arm) in plan.arms.iter().enumerate() {
            let chain: Vec<usize> = arm.chain.iter().map(|k| self.index(k)).collect();
            let probes: Vec<usize> = arm.probe.iter().chain(&arm.transfer_probe).map(|k| self.index(k)).collect();
            if chain.iter().any(|&i| self.failed[i].is_some()) {
                continue;
            }
            // A failed probe leaves the chain's boundaries to measure.
            let settled = |i: usize| self.done[i] || self.failed[i].is_some();
            if !self.evaluated[a] && chain.iter().all(|&i| self.done[i]) && probes.iter().all(|&i| settled(i)) {
                return Some(Task::Evaluate(a));
            }
            for &i in chain.iter().chain(&probes) {
                if self.done[i] || self.started[i] || self.failed[i].is_some() {
                    continue;
                }
                let node = plan.node(&self.nodes[i]).expect("plan node");
                let parent_ready = node
                    .parent
                    .as_ref()
                    .is_none_or(|p| self.nodes.iter().position(|k| k == p).is_none_or(|j| self.done[j]));
                if parent_ready && best.is_none_or(|b| self.path[i] > self.path[b]) {
                    best = Some(i);
                }
            }
        }
        best.map(Task::Train)
    }

    /// Marks node `i` failed, and every scheduled node below it.
    fn fail(&mut self, plan: &Plan, i: usize, stage: &str, reason: &str) {
        self.failed[i] = Some((stage.to_string(), reason.to_string()));
        loop {
            let mut changed = false;
            for j in 0..self.nodes.len() {
                if self.failed[j].is_some() {
                    continue;
                }
                let parent = plan.node(&self.nodes[j]).and_then(|n| n.parent.clone());
                if let Some(p) = parent.and_then(|p| self.nodes.iter().position(|k| *k == p)) {
                    if let Some(why) = self.failed[p].clone() {
                        self.failed[j] = Some(why);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }
}

/// Every node an arm-seed needs: its chain, then its probes.
fn arm_keys(arm: &crate::plan::ArmRun) -> impl Iterator<Item = &String> {
    arm.chain.iter().chain(&arm.probe).chain(&arm.transfer_probe)
}

/// Estimated seconds of evaluating one arm-seed (boundaries and probe snapshots; measured on the organism).
const EVALUATION_SECONDS: f64 = 4.0;

/// Runs an experiment: every node not in the cache, `opts.jobs` at a time (each as soon as its parent is
/// trained), and each arm-seed's world evaluation as soon as its nodes are. A stage that fails (the
/// readiness gate, a diverging loss) fails the arm-seeds that need it, which are recorded with why; the
/// other arms complete and the report says which arm-seeds are missing.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary, LabError> {
    let _lock = RunLock::acquire(&opts.run_dir).map_err(LabError::Other)?;
    let plan = plan(exp);
    let cache = Cache::new(&opts.cache_dir);
    let evaluator = exp.world().map(|w| w.evaluator(&exp.eval)).transpose().map_err(LabError::Other)?;
    if let (Some(w), Some(m)) = (exp.world(), &evaluator) {
        let problems = crate::hypothesis::check_metrics(&exp.hypotheses, &w.catalogue(&m.monitors()));
        if !problems.is_empty() {
            return Err(LabError::Other(format!("the experiment's hypotheses:\n  {}", problems.join("\n  "))));
        }
    }
    write_plan(exp, &plan, opts)?;
    let mut nodes: Vec<String> = Vec::new();
    for arm in &plan.arms {
        for k in arm_keys(arm) {
            if !nodes.contains(k) {
                nodes.push(k.clone());
            }
        }
    }
    let n = nodes.len();
    let params = crate::plan::model_parameters(exp)?;
    let mut sched = Schedule {
        done: vec![false; n],
        started: vec![false; n],
        failed: vec![None; n],
        evaluated: vec![evaluator.is_none(); plan.arms.len()],
        eval_failed: vec![None; plan.arms.len()],
        running: 0,
        summary: RunSummary::default(),
        results: Vec::new(),
        path: vec![0.0; n],
        total_work: 0.0,
        done_work: 0.0,
        fatal: None,
        nodes,
    };
    // Longest path below each node: children come after their parents in the list, so one backward pass.
    for i in (0..n).rev() {
        let node = plan.node(&sched.nodes[i]).expect("plan node");
        let below = (i + 1..n)
            .filter(|&j| plan.node(&sched.nodes[j]).and_then(|c| c.parent.as_ref()) == Some(&node.key))
            .map(|j| sched.path[j])
            .fold(0.0, f64::max);
        sched.path[i] = crate::plan::estimate_seconds(node, params) + below;
    }
    for i in 0..n {
        if cache.state(&sched.nodes[i]) == NodeState::Complete {
            sched.done[i] = true;
            sched.summary.reused.push(sched.nodes[i].clone());
        } else {
            sched.total_work += crate::plan::estimate_seconds(plan.node(&sched.nodes[i]).expect("plan node"), params);
        }
    }
    if evaluator.is_some() {
        sched.total_work += EVALUATION_SECONDS * plan.arms.len() as f64;
    }
    let overall = ordo_train::trainer::progress_bar("overall", 1000, "‰ (estimated work)", opts.progress);
    let state = (Mutex::new(sched), Condvar::new());
    let started = Instant::now();
    let worker = || {
        // A task that runs beside others gets one thread (two single-threaded nodes use two cores better
        // than two nodes sharing rayon's pool); one that runs alone (the shared base, the last node) gets
        // the whole pool. Results do not depend on the thread count.
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
        loop {
            let (task, alone) = {
                let mut s = state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                loop {
                    if s.fatal.is_some() {
                        return;
                    }
                    if let Some(t) = s.next(&plan) {
                        match t {
                            Task::Train(i) => s.started[i] = true,
                            Task::Evaluate(a) => s.evaluated[a] = true,
                        }
                        s.running += 1;
                        let alone = s.running == 1 && s.next(&plan).is_none();
                        break (t, alone);
                    }
                    if s.running == 0 {
                        return;
                    }
                    s = state.1.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let body = || match task {
                Task::Train(i) => {
                    let key = state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).nodes[i].clone();
                    let node = plan.node(&key).expect("plan node");
                    let arm = plan.arms.iter().find(|a| arm_keys(a).any(|k| *k == key)).expect("a node has an arm");
                    let label = {
                        let s = state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let finished = s.done.iter().filter(|d| **d).count() + s.running;
                        format!("[{finished}/{n}] {} {} seed {}", arm.arm, node.stage, arm.seed)
                    };
                    Outcome::Trained(i, train_once(exp, (&plan, &cache), node, &label, opts.progress))
                }
                Task::Evaluate(a) => {
                    let m = evaluator.as_ref().expect("evaluations only with an evaluator");
                    // Without the probes that failed (their figures are then not measured).
                    let mut arm = plan.arms[a].clone();
                    {
                        let s = state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let failed = |k: &Option<String>| k.as_ref().is_some_and(|k| s.failed[s.index(k)].is_some());
                        if failed(&arm.probe) {
                            arm.probe = None;
                        }
                        if failed(&arm.transfer_probe) {
                            arm.transfer_probe = None;
                        }
                    }
                    Outcome::Evaluated(
                        a,
                        evaluate_arm(exp, &plan, &cache, &arm, m.as_ref(), opts.progress).map(Box::new),
                    )
                }
            };
            // A panic in a task is that task's failure: the other workers must not wait for it forever.
            let guarded = || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into());
                    let e = LabError::Other(format!("panicked: {why}"));
                    match task {
                        Task::Train(i) => Outcome::Trained(i, Err(e)),
                        Task::Evaluate(a) => Outcome::Evaluated(a, Err(e)),
                    }
                })
            };
            let outcome = if alone || opts.jobs <= 1 { guarded() } else { single.install(guarded) };
            let mut s = state.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.running -= 1;
            match outcome {
                Outcome::Trained(i, Ok(how)) => {
                    s.done[i] = true;
                    let key = s.nodes[i].clone();
                    s.done_work += crate::plan::estimate_seconds(plan.node(&key).expect("plan node"), params);
                    match how {
                        Trained::Reused => s.summary.reused.push(key),
                        Trained::Retrained => {
                            s.summary.corrupt.push(key.clone());
                            s.summary.trained.push(key)
                        }
                        Trained::Fresh => s.summary.trained.push(key),
                    }
                }
                Outcome::Trained(i, Err(e)) => {
                    let key = s.nodes[i].clone();
                    let node = plan.node(&key).expect("plan node");
                    eprintln!(
                        "{e}\n(stage `{}`, seed {}: the arm-seeds that need it are not measured)",
                        node.stage, node.seed
                    );
                    s.fail(&plan, i, &node.stage, &e.to_string());
                }
                Outcome::Evaluated(a, r) => {
                    s.done_work += EVALUATION_SECONDS;
                    match r {
                        Ok(r) => {
                            s.results.push((a, *r));
                            s.results.sort_by_key(|(a, _)| *a);
                            let results: Vec<ArmResult> = s.results.iter().map(|(_, r)| r.clone()).collect();
                            let failures = failures(&plan, &s);
                            let m = evaluator.as_ref().expect("evaluator");
                            if let Err(e) =
                                crate::report::write_results(&opts.run_dir, exp, (&results, &failures), m.as_ref())
                            {
                                s.fatal.get_or_insert(e);
                            }
                        }
                        Err(e) => {
                            let arm = &plan.arms[a];
                            eprintln!("evaluating {} seed {} failed: {e}", arm.arm, arm.seed);
                            s.eval_failed[a] = Some(e.to_string());
                        }
                    }
                }
            }
            let frac = if s.total_work > 0.0 { (s.done_work / s.total_work).min(1.0) } else { 1.0 };
            overall.set_position((frac * 1000.0) as u64);
            if frac > 0.0 {
                let eta = started.elapsed().as_secs_f64() * (1.0 - frac) / frac;
                let eta = std::time::Duration::from_secs(eta as u64);
                overall.set_message(format!("whole run: {} left (estimated)", indicatif::HumanDuration(eta)));
            }
            state.1.notify_all();
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(worker);
        }
    });
    overall.finish_and_clear();
    let mut s = state.0.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(e) = s.fatal.take() {
        return Err(e);
    }
    s.summary.failed = failures(&plan, &s);
    if let Some(m) = &evaluator {
        let results: Vec<ArmResult> = s.results.iter().map(|(_, r)| r.clone()).collect();
        crate::report::write_all(&opts.run_dir, exp, &plan, &cache, (&results, &s.summary.failed), m.as_ref())?;
    }
    Ok(s.summary)
}

/// The arm-seeds a failed node keeps from finishing (or from their probes), and those whose evaluation
/// failed, in plan order, with the stage and why.
fn failures(plan: &Plan, s: &Schedule) -> Vec<ArmFailure> {
    plan.arms
        .iter()
        .enumerate()
        .filter_map(|(a, arm)| {
            let node = arm_keys(arm).find_map(|k| s.failed[s.index(k)].clone());
            let eval = s.eval_failed[a].clone().map(|why| ("evaluation".to_string(), why));
            node.or(eval).map(|(stage, reason)| ArmFailure { arm: arm.arm.clone(), seed: arm.seed, stage, reason })
        })
        .collect()
}

/// What a worker's task gave.
enum Outcome {
    Trained(usize, Result<Trained, LabError>),
    Evaluated(usize, Result<Box<ArmResult>, LabError>),
}

/// How a node came to be in the cache.
enum Trained {
    /// Another process had built it by the time its lock was taken.
    Reused,
    Fresh,
    /// It was corrupt and was trained again.
    Retrained,
}

/// Trains a node unless another process sharing the cache built it meanwhile (waiting for its lock).
fn train_once(
    exp: &Experiment,
    (plan, cache): (&Plan, &Cache),
    node: &Node,
    label: &str,
    progress: bool,
) -> Result<Trained, LabError> {
    let key = &node.key;
    let _node_lock = cache.lock_node(key, &mut |pid| {
        eprintln!(
            "cache node {} ({}) is being built by another ordo process (pid {}); waiting for it",
            short(key),
            node.stage,
            pid.map_or("unknown".into(), |p| p.to_string())
        )
    })?;
    let how = match cache.state(key) {
        NodeState::Complete => return Ok(Trained::Reused),
        NodeState::Corrupt(why) => {
            eprintln!("cache node {} ({}) is corrupt: {why}; retraining it", short(key), node.stage);
            Trained::Retrained
        }
        NodeState::Missing => Trained::Fresh,
    };
    run_node(exp, (plan, cache), node, label, progress)?;
    Ok(how)
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
            if let Some(world) = exp.world() {
                world.check_model(&tok).map_err(|e| {
                    LabError::Other(format!(
                        "model.init: {}: cannot be used in world {:?}: {e}",
                        path.display(),
                        world.name()
                    ))
                })?;
            }
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
        // A snapshot is a full model: with LoRA adapters, the merged one.
        let merged = p.lora().map(|_| p.merged(&config_ref)).transpose()?;
        Ok(ordo_model::weights::save_hf_dir(
            &dir,
            &config_ref,
            merged.as_ref().unwrap_or(p),
            Some(tok_ref),
            usize::MAX,
        )?)
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
    // The node's model is a full HF checkpoint (with LoRA, the merged model), and its adapters are
    // also written in PEFT's layout beside it.
    let model = policy.checkpoint_params().map_err(stages::stage_error(node))?;
    ordo_model::weights::save_hf_dir(&staging.join("model"), &policy.config, &model, Some(&tok), usize::MAX)?;
    if let Some(adapters) = policy.params.adapters(&policy.config)? {
        // The base model, relative to the adapter directory: the parent node's model.
        let base = node.parent.as_deref().map(|p| format!("../../{p}/model"));
        ordo_model::weights::save_peft_dir(&adapters, &staging.join("adapter"), base.as_deref(), false)?;
    }
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
