//! Evaluation of every arm-seed: the suites of `ordo-eval` at each stage boundary, and the uptake
//! probe's trajectory. Each checkpoint's evaluation is cached in its node directory, keyed by the
//! evaluation settings and the arm seed (which fixes the prompts).

use crate::cache::short;
use crate::cache::Cache;
use crate::error::LabError;
use crate::experiment::{Experiment, StageParams};
use crate::plan::{sha256_hex, ArmRun, Plan};
use ordo_eval::catalogue::{ProbeCatalogue, UptakeDef, UptakeRule};
use ordo_eval::metrics::{Measure, Metrics};
use ordo_eval::Evaluation;
use ordo_worlds::Evaluator;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// The evaluation after one stage of an arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Boundary {
    pub stage: String,
    pub key: String,
    pub metrics: Metrics,
}

/// The uptake probe on one arm-seed's final model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub stage: String,
    pub key: String,
    /// Probe steps at which the rates were measured (0 = the arm's final model).
    pub steps: Vec<usize>,
    /// Each rate the probe follows (the world's [`ProbeCatalogue`]) at each of `steps`, by metric name.
    #[serde(flatten)]
    pub rates: BTreeMap<String, Vec<Option<f64>>>,
    /// The uptake figures ([`ProbeCatalogue::uptake`]).
    pub metrics: Metrics,
}

/// One arm-seed's evaluations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: String,
    pub seed: u64,
    pub boundaries: Vec<Boundary>,
    pub probe: Option<ProbeResult>,
    /// The transfer probe (values taught in the second context, measured in the RLVF context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_probe: Option<ProbeResult>,
}

/// Uptake figures of a probe trajectory: each of `defs` from its rate's curve in `rates` (measured at
/// `steps`), by its [`UptakeRule`]; a rate the curves lack gives no value.
pub fn uptake_metrics(steps: &[usize], rates: &BTreeMap<String, Vec<Option<f64>>>, defs: &[UptakeDef]) -> Metrics {
    let total = *steps.last().unwrap_or(&0);
    let figure = |def: &UptakeDef| {
        let Some(r) = rates.get(def.rate) else { return Measure::NONE };
        match def.rule {
            UptakeRule::DropPerStep => match (r.first().copied().flatten(), r.last().copied().flatten()) {
                (Some(a), Some(b)) if total > 0 => Measure { value: Some((a - b) / total as f64), n: 1 },
                _ => Measure::NONE,
            },
            UptakeRule::AtStart => {
                let v = r.first().copied().flatten();
                Measure { value: v, n: v.is_some() as usize }
            }
            UptakeRule::StepsToHalve => match r.first().copied().flatten() {
                Some(h0) if h0 > 0.0 => {
                    let s = steps.iter().zip(r).find(|(_, h)| h.is_some_and(|h| h <= h0 / 2.0)).map(|(s, _)| *s as f64);
                    Measure { value: s, n: s.is_some() as usize }
                }
                _ => Measure::NONE,
            },
        }
    };
    defs.iter().map(|d| (d.name.to_string(), figure(d))).collect()
}

/// The evaluation `rel` of node `key` as the cache holds it (checked against the node's manifest);
/// `Err(why)` when it is absent, altered or unreadable.
pub fn read_evaluation<T: for<'de> Deserialize<'de>>(cache: &Cache, key: &str, rel: &str) -> Result<T, String> {
    let bytes = cache.evaluation(key, rel)?.ok_or_else(|| format!("{rel}: not evaluated yet"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{rel}: {e}"))
}

/// A node's evaluation `rel`: read from the cache when its checksum holds, else computed and added
/// to the node, under the node's lock so that concurrent runners compute it once.
fn cached<T: Serialize + for<'de> Deserialize<'de>>(
    cache: &Cache,
    key: &str,
    rel: &str,
    compute: impl FnOnce() -> Result<T, LabError>,
) -> Result<T, LabError> {
    if let Ok(v) = read_evaluation(cache, key, rel) {
        return Ok(v);
    }
    let _lock = cache.lock_node(key, &mut |pid| {
        eprintln!(
            "cache node {}: another ordo process (pid {}) is adding to it; waiting for it",
            short(key),
            pid.map_or("unknown".into(), |p| p.to_string())
        )
    })?;
    match read_evaluation(cache, key, rel) {
        Ok(v) => return Ok(v),
        Err(why) if cache.dir(key).join(rel).exists() => {
            eprintln!("cache node {}: {why}; evaluating it again", short(key))
        }
        Err(_) => {}
    }
    let v = compute()?;
    cache.add_evaluation(key, rel, &serde_json::to_vec(&v).expect("evaluations serialise")).map_err(LabError::Other)?;
    Ok(v)
}

fn eval_err(e: ordo_eval::EvalError) -> LabError {
    LabError::Other(format!("evaluation: {e}"))
}

/// The file name, inside its node's directory, of an evaluation of `kind` for this experiment's
/// settings and arm seed.
pub fn eval_file(kind: &str, exp: &Experiment, seed: u64) -> String {
    let world = exp.world.as_ref().expect("world experiments only");
    // Version 3: completions are read in the world's response format, and the restate format's own
    // figures exist; 4: the restate format restates an empty think block with an empty justification and
    // counts a label in place of a restatement as unfaithful; 5: the hack rate among well-formed
    // completions. The probe's figures (versioned apart) also gained clean accuracy and the surface match.
    let v = 5;
    let key = sha256_hex(json!({"eval": exp.eval, "seed": seed, "world": world, "v": v}).to_string().as_bytes());
    format!("{kind}-{}.json", &key[..16])
}

/// Evaluates one arm-seed at every stage boundary and runs its probe trajectory.
pub fn evaluate_arm(
    exp: &Experiment,
    plan: &Plan,
    cache: &Cache,
    arm: &ArmRun,
    evaluator: &dyn Evaluator,
    progress: bool,
) -> Result<ArmResult, LabError> {
    let points = |params: &StageParams, every: usize| params.steps().div_ceil(every) + 1;
    let probe_points = exp
        .probe
        .as_ref()
        .map_or(0, |p| points(&p.params, p.every) + p.transfer.as_ref().map_or(0, |t| points(&t.params, p.every)));
    let label = format!("evaluating {} seed {}", arm.arm, arm.seed);
    let bar = ordo_train::trainer::progress_bar(&label, arm.chain.len() + probe_points, "checkpoints", progress);
    let mut boundaries = Vec::new();
    for key in &arm.chain {
        let node = plan.node(key).expect("chain keys are plan nodes");
        let ev: Evaluation = cached(cache, key, &eval_file("eval", exp, arm.seed), || {
            let (policy, tok) = cache.model(key)?;
            let dec = policy.inference_decoder().map_err(|e| LabError::Other(e.to_string()))?;
            evaluator.evaluate(&dec, &tok, arm.seed).map_err(eval_err)
        })?;
        boundaries.push(Boundary { stage: node.stage.clone(), key: key.clone(), metrics: ev.metrics });
        bar.inc(1);
    }
    let catalogue = exp.world.as_ref().map(|w| w.catalogue(&evaluator.monitors()).probe);
    let (mut probe, mut transfer_probe) = (None, None);
    if let (Some(spec), Some(catalogue)) = (&exp.probe, &catalogue) {
        if let Some(pkey) = &arm.probe {
            let stage = (pkey.as_str(), spec.stage.as_str(), &spec.params, spec.every);
            probe = Some(probe_trajectory(exp, cache, arm, stage, (evaluator, catalogue), &bar)?);
        }
        if let (Some(tkey), Some(t)) = (&arm.transfer_probe, &spec.transfer) {
            let stage = (tkey.as_str(), t.stage.as_str(), &t.params, spec.every);
            transfer_probe = Some(probe_trajectory(exp, cache, arm, stage, (evaluator, catalogue), &bar)?);
        }
    }
    bar.finish();
    Ok(ArmResult { arm: arm.arm.clone(), seed: arm.seed, boundaries, probe, transfer_probe })
}

/// A probe's rates on its start model, every snapshot and its end model, and its uptake figures; the
/// probe is node `pkey` of stage `stage` with `params`, snapshotted every `every` steps.
fn probe_trajectory(
    exp: &Experiment,
    cache: &Cache,
    arm: &ArmRun,
    (pkey, stage, params, every): (&str, &str, &StageParams, usize),
    (evaluator, probe): (&dyn Evaluator, &ProbeCatalogue),
    bar: &indicatif::ProgressBar,
) -> Result<ProbeResult, LabError> {
    let start = arm.chain.last().expect("arms have a stage");
    let total = params.steps();
    let mut steps: Vec<usize> = (0..total).step_by(every).collect();
    steps.push(total);
    let points: Vec<(usize, Metrics)> = cached(cache, pkey, &eval_file("probe-eval", exp, arm.seed), || {
        // Rebuilt only when the trajectory is measured (a cached one needs neither its data nor its rewards).
        let signal = crate::probe_signal::probe_signal(exp, stage, params, arm.seed)
            .map_err(|e| LabError::Other(format!("probe stage `{stage}` (seed {}): {e}", arm.seed)))?;
        steps
            .iter()
            .map(|&s| {
                let dir = match s {
                    0 => cache.dir(start).join("model"),
                    s if s == total => cache.dir(pkey).join("model"),
                    s => cache.dir(pkey).join(snapshot_name(s)),
                };
                let m = ordo_model::load(&dir, &ordo_model::Device::Cpu)?;
                m.params.check_finite(&dir.display().to_string())?;
                let tok = m.require_tokenizer()?.clone();
                let policy = ordo_train::Policy { config: m.config, params: m.params };
                let dec = policy.inference_decoder().map_err(|e| LabError::Other(e.to_string()))?;
                let m = evaluator.evaluate_probe(&dec, &tok, arm.seed, &signal).map_err(eval_err)?;
                bar.inc(1);
                Ok((s, m))
            })
            .collect()
    })?;
    let rates: BTreeMap<String, Vec<Option<f64>>> = probe
        .rates
        .iter()
        .map(|r| (r.metric.to_string(), points.iter().map(|(_, m)| m.get(r.metric).and_then(|x| x.value)).collect()))
        .collect();
    Ok(ProbeResult {
        stage: stage.to_string(),
        key: pkey.to_string(),
        metrics: uptake_metrics(&steps, &rates, &probe.uptake),
        steps,
        rates,
    })
}

/// Where a probe node keeps the snapshot after `step` steps.
pub fn snapshot_name(step: usize) -> String {
    format!("snapshots/step-{step:06}")
}
