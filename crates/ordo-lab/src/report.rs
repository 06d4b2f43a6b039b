//! The run's output files: `results.json` (every arm-seed's raw figures), `summary.json` (estimates
//! across seeds, comparisons, everything the report shows), `report.md`, `report.html` and
//! `transcripts.jsonl`. `ordo report RUN_DIR` rebuilds the report from `results.json`.

use crate::cache::{short, Cache};
use crate::error::LabError;
use crate::evaluation::{eval_file, read_evaluation, ArmResult};
use crate::experiment::Experiment;
use crate::plan::Plan;
use crate::summary::{run_results, summarize, RunResults, Summary};
use ordo_eval::Evaluation;
use ordo_worlds::Evaluator;
use serde_json::{json, Value};
use std::path::Path;

/// Writes `results.json` (after each arm-seed, so partial runs show what they measured).
pub fn write_results(dir: &Path, exp: &Experiment, results: &[ArmResult], m: &dyn Evaluator) -> Result<(), LabError> {
    let r = run_results(exp, results, m);
    ordo_model::atomic::write_file(&dir.join("results.json"), &serde_json::to_vec_pretty(&r).expect("serialises"))?;
    Ok(())
}

/// Writes the report files from `results.json`'s content, in the world the run recorded.
pub fn write_report(dir: &Path, run: &RunResults) -> Result<Summary, LabError> {
    let world =
        ordo_worlds::recorded(&run.world).map_err(|why| LabError::Other(format!("{}: {why}", dir.display())))?;
    let s = summarize(run, &world.catalogue(&run.monitors));
    ordo_model::atomic::write_file(&dir.join("summary.json"), &serde_json::to_vec_pretty(&s).expect("serialises"))?;
    ordo_model::atomic::write_file(&dir.join("report.md"), crate::markdown::markdown(&s, &*world).as_bytes())?;
    ordo_model::atomic::write_file(&dir.join("report.html"), crate::html::html(&s, &*world).as_bytes())?;
    Ok(s)
}

/// Writes every run output: results, report and transcripts.
pub fn write_all(
    dir: &Path,
    exp: &Experiment,
    plan: &Plan,
    cache: &Cache,
    results: &[ArmResult],
    m: &dyn Evaluator,
) -> Result<(), LabError> {
    write_results(dir, exp, results, m)?;
    write_report(dir, &run_results(exp, results, m))?;
    let mut out = Vec::new();
    for arm in &plan.arms {
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
