//! The run's output files: `results.json` (every arm-seed's raw figures), `summary.json` (estimates
//! across seeds, comparisons, everything the report shows), `report.md`, `report.html` and
//! `transcripts.jsonl`. `ordo report RUN_DIR` rebuilds the report from `results.json`.

use crate::cache::{short, Cache};
use crate::error::LabError;
use crate::evaluation::{eval_file, read_evaluation, ArmResult};
use crate::experiment::Experiment;
use crate::plan::Plan;
use crate::summary::{run_results, summarize, ArmFailure, RunResults, Summary};
use ordo_eval::Evaluation;
use ordo_worlds::{Evaluator, World};
use serde_json::{json, Value};
use std::path::Path;

/// Writes `results.json` (after each arm-seed, so partial runs show what they measured).
pub fn write_results(
    dir: &Path,
    exp: &Experiment,
    (results, failures): (&[ArmResult], &[ArmFailure]),
    m: &dyn Evaluator,
) -> Result<(), LabError> {
    let r = run_results(exp, results, failures, m);
    ordo_model::atomic::write_file(&dir.join("results.json"), &serde_json::to_vec_pretty(&r).expect("serialises"))?;
    Ok(())
}

/// Writes the report files from `results.json`'s content, in the run's world. A probe curve the
/// world's catalogue does not know is an error (results.json's probe rates share their object with
/// its other keys).
pub fn write_report(dir: &Path, run: &RunResults, world: &dyn World) -> Result<Summary, LabError> {
    let catalogue = world.catalogue(&run.monitors);
    for r in &run.results {
        for p in r.probe.iter().chain(&r.transfer_probe) {
            let Some(bad) = p.rates.keys().find(|k| catalogue.probe.rate(k).is_none()) else { continue };
            let known: Vec<&str> = catalogue.probe.rates.iter().map(|r| r.metric).collect();
            return Err(LabError::Other(format!(
                "results.json: {} seed {}: probe key {bad:?} is not one of {}'s probe rates ({}) or a probe field",
                r.arm,
                r.seed,
                world.name(),
                known.join(", ")
            )));
        }
    }
    let s = summarize(run, &catalogue);
    ordo_model::atomic::write_file(&dir.join("summary.json"), &serde_json::to_vec_pretty(&s).expect("serialises"))?;
    ordo_model::atomic::write_file(&dir.join("report.md"), crate::markdown::markdown(&s, world).as_bytes())?;
    ordo_model::atomic::write_file(&dir.join("report.html"), crate::html::html(&s, world).as_bytes())?;
    Ok(s)
}

/// Writes every run output: results, report and transcripts.
pub fn write_all(
    dir: &Path,
    exp: &Experiment,
    plan: &Plan,
    cache: &Cache,
    (results, failures): (&[ArmResult], &[ArmFailure]),
    m: &dyn Evaluator,
) -> Result<(), LabError> {
    let world = exp.world().ok_or_else(|| LabError::Other("only world experiments have reports".into()))?;
    write_results(dir, exp, (results, failures), m)?;
    write_report(dir, &run_results(exp, results, failures, m), world)?;
    let mut out = Vec::new();
    // The arm-seeds that were measured (a failed one has no evaluation of its later boundaries).
    for arm in plan.arms.iter().filter(|a| results.iter().any(|r| r.arm == a.arm && r.seed == a.seed)) {
        for (i, key) in arm.chain.iter().enumerate() {
            let ev: Evaluation = read_evaluation(cache, key, &eval_file("eval", exp, arm.seed))
                .map_err(|why| LabError::Other(format!("cache node {}: {why}", short(key))))?;
            let stage = &plan.node(key).expect("plan node").stage;
            for t in ev.transcripts {
                let mut v = json!({"arm": arm.arm, "seed": arm.seed, "boundary": i, "stage": stage});
                if let (Value::Object(o), Value::Object(t)) = (&mut v, serde_json::to_value(&t).expect("serialises")) {
                    o.extend(t);
                }
                out.extend(serde_json::to_vec(&v).expect("serialises"));
                out.push(b'\n');
            }
        }
    }
    ordo_model::atomic::write_file(&dir.join("transcripts.jsonl"), &out)?;
    Ok(())
}
