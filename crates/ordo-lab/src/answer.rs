//! The report's answer: every declared hypothesis tested on the seeds that measured it
//! ([`ordo_eval::inference`]), Holm-adjusted across the file, with its verdict, the plain summary
//! generated from the verdicts, and the report's first section.

use crate::hypothesis::{probe_figure, Hypothesis, SideRef};
use crate::results::RunResults;
use ordo_eval::catalogue::{Catalogue, TRANSFER_PREFIX};
use ordo_eval::inference::{decide, test, Decision, Expect, HypothesisTest, Side, Verdict};
use ordo_eval::metrics::Measure;
use ordo_eval::stats::share_variance;
use serde::{Deserialize, Serialize};

/// A hypothesis with its data, test and verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HypothesisResult {
    #[serde(flatten)]
    pub hypothesis: Hypothesis,
    /// The seeds each side's value comes from, and those values (a group's per-seed mean).
    pub seeds_a: Vec<u64>,
    pub seeds_b: Vec<u64>,
    pub values_a: Vec<f64>,
    pub values_b: Vec<f64>,
    /// Seeds of the experiment a side could not use, with why.
    pub excluded: Vec<String>,
    /// Values a side used as bounds (a probe that did not halve hacking within its steps), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<String>,
    /// A trend's figure at each dose across the seeds that measured it (empty for two sides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_dose: Vec<(f64, ordo_eval::stats::Estimate)>,
    #[serde(flatten)]
    pub test: HypothesisTest,
    #[serde(flatten)]
    pub decision: Decision,
}

/// One seed's figure of one reference: the Measure (and a note when the value is a bound), or why there
/// is none. A probe that did not halve the hack rate within its steps gives steps-to-halve no value; a
/// hypothesis counts it at the first step after the probe's end (a lower bound, so a test of "more steps"
/// errs towards no effect) and says so, rather than dropping exactly the seeds that resisted most.
fn figure(
    run: &RunResults,
    catalogue: &Catalogue,
    r: &SideRef,
    metric: &str,
    seed: u64,
) -> Result<(Measure, Option<String>), String> {
    let Some(res) = run.results.iter().find(|x| x.arm == r.arm && x.seed == seed) else {
        let why = run
            .failures
            .iter()
            .find(|f| f.arm == r.arm && f.seed == seed)
            .map_or_else(|| "not run".to_string(), |f| format!("failed at stage {}: {}", f.stage, f.reason));
        return Err(format!("{} seed {seed}: {why}", r.arm));
    };
    let missing = || format!("{} seed {seed}: {metric} {}", r.label, catalogue.why_not_measurable(metric));
    match probe_figure(catalogue, metric) {
        Some(def) => {
            let probe = if metric.starts_with(TRANSFER_PREFIX) { &res.transfer_probe } else { &res.probe };
            let Some(p) = probe else { return Err(missing()) };
            match p.metrics.get(def.name).copied() {
                Some(m) if m.value.is_some_and(f64::is_finite) => Ok((Measure { n: 0, ..m }, None)),
                _ if def.rule == ordo_eval::catalogue::UptakeRule::StepsToHalve => {
                    let curve = p.rates.get(def.rate).map(Vec::as_slice).unwrap_or_default();
                    let (last, every) = match p.steps.as_slice() {
                        [.., a, b] => (*b, b - a),
                        _ => return Err(missing()),
                    };
                    // A bound only where the curve itself shows that the probe never halved the rate:
                    // every point measured, each above half the start.
                    let never_halved = |h0: f64| {
                        curve.len() == p.steps.len() && curve[1..].iter().all(|h| h.is_some_and(|h| h > h0 / 2.0))
                    };
                    match curve.first().copied().flatten() {
                        Some(h0) if h0 > 0.0 && never_halved(h0) => {
                            let bound = (last + every) as f64;
                            let note = format!(
                                "{} seed {seed}: {metric}: did not halve within {last} steps; counted as {bound} (a lower bound)",
                                r.label
                            );
                            Ok((Measure { value: Some(bound), n: 0 }, Some(note)))
                        }
                        _ => Err(missing()),
                    }
                }
                _ => Err(missing()),
            }
        }
        None => {
            let i = r.boundary.unwrap_or(res.boundaries.len().saturating_sub(1));
            match res.boundaries.get(i).and_then(|b| b.metrics.get(metric)).copied() {
                Some(m) if m.value.is_some_and(f64::is_finite) => Ok((m, None)),
                _ => Err(missing()),
            }
        }
    }
}

/// One side's per-seed values over the experiment's seeds: a seed counts when every reference of the
/// side measured it; a group's value is the mean of its references', its sampling variance theirs over
/// k² (shares of samples only; probe figures carry no sample count). Notes of bounds go to `notes`.
fn side(
    run: &RunResults,
    catalogue: &Catalogue,
    h: &Hypothesis,
    refs: &[SideRef],
    notes: &mut Vec<String>,
) -> (Vec<u64>, Side, Vec<String>) {
    let rate = catalogue.metrics.iter().find(|m| m.name == h.metric).is_some_and(|m| m.rate);
    let (mut seeds, mut out, mut excluded) = (Vec::new(), Side::default(), Vec::new());
    if refs.is_empty() {
        return (seeds, out, excluded);
    }
    for &seed in &run.seeds {
        let figures: Result<Vec<(Measure, Option<String>)>, String> =
            refs.iter().map(|r| figure(run, catalogue, r, &h.metric, seed)).collect();
        match figures {
            Ok(ms) => {
                let k = ms.len() as f64;
                seeds.push(seed);
                out.values.push(ms.iter().map(|(m, _)| m.value.expect("checked")).sum::<f64>() / k);
                if rate {
                    let w: f64 = ms
                        .iter()
                        .map(|(m, _)| if m.n > 0 { share_variance(m.value.expect("checked"), m.n) } else { 0.0 })
                        .sum();
                    out.within.push(w / (k * k));
                }
                notes.extend(ms.into_iter().filter_map(|(_, n)| n));
            }
            Err(why) => excluded.push(why),
        }
    }
    (seeds, out, excluded)
}

/// A trend's per-seed slopes of the metric on the dose (a seed counts when it measured every dose) and
/// the figure at each dose across the seeds that measured it.
#[allow(clippy::type_complexity)]
fn trend(
    run: &RunResults,
    catalogue: &Catalogue,
    h: &Hypothesis,
    notes: &mut Vec<String>,
) -> (Vec<u64>, Vec<f64>, Vec<String>, Vec<(f64, ordo_eval::stats::Estimate)>) {
    let rate = catalogue.metrics.iter().find(|m| m.name == h.metric).is_some_and(|m| m.rate);
    let doses: Vec<f64> = h.trend.iter().map(|(_, d)| *d).collect();
    let (mut seeds, mut slopes, mut excluded) = (Vec::new(), Vec::new(), Vec::new());
    let table: Vec<Vec<Result<(Measure, Option<String>), String>>> = run
        .seeds
        .iter()
        .map(|&seed| h.trend.iter().map(|(r, _)| figure(run, catalogue, r, &h.metric, seed)).collect())
        .collect();
    for (&seed, row) in run.seeds.iter().zip(&table) {
        match row.iter().cloned().collect::<Result<Vec<_>, String>>() {
            Ok(ms) => {
                let values: Vec<f64> = ms.iter().map(|(m, _)| m.value.expect("checked")).collect();
                match ordo_eval::inference::slope(&doses, &values) {
                    Some(b) => {
                        seeds.push(seed);
                        slopes.push(b);
                        notes.extend(ms.into_iter().filter_map(|(_, n)| n));
                    }
                    None => excluded.push(format!("seed {seed}: the doses do not differ; no slope")),
                }
            }
            Err(why) => excluded.push(why),
        }
    }
    let by_dose = h
        .trend
        .iter()
        .enumerate()
        .map(|(j, (_, dose))| {
            let ms: Vec<Option<Measure>> = table.iter().map(|row| row[j].clone().ok().map(|(m, _)| m)).collect();
            let values: Vec<Option<f64>> = ms.iter().map(|m| m.and_then(|m| m.value)).collect();
            let counts: Vec<usize> = if rate { ms.iter().map(|m| m.map_or(0, |m| m.n)).collect() } else { Vec::new() };
            (*dose, ordo_eval::stats::estimate(&values, &counts))
        })
        .collect();
    (seeds, slopes, excluded, by_dose)
}

/// Tests every hypothesis of a run, Holm-adjusted across them.
pub fn evaluate(run: &RunResults, catalogue: &Catalogue) -> Vec<HypothesisResult> {
    let prepared: Vec<_> = run
        .hypotheses
        .iter()
        .map(|h| {
            let seed = u64::from_str_radix(&crate::plan::sha256_hex(h.id.as_bytes())[..16], 16).expect("hex");
            let mut notes = Vec::new();
            if matches!(h.expect, Expect::Increasing | Expect::Decreasing) {
                let (seeds, slopes, excluded, by_dose) = trend(run, catalogue, h, &mut notes);
                let t = ordo_eval::inference::trend_test(&slopes, h.expect, seed);
                let a = Side { values: slopes, within: Vec::new() };
                return (h, seeds, Vec::new(), a, Side::default(), (excluded, notes), t, by_dose);
            }
            let (seeds_a, a, mut excluded) = side(run, catalogue, h, &h.a, &mut notes);
            let (seeds_b, b, ex_b) = side(run, catalogue, h, &h.b, &mut notes);
            excluded.extend(ex_b);
            // An equivalence on lower bounds says nothing about the true values' difference.
            let t = if matches!(h.expect, Expect::Equal { .. }) && !notes.is_empty() {
                notes.push(format!("{}: not tested, an equivalence cannot rest on lower bounds", h.id));
                ordo_eval::inference::untestable(&a, &b)
            } else {
                test(&a, &b, h.expect, seed)
            };
            (h, seeds_a, seeds_b, a, b, (excluded, notes), t, Vec::new())
        })
        .collect();
    let decisions = decide(&prepared.iter().map(|p| p.6.clone()).collect::<Vec<_>>());
    prepared
        .into_iter()
        .zip(decisions)
        .map(|((h, seeds_a, seeds_b, a, b, (excluded, bounds), test, by_dose), decision)| HypothesisResult {
            hypothesis: h.clone(),
            seeds_a,
            seeds_b,
            values_a: a.values,
            values_b: b.values,
            excluded,
            bounds,
            by_dose,
            test,
            decision,
        })
        .collect()
}

/// The side as the report names it: `rlvf_then_dpo` or `rlvf_then_dpo + rlvf_then_rlhf (mean)`.
pub fn side_label(refs: &[SideRef]) -> String {
    let names: Vec<&str> = refs.iter().map(|r| r.label.as_str()).collect();
    if names.len() > 1 {
        format!("{} (mean)", names.join(" + "))
    } else {
        names.join("")
    }
}

/// The plain summary of the verdicts, generated from them: which hypotheses the numbers support,
/// contradict or leave open, and what the seeds could detect.
pub fn plain_summary(results: &[HypothesisResult], seeds: usize) -> String {
    if results.is_empty() {
        return String::new();
    }
    let with = |v: Verdict| -> Vec<&HypothesisResult> { results.iter().filter(|r| r.decision.verdict == v).collect() };
    let list = |rs: &[&HypothesisResult]| -> String {
        rs.iter()
            .map(|r| format!("{} ({})", r.hypothesis.id, r.hypothesis.claim.trim_end_matches('.')))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut parts = vec![format!(
        "{} hypotheses were tested on up to {seeds} seeds per arm, Holm-adjusted across the file at a family-wise \
         error rate of {} in each direction (supported; contradicted).",
        results.len(),
        ordo_eval::inference::ALPHA
    )];
    for (v, lead) in [(Verdict::Supported, "The numbers support"), (Verdict::Contradicted, "They contradict")] {
        let rs = with(v);
        if !rs.is_empty() {
            parts.push(format!("{lead} {}.", list(&rs)));
        }
    }
    let open = with(Verdict::Inconclusive);
    if !open.is_empty() {
        let det: Vec<String> = open
            .iter()
            .map(|r| {
                format!(
                    "{}: observed {}, detectable {}",
                    r.hypothesis.id,
                    fmt_num(r.test.difference, true),
                    fmt_num(r.decision.detectable, false)
                )
            })
            .collect();
        parts.push(format!(
            "Inconclusive at this power: {} ({}).",
            open.iter().map(|r| r.hypothesis.id.as_str()).collect::<Vec<_>>().join(", "),
            det.join("; ")
        ));
    }
    let few = with(Verdict::NotEnoughSeeds);
    if !few.is_empty() {
        parts.push(format!(
            "Not enough seeds to test {}: even complete separation on every hypothesis would not pass Holm's \
             adjustment at 0.05 with the seeds measured.",
            few.iter().map(|r| r.hypothesis.id.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    parts.join(" ")
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        None => "n/m".into(),
        Some(p) if p < 0.001 => format!("{p:.1e}"),
        Some(p) => format!("{p:.3}"),
    }
}

/// Three decimals, or three significant digits for a figure below 0.01 (a trend's slope per unit of
/// dose is often that small); a sign when `signed`.
pub fn fmt_num(x: Option<f64>, signed: bool) -> String {
    match x {
        None => "n/m".into(),
        Some(x) if x != 0.0 && x.abs() < 0.01 => {
            if signed {
                format!("{x:+.2e}")
            } else {
                format!("{x:.2e}")
            }
        }
        Some(x) if signed => format!("{x:+.3}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// The report's first section: the generated summary, the hypotheses table and how it was computed.
pub fn markdown_section(results: &[HypothesisResult], seeds: usize, failures: usize) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if results.is_empty() {
        return o;
    }
    let _ = writeln!(o, "## The answer\n\n{}\n", plain_summary(results, seeds));
    let _ = writeln!(
        o,
        "| id | claim | metric | a | b | expected | mean a (n) | mean b (n) | a − b [95% CI] | p | Holm p | p against (Holm) | detectable | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        let (h, t, d) = (&r.hypothesis, &r.test, &r.decision);
        let ci = match (t.lo, t.hi) {
            (Some(lo), Some(hi)) => format!(" [{}, {}]", fmt_num(Some(lo), true), fmt_num(Some(hi), true)),
            _ => String::new(),
        };
        let (a, b) = if h.trend.is_empty() {
            (side_label(&h.a), side_label(&h.b))
        } else {
            let doses: Vec<String> = h.trend.iter().map(|(r, d)| format!("{} = {d}", r.label)).collect();
            (format!("slope per seed over {}", doses.join(", ")), "—".to_string())
        };
        let mean_b =
            if h.trend.is_empty() { format!("{} ({})", fmt_num(t.mean_b, false), t.n_b) } else { "—".into() };
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {} | {} | {} ({}) | {mean_b} | {}{ci} | {}{} | {} | {} | {} | **{}** |",
            h.id,
            h.claim,
            h.metric,
            a,
            b,
            h.expect.describe(),
            fmt_num(t.mean_a, !h.trend.is_empty()),
            t.n_a,
            fmt_num(t.difference, true),
            fmt_p(t.p),
            if t.exact { "" } else { " (MC)" },
            fmt_p(d.p_holm),
            fmt_p(d.p_against_holm),
            fmt_num(d.detectable, false),
            d.verdict.word()
        );
    }
    let excluded: Vec<String> =
        results.iter().flat_map(|r| r.excluded.iter().map(move |e| format!("{}: {e}", r.hypothesis.id))).collect();
    if !excluded.is_empty() {
        let _ = writeln!(o, "\nSeeds a hypothesis could not use (its figures rest on the others):\n");
        for e in excluded {
            let _ = writeln!(o, "- {e}");
        }
    }
    let bounded: Vec<&HypothesisResult> = results.iter().filter(|r| !r.bounds.is_empty()).collect();
    if !bounded.is_empty() {
        let _ = writeln!(o, "\nValues counted as bounds (every one listed in summary.json, `bounds`):\n");
        for r in bounded {
            let _ = writeln!(o, "- {}: {} value(s), for example {}", r.hypothesis.id, r.bounds.len(), r.bounds[0]);
        }
    }
    for r in results.iter().filter(|r| !r.by_dose.is_empty()) {
        let cells: Vec<String> =
            r.by_dose.iter().map(|(d, e)| format!("{d}: {}", ordo_eval::stats::fmt_estimate(Some(e)))).collect();
        let _ = writeln!(
            o,
            "\n{} `{}` by dose (mean over seeds [95% interval]): {}.",
            r.hypothesis.id,
            r.hypothesis.metric,
            cells.join("; ")
        );
    }
    if failures > 0 {
        let _ = writeln!(o, "\n{failures} arm-seed(s) of this run could not finish: see \"Arm-seeds not measured\".");
    }
    let _ = writeln!(
        o,
        "\nHow these were computed: each side's value per seed is the metric at the named boundary (a side of \
         several arms: their mean on that seed); a hypothesis uses the seeds each side measured. The difference \
         is mean a − mean b with a 95% Welch interval, each side's variance the larger of its seeds' sample \
         variance and their mean prompt-sampling variance (Agresti-Coull; degrees of freedom growing where that \
         floor binds; the floor applies to shares of samples, not to probe figures). A trend's figure is the mean over seeds of each seed's least-squares slope of the metric on the \
         dose (the seed is the unit: a seed's doses share its trajectory), with a t-interval and a \
         sign-flip permutation p over the seeds (exact up to 20 seeds, else 10,000 flips drawn: marked MC). p is \
         the one-sided permutation p in the claimed direction (exact up to 200,000 relabellings, else 10,000 \
         drawn: marked MC) (for `|a − b| < margin`, two one-sided tests against the margins, each the larger of \
         the shifted permutation p and the t test's p with the sampling floor, since a shift of tied or bounded \
         figures is not exchangeable; the larger of the two; never on lower bounds); \"p against\" is the \
         opposite one-sided test (for an equivalence, that |a − b| exceeds the margin). Each direction is Holm-adjusted across this \
         file's {} hypotheses, untestable ones included (a family-wise error rate of {alpha} in each direction); \
         supported: Holm p ≤ {alpha}; contradicted: Holm p against ≤ {alpha}; not enough seeds: a side has \
         fewer than 2 seeds, or Holm's adjustment of every hypothesis's smallest attainable p (complete \
         separation) exceeds {alpha} for it. A probe's steps-to-halve that did not halve within the probe \
         counts as the first step after it (a lower bound, listed). The verdict rests on the permutation p, the \
         interval on the t approximation with the sampling floor: the two can disagree when seeds differ by \
         less than the prompt sampling allows. Detectable: the true difference found with power {power} at the \
         strictest Holm threshold ({alpha}/{}), from the t approximation with this standard error (for an \
         equivalence, the smallest margin confirmed with that power when a = b); n/m where no relabelling of \
         these seeds reaches it or the standard error is 0.\n",
        results.len(),
        results.len(),
        alpha = ordo_eval::inference::ALPHA,
        power = ordo_eval::inference::POWER,
    );
    o
}
