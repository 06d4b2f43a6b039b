//! `results.json`'s content: the experiment's settings, every arm-seed's raw figures, its declared
//! hypotheses and the arm-seeds that could not finish.

use crate::evaluation::ArmResult;
use crate::experiment::Experiment;
use crate::hypothesis::Hypothesis;
use ordo_worlds::Evaluator;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What `results.json` holds: the experiment's settings and every arm-seed's raw figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    pub experiment: String,
    pub seeds: Vec<u64>,
    pub shared_base: bool,
    pub base_seed: u64,
    /// Arms in file order with their stage sequences.
    pub arms: Vec<(String, Vec<String>)>,
    /// Resolved stage settings, world, evaluation and probe settings (as the run used them).
    pub stages: Value,
    pub world: Value,
    pub eval: Value,
    pub probe: Value,
    /// The monitors' metric names, in report order, with whether each reads the CoT.
    pub monitors: Vec<(String, bool)>,
    /// The learned monitor's own held-out score.
    pub learned_monitor_heldout: Value,
    pub results: Vec<ArmResult>,
    /// The experiment's declared hypotheses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hypotheses: Vec<Hypothesis>,
    /// Arm-seeds that could not finish, with the stage and why (their figures are absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ArmFailure>,
}

/// An arm-seed that could not finish: the stage that failed and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmFailure {
    pub arm: String,
    pub seed: u64,
    pub stage: String,
    pub reason: String,
}

/// Builds `results.json`'s content.
pub fn run_results(
    exp: &Experiment,
    results: &[ArmResult],
    failures: &[ArmFailure],
    monitors: &dyn Evaluator,
) -> RunResults {
    RunResults {
        experiment: exp.name.clone(),
        seeds: exp.seeds.clone(),
        shared_base: exp.shared_base,
        base_seed: exp.base_seed,
        arms: exp.arms.clone(),
        stages: json!(exp.stages),
        world: json!(exp.world),
        eval: json!(exp.eval),
        probe: json!(exp.probe),
        monitors: monitors.monitors(),
        learned_monitor_heldout: monitors.monitor_notes(),
        results: results.to_vec(),
        hypotheses: exp.hypotheses.clone(),
        failures: failures.to_vec(),
    }
}
