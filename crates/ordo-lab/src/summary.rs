//! The run's numbers: the summary built from `results.json`'s content (estimates across seeds per stage
//! boundary, the probe's curves, the hypotheses, pairwise comparisons, and every figure that could not
//! be measured, with why), which `summary.json` holds.

use crate::answer::HypothesisResult;
use crate::evaluation::{ArmResult, ProbeResult};
use crate::plan::sha256_hex;
pub use crate::results::{run_results, ArmFailure, RunResults};
use ordo_eval::catalogue::{Catalogue, UptakeRule, TRANSFER_PREFIX};
pub use ordo_eval::stats::fmt_estimate;
use ordo_eval::stats::{estimate, permutation_test, Comparison, Estimate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn seed_of(parts: &[&str]) -> u64 {
    u64::from_str_radix(&sha256_hex(parts.join("/").as_bytes())[..16], 16).expect("hex")
}

/// Estimates across seeds, per arm: at every stage boundary, at the end, and along the probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmSummary {
    pub arm: String,
    pub stages: Vec<String>,
    pub seeds: Vec<u64>,
    /// boundaries[i][metric]: after stage i.
    pub boundaries: Vec<BTreeMap<String, Estimate>>,
    pub probe_steps: Vec<usize>,
    /// The steps the transfer probe was measured at (empty without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_probe_steps: Vec<usize>,
    /// Each probe rate's curve across seeds at each of `probe_steps`, under `probe_` + its metric name
    /// (the transfer probe's at `transfer_probe_steps`, under `transfer_probe_` + its metric name).
    #[serde(flatten)]
    pub probe_rates: BTreeMap<String, Vec<Estimate>>,
    pub uptake: BTreeMap<String, Estimate>,
}

/// How a report reads one probe of an arm: the steps it was measured at and the curve of a rate.
pub type ProbeView = (fn(&ArmSummary) -> &[usize], for<'a> fn(&'a ArmSummary, &str) -> &'a [Estimate]);

/// The uptake probe of an arm.
pub const UPTAKE_PROBE: ProbeView = (|a| &a.probe_steps, |a, m| a.probe_curve(m));

/// The transfer probe of an arm.
pub const TRANSFER_PROBE: ProbeView = (|a| &a.transfer_probe_steps, |a, m| a.transfer_probe_curve(m));

impl ArmSummary {
    /// The curve of probe rate `metric` (empty without a probe).
    pub fn probe_curve(&self, metric: &str) -> &[Estimate] {
        self.probe_rates.get(&format!("probe_{metric}")).map_or(&[], Vec::as_slice)
    }

    /// The curve of the transfer probe's rate `metric` (empty without one).
    pub fn transfer_probe_curve(&self, metric: &str) -> &[Estimate] {
        self.probe_rates.get(&format!("{TRANSFER_PREFIX}probe_{metric}")).map_or(&[], Vec::as_slice)
    }

    /// A metric's estimate at the end of the arm (uptake figures from the probe).
    pub fn final_estimate(&self, metric: &str) -> Option<&Estimate> {
        self.uptake.get(metric).or_else(|| self.boundaries.last().and_then(|b| b.get(metric)))
    }
}

/// A pairwise comparison of one final metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairComparison {
    pub metric: String,
    pub a: String,
    pub b: String,
    #[serde(flatten)]
    pub test: Comparison,
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run: RunResults,
    pub arms: Vec<ArmSummary>,
    pub comparisons: Vec<PairComparison>,
    /// Every declared hypothesis with its test and verdict.
    #[serde(default)]
    pub hypotheses: Vec<HypothesisResult>,
    /// "arm / stage / metric: why" for every figure no seed could measure.
    pub not_measurable: Vec<String>,
}

impl Summary {
    /// The catalogue's metrics the report lists: those this run has figures of (measured or n/m), and
    /// the uptake probe's figures in a run without a probe (n/m, as reports always listed them). A metric
    /// the run's ordo did not compute (a later addition, or a suite or probe this run did not ask for:
    /// `eval.transfer_prompts`, `probe.transfer`) is left out.
    pub fn reported<'c>(&self, catalogue: &'c Catalogue) -> Vec<&'c ordo_eval::catalogue::MetricDef> {
        let probed = self.arms.iter().any(|a| !a.probe_steps.is_empty());
        let uptake = |name: &str| catalogue.probe.uptake.iter().any(|d| d.name == name);
        catalogue
            .metrics
            .iter()
            .filter(|m| {
                self.arms.is_empty()
                    || self.arms.iter().any(|a| a.final_estimate(&m.name).is_some())
                    || (!probed && uptake(&m.name))
            })
            .collect()
    }
}

/// One probe's steps, curves (under `PREFIX` + `probe_` + metric) and uptake figures (under `PREFIX` +
/// name) across an arm's seeds; figures no seed could measure are listed in `not_measurable`.
#[allow(clippy::type_complexity)]
fn probe_summary(
    arm: &str,
    probes: &[&ProbeResult],
    catalogue: &Catalogue,
    prefix: &str,
    not_measurable: &mut Vec<String>,
) -> (Vec<usize>, BTreeMap<String, Vec<Estimate>>, BTreeMap<String, Estimate>) {
    let probe_steps = probes.first().map(|p| p.steps.clone()).unwrap_or_default();
    let curve = |p: &ProbeResult, metric: &str, j: usize| p.rates.get(metric).and_then(|r| r.get(j).copied().flatten());
    // Only the rates the probes recorded (a run from before a rate was added has no curve of it).
    let recorded = |rate: &str| probes.iter().any(|p| p.rates.contains_key(rate));
    let rates = catalogue
        .probe
        .rates
        .iter()
        .filter(|r| recorded(r.metric))
        .map(|r| {
            let along = (0..probe_steps.len())
                .map(|j| {
                    let v: Vec<Option<f64>> = probes.iter().map(|p| curve(p, r.metric, j)).collect();
                    estimate(&v, &[])
                })
                .collect();
            (format!("{prefix}probe_{}", r.metric), along)
        })
        .collect();
    let mut uptake = BTreeMap::new();
    if probes.is_empty() {
        return (probe_steps, rates, uptake);
    }
    let which = if prefix.is_empty() { "probe" } else { "transfer probe" };
    // A figure of a rate no probe recorded (a run from before it existed) is left out, not n/m.
    for def in catalogue.probe.uptake.iter().filter(|d| recorded(d.rate)) {
        let name = format!("{prefix}{}", def.name);
        let v: Vec<Option<f64>> = probes.iter().map(|p| p.metrics.get(def.name).and_then(|m| m.value)).collect();
        let e = estimate(&v, &[]);
        if e.n == 0 {
            let label = catalogue.probe.rate(def.rate).map_or(def.rate, |r| r.label);
            let why = match def.rule {
                UptakeRule::StepsToHalve if probes.iter().all(|p| curve(p, def.rate, 0) == Some(0.0)) => {
                    format!("the {label} was 0 at the {which}'s start")
                }
                UptakeRule::StepsToHalve => {
                    format!("the {label} did not halve within the {which}'s {} steps", probe_steps.last().unwrap_or(&0))
                }
                UptakeRule::DropPerStep | UptakeRule::AtStart => catalogue.why_not_measurable(def.name).to_string(),
            };
            not_measurable.push(format!("{arm} / {which} / {name}: {why}"));
        }
        uptake.insert(name, e);
    }
    (probe_steps, rates, uptake)
}

/// Builds the summary of a run's results, with its world's catalogue.
pub fn summarize(run: &RunResults, catalogue: &Catalogue) -> Summary {
    let mut arms = Vec::new();
    let mut not_measurable = Vec::new();
    for (arm, stages) in &run.arms {
        let rs: Vec<&ArmResult> = run.results.iter().filter(|r| &r.arm == arm).collect();
        let seeds: Vec<u64> = rs.iter().map(|r| r.seed).collect();
        let mut boundaries = Vec::new();
        for (i, stage) in stages.iter().enumerate() {
            let mut b = BTreeMap::new();
            for def in &catalogue.metrics {
                let name = &def.name;
                let measures: Vec<_> =
                    rs.iter().filter_map(|r| r.boundaries.get(i)).filter_map(|bd| bd.metrics.get(name)).collect();
                if measures.is_empty() {
                    continue;
                }
                let values: Vec<Option<f64>> = measures.iter().map(|m| m.value).collect();
                // A share's seed values rest on their sample counts (the interval's sampling floor).
                let counts: Vec<usize> = if def.rate { measures.iter().map(|m| m.n).collect() } else { Vec::new() };
                let e = estimate(&values, &counts);
                if e.n == 0 {
                    not_measurable
                        .push(format!("{arm} / after {stage} / {name}: {}", catalogue.why_not_measurable(name)));
                }
                b.insert(name.clone(), e);
            }
            boundaries.push(b);
        }
        let probes: Vec<_> = rs.iter().filter_map(|r| r.probe.as_ref()).collect();
        let (probe_steps, mut probe_rates, mut uptake) =
            probe_summary(arm, &probes, catalogue, "", &mut not_measurable);
        let transfers: Vec<_> = rs.iter().filter_map(|r| r.transfer_probe.as_ref()).collect();
        let (transfer_probe_steps, rates, figures) =
            probe_summary(arm, &transfers, catalogue, TRANSFER_PREFIX, &mut not_measurable);
        probe_rates.extend(rates);
        uptake.extend(figures);
        arms.push(ArmSummary {
            arm: arm.clone(),
            stages: stages.clone(),
            seeds,
            boundaries,
            probe_rates,
            probe_steps,
            transfer_probe_steps,
            uptake,
        });
    }
    let mut comparisons = Vec::new();
    for metric in &catalogue.headline {
        for (i, a) in arms.iter().enumerate() {
            for b in &arms[i + 1..] {
                let vals = |s: &ArmSummary| -> Vec<f64> {
                    s.final_estimate(metric).map(|e| e.values.iter().flatten().copied().collect()).unwrap_or_default()
                };
                let (va, vb) = (vals(a), vals(b));
                // With one seed on a side every relabelling is as extreme as the observed one: no test.
                if va.len() < 2 || vb.len() < 2 {
                    continue;
                }
                if let Some(test) = permutation_test(&va, &vb, seed_of(&[&a.arm, &b.arm, metric])) {
                    comparisons.push(PairComparison {
                        metric: metric.to_string(),
                        a: a.arm.clone(),
                        b: b.arm.clone(),
                        test,
                    });
                }
            }
        }
    }
    let hypotheses = crate::answer::evaluate(run, catalogue);
    Summary { run: run.clone(), arms, comparisons, hypotheses, not_measurable }
}
