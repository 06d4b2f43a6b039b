//! The plan: per seed, the arms form a prefix tree of stage nodes; a node's key hashes everything
//! that changes its result (parent key, stage name, resolved stage config, seed, model init, world).

use crate::experiment::{Experiment, StageParams};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Version of the node format and stage semantics; bump it when a change alters results.
pub const NODE_FORMAT: &str = "ordo-node-v4";

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One stage run: a model state in the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub key: String,
    /// The node whose model this stage starts from (None: the initial model).
    pub parent: Option<String>,
    pub stage: String,
    pub params: StageParams,
    /// The seed this stage runs with (the base seed for a shared base).
    pub seed: u64,
    /// Seeds of the arms that pass through this node.
    pub arm_seeds: Vec<u64>,
    /// Steps between parameter snapshots kept in the node (the uptake probe's); 0: none.
    pub snapshot_every: usize,
}

/// An arm for one seed: its chain of node keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRun {
    pub arm: String,
    pub seed: u64,
    pub chain: Vec<String>,
    /// The uptake-probe node applied to the chain's last model, if the experiment has a probe.
    pub probe: Option<String>,
    /// The transfer-probe node applied to the chain's last model, if the probe has one.
    pub transfer_probe: Option<String>,
}

/// All nodes in execution order (parents first, whole arms early) and the arm chains.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub nodes: Vec<Node>,
    pub arms: Vec<ArmRun>,
    /// Key of the initial model for each seed.
    pub roots: Vec<(u64, String)>,
}

impl Plan {
    /// The node with this key.
    pub fn node(&self, key: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.key == key)
    }
}

/// The key of the initial model for runs whose initial weights come from `init_seed`.
pub fn root_key(exp: &Experiment, init_seed: u64) -> String {
    let v = json!({
        "format": NODE_FORMAT,
        "model": exp.model,
        "init_seed": init_seed,
        "world": exp.world,
    });
    sha256_hex(v.to_string().as_bytes())
}

/// Builds the plan of an experiment.
pub fn plan(exp: &Experiment) -> Plan {
    let mut nodes: Vec<Node> = Vec::new();
    let mut arms = Vec::new();
    let mut roots = Vec::new();
    for &seed in &exp.seeds {
        let init_seed = if exp.shared_base { exp.base_seed } else { seed };
        let root = root_key(exp, init_seed);
        roots.push((seed, root.clone()));
        for (arm, stages) in &exp.arms {
            let mut parent: Option<String> = None;
            let mut chain = Vec::new();
            for (i, stage) in stages.iter().enumerate() {
                let params = exp.stages[stage].clone();
                // The costliest node, a first pretraining stage, is shared by every seed by default.
                let stage_seed =
                    if exp.shared_base && i == 0 && params.kind() == "pretrain" { exp.base_seed } else { seed };
                let key = add_node(&mut nodes, parent.as_deref(), &root, stage, params, (stage_seed, seed), 0);
                chain.push(key.clone());
                parent = Some(key);
            }
            let probe = exp.probe.as_ref().map(|p| {
                add_node(&mut nodes, parent.as_deref(), &root, &p.stage, p.params.clone(), (seed, seed), p.every)
            });
            let transfer_probe =
                exp.probe.as_ref().and_then(|p| p.transfer.as_ref().map(|t| (t, p.every))).map(|(t, every)| {
                    add_node(&mut nodes, parent.as_deref(), &root, &t.stage, t.params.clone(), (seed, seed), every)
                });
            arms.push(ArmRun { arm: arm.clone(), seed, chain, probe, transfer_probe });
        }
    }
    Plan { nodes, arms, roots }
}

/// Adds the node of `stage` after `parent` (or merges into an identical one) and returns its key.
/// `seeds` is (the stage's seed, the arm's seed).
fn add_node(
    nodes: &mut Vec<Node>,
    parent: Option<&str>,
    root: &str,
    stage: &str,
    params: StageParams,
    (stage_seed, arm_seed): (u64, u64),
    snapshot_every: usize,
) -> String {
    // The stage's name is part of the key: it seeds the stage's data order (`runner::data_seed`), so
    // two stages with the same settings under different names train on different data.
    let mut v = json!({
        "format": NODE_FORMAT,
        "parent": parent.unwrap_or(root),
        "stage": stage,
        "params": params,
        "seed": stage_seed,
    });
    if snapshot_every > 0 {
        v["snapshot_every"] = json!(snapshot_every);
    }
    let key = sha256_hex(v.to_string().as_bytes());
    match nodes.iter_mut().find(|n| n.key == key) {
        Some(n) => {
            if !n.arm_seeds.contains(&arm_seed) {
                n.arm_seeds.push(arm_seed);
            }
        }
        None => nodes.push(Node {
            key: key.clone(),
            parent: parent.map(str::to_string),
            stage: stage.to_string(),
            params,
            seed: stage_seed,
            arm_seeds: vec![arm_seed],
            snapshot_every,
        }),
    }
    key
}

/// Parameters of the model every arm starts from (for cost estimates); an error names the file.
pub fn model_parameters(exp: &Experiment) -> ordo_model::Result<usize> {
    use crate::experiment::ModelInit;
    match &exp.model {
        ModelInit::Scratch { preset, .. } => crate::experiment::preset_config(exp.world(), preset)
            .map(|c| c.parameter_count())
            .ok_or_else(|| ordo_model::ModelError::Config(format!("model.preset: no model preset {preset:?}"))),
        ModelInit::Hf { path } => Ok(ordo_model::ModelConfig::from_file(&path.join("config.json"))?.parameter_count()),
        ModelInit::Gguf { path } => ordo_model::gguf::gguf_parameter_count(path),
    }
}

/// Sustained training throughput assumed for large models on 2 cores (the organism's training step
/// reaches about 100 GFLOP/s, the bench model's 100-130; see BENCHMARKS.md).
const FLOPS_PER_SECOND: f64 = 100e9;

/// A rough cost estimate of a node in seconds on 2 cores (for `ordo plan`), for a model of `params`
/// parameters. Small models are dominated by per-op overhead: measured on the organism preset
/// (examples/orders.toml), pretraining costs 4.8e-5 to 6.2e-5 s per token (this VM's speed varies),
/// DPO 2.9e-5 s per token slot and
/// GRPO 3.5e-5 s per sampled-token slot (batch x group x max_new_tokens) with its update (both count
/// padded slots; shared prefixes and padding are not computed). Large models are bound by arithmetic: 6 FLOPs per parameter per trained token (2 per
/// sampled or reference token) at [`FLOPS_PER_SECOND`]. The estimate is the larger of the two.
pub fn estimate_seconds(node: &Node, params: usize) -> f64 {
    let steps = node.params.steps() as f64;
    let p = params as f64;
    let flops = |per_token: f64, tokens: f64| per_token * p * tokens / FLOPS_PER_SECOND;
    let batch = node.params.optim().batch_size;
    let per_step = match &node.params {
        StageParams::Pretrain { settings, .. } => {
            let tokens = (batch * settings.seq_len) as f64;
            (tokens * 4.8e-5).max(flops(6.0, tokens))
        }
        StageParams::Sft { settings, .. } => {
            // Examples are rarely full length: half of max_len on average.
            let tokens = (batch * settings.max_len) as f64 / 2.0;
            (tokens * 4.8e-5).max(flops(6.0, tokens))
        }
        StageParams::RewardModel { .. } => {
            let tokens = batch as f64 * 2.0 * 64.0;
            (tokens * 4.8e-5).max(flops(6.0, tokens))
        }
        StageParams::Dpo { .. } => {
            // Both sides through the policy (forward and backward) and the reference (forward); the
            // prompt both sides share is computed once: about half the slots on average.
            let tokens = batch as f64 * 2.0 * 64.0;
            (tokens * 2.9e-5).max(flops(8.0, tokens / 2.0))
        }
        StageParams::Grpo { settings: s, .. } => {
            // Completions average about half of max_new_tokens (the group's prompt is computed once).
            let tokens = (batch * s.group_size * s.max_new_tokens) as f64;
            (tokens * 3.5e-5).max(flops(2.0 + 6.0 + 2.0, tokens / 2.0))
        }
    };
    steps * per_step
}

/// A seed for data generation that differs per stage name and seed.
pub(crate) fn data_seed(stage: &str, seed: u64) -> u64 {
    let h = sha256_hex(format!("{stage}:{seed}").as_bytes());
    u64::from_str_radix(&h[..16], 16).expect("hex")
}
