//! The experiment's declared hypotheses (`[[hypotheses]]`): each compares one metric between two arms
//! or arm groups, each read at a stage boundary, in a claimed direction; the summary tests every one
//! on the seeds that measured it ([`ordo_eval::inference`]) and states the verdict.

use crate::summary::RunResults;
use ordo_eval::catalogue::{Catalogue, TRANSFER_PREFIX};
use ordo_eval::inference::{decide, test, Decision, Expect, HypothesisTest, Side, Verdict};
use ordo_eval::metrics::Measure;
use ordo_eval::stats::share_variance;
use serde::{Deserialize, Serialize};
use toml::Value;

/// One arm read at one boundary: `arm` (its final model) or `arm@stage` (after that stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideRef {
    pub arm: String,
    /// The boundary's index in the arm's stages (None: the final model, or the probe's figures).
    pub boundary: Option<usize>,
    /// As the file wrote it.
    pub label: String,
}

/// A declared hypothesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub id: String,
    /// The claim in words.
    pub claim: String,
    pub metric: String,
    /// The two sides; a side of several arms is their per-seed mean.
    pub a: Vec<SideRef>,
    pub b: Vec<SideRef>,
    pub expect: Expect,
}

/// Reads `[[hypotheses]]`; arms and stages are checked here, metrics against the world's catalogue by
/// [`check_metrics`] (it depends on the evaluation's monitors).
pub fn parse_table(root: &toml::Table, arms: &[(String, Vec<String>)], errs: &mut Vec<String>) -> Vec<Hypothesis> {
    let list = match root.get("hypotheses") {
        None => return Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            errs.push("hypotheses: expected [[hypotheses]] entries (an array of tables)".into());
            return Vec::new();
        }
    };
    let mut out: Vec<Hypothesis> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = format!("hypotheses[{i}]");
        let Value::Table(t) = v else {
            errs.push(format!("{path}: expected a table"));
            continue;
        };
        let mut r = crate::spec_reader::Reader::new(t, &path);
        let need = |r: &mut crate::spec_reader::Reader, key: &'static str, errs: &mut Vec<String>| {
            r.string(errs, key).unwrap_or_else(|| {
                errs.push(format!("{path}.{key}: missing (expected a string)"));
                String::new()
            })
        };
        let id = need(&mut r, "id", errs);
        let claim = need(&mut r, "claim", errs);
        let metric = need(&mut r, "metric", errs);
        let expect_text = need(&mut r, "expect", errs);
        let margin = r.raw("margin").map(|m| m.as_float().or(m.as_integer().map(|x| x as f64)));
        let expect = match (expect_text.replace(' ', "").as_str(), margin) {
            ("a>b", None) => Some(Expect::Greater),
            ("a<b", None) => Some(Expect::Less),
            ("a=b", Some(Some(m))) if m > 0.0 && m.is_finite() => Some(Expect::Equal { margin: m }),
            ("a=b", _) => {
                errs.push(format!("{path}.margin: \"a = b\" needs a positive number: |a - b| below it is equal"));
                None
            }
            ("a>b" | "a<b", Some(_)) => {
                errs.push(format!("{path}.margin: only \"a = b\" takes a margin"));
                None
            }
            ("", _) => None,
            (_, _) => {
                errs.push(format!("{path}.expect: expected \"a > b\", \"a < b\" or \"a = b\", found {expect_text:?}"));
                None
            }
        };
        let a = sides(&mut r, "a", &path, arms, errs);
        let b = sides(&mut r, "b", &path, arms, errs);
        r.finish(errs);
        if !id.is_empty() && out.iter().any(|h| h.id == id) {
            errs.push(format!("{path}.id: {id:?} is the id of an earlier hypothesis"));
        }
        if let Some(expect) = expect {
            out.push(Hypothesis { id, claim, metric, a, b, expect });
        }
    }
    out
}

/// One side: an arm reference or a list of them.
fn sides(
    r: &mut crate::spec_reader::Reader,
    key: &'static str,
    path: &str,
    arms: &[(String, Vec<String>)],
    errs: &mut Vec<String>,
) -> Vec<SideRef> {
    let items: Vec<(String, String)> = match r.raw(key) {
        None => {
            errs.push(format!("{path}.{key}: missing (expected an arm, \"arm@stage\", or a list of them)"));
            return Vec::new();
        }
        Some(Value::String(s)) => vec![(format!("{path}.{key}"), s.clone())],
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .filter_map(|(j, v)| match v {
                Value::String(s) => Some((format!("{path}.{key}[{j}]"), s.clone())),
                _ => {
                    errs.push(format!("{path}.{key}[{j}]: expected an arm name or \"arm@stage\""));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errs.push(format!("{path}.{key}: expected an arm, \"arm@stage\", or a non-empty list of them"));
            return Vec::new();
        }
    };
    items.into_iter().filter_map(|(at, label)| side_ref(&at, &label, arms).map_err(|e| errs.push(e)).ok()).collect()
}

/// Resolves `arm`, `arm@stage` or `arm@N` (after the N-th stage, from 1).
fn side_ref(at: &str, label: &str, arms: &[(String, Vec<String>)]) -> Result<SideRef, String> {
    let (arm, stage) = match label.split_once('@') {
        Some((a, s)) => (a, Some(s)),
        None => (label, None),
    };
    let Some((_, stages)) = arms.iter().find(|(a, _)| a == arm) else {
        let names: Vec<&str> = arms.iter().map(|(a, _)| a.as_str()).collect();
        return Err(format!("{at}: unknown arm {arm:?} (arms: {})", names.join(", ")));
    };
    let boundary = match stage {
        None => None,
        Some(s) => {
            if let Ok(n) = s.parse::<usize>() {
                if n == 0 || n > stages.len() {
                    return Err(format!("{at}: arm {arm} has stages 1 to {}, not {n}", stages.len()));
                }
                Some(n - 1)
            } else {
                let hits: Vec<usize> = (0..stages.len()).filter(|&i| stages[i] == s).collect();
                match hits.as_slice() {
                    [i] => Some(*i),
                    [] => return Err(format!("{at}: arm {arm} has no stage {s:?} (its stages: {})", stages.join(", "))),
                    many => {
                        let pos: Vec<String> = many.iter().map(|i| format!("{arm}@{}", i + 1)).collect();
                        return Err(format!(
                            "{at}: stage {s:?} appears {} times in arm {arm}; name the boundary by position: {}",
                            many.len(),
                            pos.join(" or ")
                        ));
                    }
                }
            }
        }
    };
    // The last boundary is the final model.
    let boundary = boundary.filter(|&i| i + 1 < stages.len());
    Ok(SideRef { arm: arm.to_string(), boundary, label: label.to_string() })
}

/// Whether `metric` is a figure of the probe (read from the final model's probe only).
fn probe_figure<'c>(catalogue: &'c Catalogue, metric: &str) -> Option<&'c str> {
    let plain = metric.strip_prefix(TRANSFER_PREFIX).unwrap_or(metric);
    catalogue.probe.uptake.iter().find(|d| d.name == plain).map(|d| d.name)
}

/// Checks each hypothesis's metric against the world's catalogue: known, and a probe figure only
/// where a side is read at its final model.
pub fn check_metrics(hypotheses: &[Hypothesis], catalogue: &Catalogue) -> Vec<String> {
    let mut errs = Vec::new();
    for (i, h) in hypotheses.iter().enumerate() {
        if !catalogue.metrics.iter().any(|m| m.name == h.metric) {
            let mut names: Vec<&str> = catalogue.metrics.iter().map(|m| m.name.as_str()).collect();
            names.sort();
            errs.push(format!("hypotheses[{i}].metric: unknown metric {:?} (the world's: {})", h.metric, names.join(", ")));
        } else if probe_figure(catalogue, &h.metric).is_some() {
            for s in h.a.iter().chain(&h.b).filter(|s| s.boundary.is_some()) {
                errs.push(format!(
                    "hypotheses[{i}]: {} is a figure of the probe, which runs on each arm's final model; {:?} reads an \
                     earlier boundary",
                    h.metric, s.label
                ));
            }
        }
    }
    errs
}

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
    #[serde(flatten)]
    pub test: HypothesisTest,
    #[serde(flatten)]
    pub decision: Decision,
}

/// One seed's figure of one reference: the Measure, or why there is none.
fn figure(run: &RunResults, catalogue: &Catalogue, r: &SideRef, metric: &str, seed: u64) -> Result<Measure, String> {
    let Some(res) = run.results.iter().find(|x| x.arm == r.arm && x.seed == seed) else {
        let why = run
            .failures
            .iter()
            .find(|f| f.arm == r.arm && f.seed == seed)
            .map_or_else(|| "not run".to_string(), |f| format!("failed at stage {}: {}", f.stage, f.reason));
        return Err(format!("{} seed {seed}: {why}", r.arm));
    };
    let m = match probe_figure(catalogue, metric) {
        Some(name) => {
            let probe = if metric.starts_with(TRANSFER_PREFIX) { &res.transfer_probe } else { &res.probe };
            probe.as_ref().and_then(|p| p.metrics.get(name)).copied()
        }
        None => {
            let i = r.boundary.unwrap_or(res.boundaries.len().saturating_sub(1));
            res.boundaries.get(i).and_then(|b| b.metrics.get(metric)).copied()
        }
    };
    match m {
        Some(m) if m.value.is_some() => Ok(m),
        _ => Err(format!("{} seed {seed}: {metric} {}", r.label, catalogue.why_not_measurable(metric))),
    }
}

/// One side's per-seed values over the experiment's seeds: a seed counts when every reference of the
/// side measured it; a group's value is the mean of its references', its sampling variance theirs over k².
fn side(run: &RunResults, catalogue: &Catalogue, h: &Hypothesis, refs: &[SideRef]) -> (Vec<u64>, Side, Vec<String>) {
    let rate = catalogue.metrics.iter().find(|m| m.name == h.metric).is_some_and(|m| m.rate);
    let (mut seeds, mut out, mut excluded) = (Vec::new(), Side::default(), Vec::new());
    for &seed in &run.seeds {
        let figures: Result<Vec<Measure>, String> =
            refs.iter().map(|r| figure(run, catalogue, r, &h.metric, seed)).collect();
        match figures {
            Ok(ms) => {
                let k = ms.len() as f64;
                seeds.push(seed);
                out.values.push(ms.iter().map(|m| m.value.expect("checked")).sum::<f64>() / k);
                if rate {
                    let w: f64 =
                        ms.iter().map(|m| if m.n > 0 { share_variance(m.value.expect("checked"), m.n) } else { 0.0 }).sum();
                    out.within.push(w / (k * k));
                }
            }
            Err(why) => excluded.push(why),
        }
    }
    (seeds, out, excluded)
}

/// Tests every hypothesis of a run, Holm-adjusted across them.
pub fn evaluate(run: &RunResults, catalogue: &Catalogue) -> Vec<HypothesisResult> {
    let prepared: Vec<_> = run
        .hypotheses
        .iter()
        .map(|h| {
            let (seeds_a, a, mut excluded) = side(run, catalogue, h, &h.a);
            let (seeds_b, b, ex_b) = side(run, catalogue, h, &h.b);
            excluded.extend(ex_b);
            let seed = u64::from_str_radix(&crate::plan::sha256_hex(h.id.as_bytes())[..16], 16).expect("hex");
            let t = test(&a, &b, h.expect, seed);
            (h, seeds_a, seeds_b, a, b, excluded, t)
        })
        .collect();
    let decisions = decide(&prepared.iter().map(|p| p.6.clone()).collect::<Vec<_>>());
    prepared
        .into_iter()
        .zip(decisions)
        .map(|((h, seeds_a, seeds_b, a, b, excluded, test), decision)| HypothesisResult {
            hypothesis: h.clone(),
            seeds_a,
            seeds_b,
            values_a: a.values,
            values_b: b.values,
            excluded,
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
        rs.iter().map(|r| format!("{} ({})", r.hypothesis.id, r.hypothesis.claim.trim_end_matches('.'))).collect::<Vec<_>>().join("; ")
    };
    let mut parts = vec![format!(
        "{} hypotheses were tested on up to {seeds} seeds per arm, Holm-adjusted across the file at a family-wise \
         error rate of {}.",
        results.len(),
        ordo_eval::inference::ALPHA
    )];
    for (v, lead) in [
        (Verdict::Supported, "The numbers support"),
        (Verdict::Contradicted, "They contradict"),
    ] {
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
                    r.test.difference.map_or("n/m".into(), |d| format!("{d:+.3}")),
                    r.decision.detectable.map_or("n/m".into(), |d| format!("{d:.3}"))
                )
            })
            .collect();
        parts.push(format!("Inconclusive at this power: {} ({}).", open.iter().map(|r| r.hypothesis.id.as_str()).collect::<Vec<_>>().join(", "), det.join("; ")));
    }
    let few = with(Verdict::NotEnoughSeeds);
    if !few.is_empty() {
        parts.push(format!(
            "Not enough seeds to test {}: a side needs at least 3 measured seeds against 3 for an exact one-sided p of \
             0.05.",
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

fn fmt_num(x: Option<f64>, signed: bool) -> String {
    match x {
        None => "n/m".into(),
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
            (Some(lo), Some(hi)) => format!(" [{lo:+.3}, {hi:+.3}]"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {} | {} | {} ({}) | {} ({}) | {}{ci} | {}{} | {} | {} | {} | **{}** |",
            h.id,
            h.claim,
            h.metric,
            side_label(&h.a),
            side_label(&h.b),
            h.expect.describe(),
            fmt_num(t.mean_a, false),
            t.n_a,
            fmt_num(t.mean_b, false),
            t.n_b,
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
    if failures > 0 {
        let _ = writeln!(o, "\n{failures} arm-seed(s) of this run could not finish: see \"Arm-seeds not measured\".");
    }
    let _ = writeln!(
        o,
        "\nHow these were computed: each side's value per seed is the metric at the named boundary (a side of \
         several arms: their mean on that seed); a hypothesis uses the seeds each side measured. The difference \
         is mean a − mean b with a 95% Welch interval, each side's variance the larger of its seeds' sample \
         variance and their mean prompt-sampling variance (Agresti-Coull; degrees of freedom growing where that \
         floor binds). p is the exact one-sided permutation p in the claimed direction (for `|a − b| < margin`, \
         two one-sided tests against the margins, the larger p); \"p against\" is the opposite one-sided test \
         (for an equivalence, that |a − b| exceeds the margin). Each direction is Holm-adjusted across this \
         file's {} hypotheses, untestable ones included; supported: Holm p ≤ {alpha}; contradicted: Holm p \
         against ≤ {alpha}; not enough seeds: a side has fewer than 2 seeds or the smallest attainable p exceeds \
         {alpha}. Detectable: the true difference found with power {power} at the strictest Holm threshold \
         ({alpha}/{}), from the t approximation with this standard error; n/m where no relabelling of these \
         seeds reaches it.\n",
        results.len(),
        results.len(),
        alpha = ordo_eval::inference::ALPHA,
        power = ordo_eval::inference::POWER,
    );
    o
}
