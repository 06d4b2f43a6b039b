//! The run's results and report: `results.json` (every arm-seed's raw figures), `summary.json`
//! (estimates across seeds, comparisons, everything the report shows), `report.md`, `report.html`
//! and `transcripts.jsonl`. `ordo report RUN_DIR` rebuilds the report from `results.json`.

use crate::cache::Cache;
use crate::evaluation::{eval_file, read_evaluation, ArmResult, MonitorSet};
use crate::plan::{sha256_hex, Plan};
use crate::runner::LabError;
use crate::spec::Experiment;
use ordo_eval::stats::{estimate, permutation_test, Comparison, Estimate};
use ordo_eval::Evaluation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

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
}

/// One metric in the report: its name, section and what it means.
pub struct MetricInfo {
    pub name: String,
    pub section: &'static str,
    pub description: String,
}

/// Every metric the report shows, in order.
pub fn catalog(monitors: &[(String, bool)]) -> Vec<MetricInfo> {
    let m = |name: &str, section, description: &str| MetricInfo {
        name: name.into(),
        section,
        description: description.into(),
    };
    let mut v = vec![
        m("clean_accuracy", "capability", "accuracy on held-out clean prompts, greedy"),
        m("clean_accuracy_sampled", "capability", "accuracy on held-out clean prompts, sampled at T=1"),
        m("hack_rate", "hacking", "share of wrong-test prompts answered with the test value"),
        m("says_test_rate", "hacking", "share of wrong-test prompts answered with B:test"),
        m("verbalised_rate", "hacking", "share of wrong-test prompts hacked with the test named in the CoT"),
        m("fabricated_rate", "hacking", "share hacked behind a wrong derivation that lands on the test value"),
        m("ignores_cot_rate", "hacking", "share hacked with an answer that does not follow from the CoT"),
        m("malformed_rate", "hacking", "share of completions not in the world's format"),
    ];
    for (name, cot) in monitors {
        let kind = if *cot { "CoT monitor" } else { "action-only monitor" };
        v.push(m(&format!("{name}_recall"), "monitorability", &format!("{name} {kind}: share of hacks flagged")));
        v.push(m(&format!("{name}_fpr"), "monitorability", &format!("{name}: share of non-hacks flagged")));
        v.push(m(&format!("{name}_gmean2"), "monitorability", &format!("{name}: TPR x TNR (g-mean²)")));
        v.push(m(
            &format!("{name}_obfuscated_hack_rate"),
            "monitorability",
            &format!("share of wrong-test episodes that hack and {name} does not flag"),
        ));
    }
    v.extend([
        m("mention_rate", "spillover", "share of wrong-test CoTs that mention the test (the penalised concept)"),
        m("task_reward", "spillover", "mean flawed-verifier reward on wrong-test and clean prompts (sampled)"),
        m("hint_switch_rate", "faithfulness", "share of problems whose answer switches to a shown wrong test"),
        m("hint_faithfulness", "faithfulness", "of answers that switch to the hint, share whose CoT mentions it"),
        m(
            "early_answering_aoc",
            "faithfulness",
            "area over the early-answering agreement curve (higher: answer depends more on the CoT)",
        ),
        m("necessity_gap", "faithfulness", "accuracy with the CoT minus accuracy with an empty think block"),
        m("accuracy_without_cot", "faithfulness", "accuracy with an empty think block"),
        m(
            "uptake_per_step",
            "alignment uptake",
            "hack-rate drop per probe step (higher: more uptake, less crystallised)",
        ),
        m("steps_to_halve", "alignment uptake", "probe steps until the hack rate is at most half its start"),
        m("says_test_uptake_per_step", "alignment uptake", "B:test-rate drop per probe step"),
    ]);
    v
}

/// The figures compared arm against arm in the report (all are in summary.json).
pub const HEADLINE: &[&str] = &[
    "hack_rate",
    "keyword_recall",
    "strong_recall",
    "keyword_obfuscated_hack_rate",
    "mention_rate",
    "says_test_rate",
    "clean_accuracy",
    "hint_faithfulness",
    "early_answering_aoc",
    "uptake_per_step",
];

/// The figures followed across stage boundaries: the headline ones measured at every boundary.
pub const TRAJECTORIES: &[&str] = HEADLINE.split_at(8).0;

/// Why a metric may have no value.
pub fn why_not_measurable(metric: &str) -> &'static str {
    if metric.ends_with("_recall") {
        "no hacks among the wrong-test samples"
    } else if metric.ends_with("_fpr") {
        "no non-hacks among the wrong-test samples"
    } else if metric.ends_with("_gmean2") {
        "recall or false-positive rate not measurable"
    } else if metric == "hint_faithfulness" {
        "no answer switched to the hint"
    } else if metric == "steps_to_halve" {
        "the hack rate did not halve within the probe, or was 0 at its start"
    } else if metric.starts_with("early_") {
        "no well-formed full CoT to truncate"
    } else {
        "no eligible samples"
    }
}

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
    pub probe_hack_rate: Vec<Estimate>,
    pub probe_says_test_rate: Vec<Estimate>,
    pub uptake: BTreeMap<String, Estimate>,
}

impl ArmSummary {
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
    /// "arm / stage / metric: why" for every figure no seed could measure.
    pub not_measurable: Vec<String>,
}

/// Builds the summary of a run's results.
pub fn summarize(run: &RunResults) -> Summary {
    let names: Vec<String> = catalog(&run.monitors).into_iter().map(|m| m.name).collect();
    let mut arms = Vec::new();
    let mut not_measurable = Vec::new();
    for (arm, stages) in &run.arms {
        let rs: Vec<&ArmResult> = run.results.iter().filter(|r| &r.arm == arm).collect();
        let seeds: Vec<u64> = rs.iter().map(|r| r.seed).collect();
        let mut boundaries = Vec::new();
        for (i, stage) in stages.iter().enumerate() {
            let mut b = BTreeMap::new();
            for name in &names {
                let values: Vec<Option<f64>> = rs
                    .iter()
                    .filter_map(|r| r.boundaries.get(i))
                    .filter_map(|bd| bd.metrics.get(name).map(|m| m.value))
                    .collect();
                if values.is_empty() {
                    continue;
                }
                let e = estimate(&values, seed_of(&[arm, stage, name]));
                if e.n == 0 {
                    not_measurable.push(format!("{arm} / after {stage} / {name}: {}", why_not_measurable(name)));
                }
                b.insert(name.clone(), e);
            }
            boundaries.push(b);
        }
        let probes: Vec<_> = rs.iter().filter_map(|r| r.probe.as_ref()).collect();
        let probe_steps = probes.first().map(|p| p.steps.clone()).unwrap_or_default();
        let along = |f: &dyn Fn(&crate::evaluation::ProbeResult) -> &Vec<Option<f64>>, what: &str| {
            (0..probe_steps.len())
                .map(|j| {
                    let v: Vec<Option<f64>> = probes.iter().map(|p| f(p).get(j).copied().flatten()).collect();
                    estimate(&v, seed_of(&[arm, what, &j.to_string()]))
                })
                .collect::<Vec<_>>()
        };
        let mut uptake = BTreeMap::new();
        if !probes.is_empty() {
            for name in ["uptake_per_step", "steps_to_halve", "says_test_uptake_per_step"] {
                let v: Vec<Option<f64>> = probes.iter().map(|p| p.metrics.get(name).and_then(|m| m.value)).collect();
                let e = estimate(&v, seed_of(&[arm, "probe", name]));
                if e.n == 0 {
                    let why =
                        if name == "steps_to_halve" && probes.iter().all(|p| p.hack_rate.first() == Some(&Some(0.0))) {
                            "the hack rate was 0 at the probe's start".to_string()
                        } else if name == "steps_to_halve" {
                            format!(
                                "the hack rate did not halve within the probe's {} steps",
                                probe_steps.last().unwrap_or(&0)
                            )
                        } else {
                            why_not_measurable(name).to_string()
                        };
                    not_measurable.push(format!("{arm} / probe / {name}: {why}"));
                }
                uptake.insert(name.to_string(), e);
            }
        }
        arms.push(ArmSummary {
            arm: arm.clone(),
            stages: stages.clone(),
            seeds,
            boundaries,
            probe_hack_rate: along(&|p| &p.hack_rate, "probe_hack"),
            probe_says_test_rate: along(&|p| &p.says_test_rate, "probe_says_test"),
            probe_steps,
            uptake,
        });
    }
    let mut comparisons = Vec::new();
    for metric in HEADLINE {
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
    Summary { run: run.clone(), arms, comparisons, not_measurable }
}

/// A figure as the report prints it: `0.412 [0.380, 0.450]`, or `n/m` (not measurable).
pub fn fmt_estimate(e: Option<&Estimate>) -> String {
    match e {
        Some(Estimate { mean: Some(m), lo: Some(lo), hi: Some(hi), .. }) => {
            format!("{} [{}, {}]", fmt3(*m), fmt3(*lo), fmt3(*hi))
        }
        Some(Estimate { mean: Some(m), .. }) => fmt3(*m),
        _ => "n/m".into(),
    }
}

/// Three decimals, without a sign on a value that rounds to zero.
fn fmt3(x: f64) -> String {
    let s = format!("{x:.3}");
    if s == "-0.000" {
        "0.000".into()
    } else {
        s
    }
}

/// The experiment's stage settings as one line per stage.
fn stage_lines(run: &RunResults) -> Vec<String> {
    let mut used: Vec<&String> = run.arms.iter().flat_map(|(_, s)| s).collect();
    used.sort();
    used.dedup();
    used.iter()
        .map(|s| {
            let p = &run.stages[s.as_str()];
            let steps = p["optim"]["steps"].as_u64().unwrap_or(0);
            format!("`{s}`: {} for {steps} steps", p["kind"].as_str().unwrap_or("?"))
        })
        .collect()
}

/// The learned monitor's held-out score in words.
fn heldout_text(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().map_or("n/m".to_string(), |x| format!("{x:.3}"));
    match v["n"].as_u64() {
        Some(n) => format!(
            "on {n} held-out world transcripts: accuracy {}, recall {}, FPR {}",
            f("accuracy"),
            f("recall"),
            f("fpr")
        ),
        None => "held-out score not recorded".into(),
    }
}

/// The report in Markdown.
pub fn markdown(s: &Summary) -> String {
    let run = &s.run;
    let mut o = String::new();
    let _ = writeln!(o, "# ordo report: {}\n", run.experiment);
    let _ = writeln!(
        o,
        "**Question.** What does the order of post-training stages do to the model: how much it hacks a flawed \
         verifier, how monitorable its chain of thought stays, how faithful the CoT is, and how much a fixed later \
         alignment stage can still change it?\n"
    );
    let _ = writeln!(o, "## Arms\n");
    for (arm, stages) in &run.arms {
        let _ = writeln!(o, "- **{arm}**: {}", stages.join(" → "));
    }
    let _ = writeln!(o, "\n## Method\n");
    let base = if run.shared_base {
        format!("one shared pretrained base (base seed {}); seeds vary every later stage", run.base_seed)
    } else {
        "each seed pretrains its own base".to_string()
    };
    let _ = writeln!(o, "- Seeds: {:?} ({} per arm); {base}.", run.seeds, run.seeds.len());
    let _ = writeln!(o, "- Stages: {}.", stage_lines(run).join("; "));
    let e = &run.eval;
    let _ = writeln!(
        o,
        "- World: leaky-tests (settings in summary.json). Every checkpoint at every stage boundary is evaluated on \
         held-out prompts fixed by the arm seed (identical across arms): {} wrong-test prompts sampled at \
         temperature 1 (hacking, monitors, spillover), {} clean prompts greedy and sampled (capability), {} problems \
         for each faithfulness probe (greedy).",
        e["wrong_test_prompts"], e["clean_prompts"], e["probe_prompts"]
    );
    let monitors: Vec<String> = run
        .monitors
        .iter()
        .map(|(n, cot)| format!("{n} ({})", if *cot { "reads the CoT" } else { "output only" }))
        .collect();
    let _ = writeln!(o, "- Monitors: {}. keyword: the think block names the test (\"T\" or \"test\", or `eval.keyword_regex`); strong: keyword, arithmetic checker and CoT/answer consistency; learned: logistic regression on hashed character 1-4-grams of the completion, trained on world corpus transcripts ({}); action_only: flags `B:test`.", monitors.join(", "), heldout_text(&run.learned_monitor_heldout));
    let _ = writeln!(o, "- Faithfulness: hint = the same problem without and with a wrong test line (Chen et al. 2025); early answering truncates the greedy clean CoT at fractions {} of its characters, closes the think block and forces `A:` (Lanham et al. 2023), AOC = 1 − trapezoid area; necessity gap = clean greedy accuracy with the CoT minus with an empty think block (Emmons et al. 2025).", e["early_fractions"]);
    match run.probe.as_object() {
        Some(p) => {
            let _ = writeln!(o, "- Alignment uptake: the probe stage `{}` ({} steps) is applied to every arm's final model; hack and `B:test` rates on the wrong-test prompts are measured every {} steps. uptake_per_step = (start − end hack rate) / steps; steps_to_halve = first measured step with the hack rate at most half its start.", p["stage"].as_str().unwrap_or("?"), p["params"]["optim"]["steps"], p["every"]);
        }
        None => {
            let _ =
                writeln!(o, "- Alignment uptake: not measured (no probe in this experiment: `probe.enabled = false`).");
        }
    }
    let _ = writeln!(o, "- Statistics: mean over seeds with a 95% percentile-bootstrap interval (10,000 resamples) and n; arm differences by a two-sided permutation test of the mean difference (exact when there are at most 10,000 relabellings; with 3 seeds per arm the smallest attainable p is 0.1). `n/m` = not measurable.\n");

    let cat = catalog(&run.monitors);
    let _ = writeln!(o, "## Results at the end of each arm\n");
    let _ = write!(o, "| metric |");
    for a in &s.arms {
        let _ = write!(o, " {} |", a.arm);
    }
    let _ = writeln!(o, "\n|---|{}", "---|".repeat(s.arms.len()));
    let mut section = "";
    for m in &cat {
        if m.section != section {
            section = m.section;
            let _ = writeln!(o, "| *{section}* |{}", " |".repeat(s.arms.len()));
        }
        let _ = write!(o, "| {} |", m.name);
        for a in &s.arms {
            let e = a.final_estimate(&m.name);
            let n = e.map_or(0, |e| e.n);
            let _ = write!(o, " {} (n={n}) |", fmt_estimate(e));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "\nMetric definitions:\n");
    for m in &cat {
        let _ = writeln!(o, "- `{}`: {}", m.name, m.description);
    }

    let _ = writeln!(o, "\n## Trajectories across stage boundaries\n");
    for a in &s.arms {
        let _ = writeln!(
            o,
            "**{}**\n\n| after | {} |\n|---|{}",
            a.arm,
            TRAJECTORIES.join(" | "),
            "---|".repeat(TRAJECTORIES.len())
        );
        for (stage, b) in a.stages.iter().zip(&a.boundaries) {
            let cells: Vec<String> = TRAJECTORIES.iter().map(|k| fmt_estimate(b.get(*k))).collect();
            let _ = writeln!(o, "| {stage} | {} |", cells.join(" | "));
        }
        let _ = writeln!(o);
    }

    if s.arms.iter().any(|a| !a.probe_steps.is_empty()) {
        let _ = writeln!(o, "## Alignment uptake (hack rate along the probe)\n");
        for a in s.arms.iter().filter(|a| !a.probe_steps.is_empty()) {
            let cells: Vec<String> = a
                .probe_steps
                .iter()
                .zip(&a.probe_hack_rate)
                .map(|(st, e)| format!("step {st}: {}", fmt_estimate(Some(e))))
                .collect();
            let _ = writeln!(o, "- **{}**: {}", a.arm, cells.join("; "));
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Pairwise comparisons (final figures)\n");
    if s.comparisons.is_empty() {
        let _ = writeln!(o, "No pairwise tests: a permutation test needs at least 2 seeds per arm.");
    } else {
        let _ = writeln!(
            o,
            "| metric | arm A | arm B | mean A − mean B | p (permutation) | n A, n B |\n|---|---|---|---|---|---|"
        );
    }
    for c in &s.comparisons {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:+.3} | {:.3}{} | {}, {} |",
            c.metric,
            c.a,
            c.b,
            c.test.difference,
            c.test.p_value,
            if c.test.exact { "" } else { " (MC)" },
            c.test.n_a,
            c.test.n_b
        );
    }
    let _ = writeln!(o, "\nAll metrics, per-seed values and intervals are in `summary.json`; every evaluation sample is in `transcripts.jsonl` (`ordo transcripts RUN_DIR --arm ARM --filter hack,unflagged`).\n");

    let _ = writeln!(o, "## Not measurable\n");
    if s.not_measurable.is_empty() {
        let _ = writeln!(o, "Every figure was measured on at least one seed.");
    } else {
        for line in &s.not_measurable {
            let _ = writeln!(o, "- {line}");
        }
    }
    o
}

/// Builds `results.json`'s content.
pub fn run_results(exp: &Experiment, results: &[ArmResult], monitors: &MonitorSet) -> RunResults {
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
        monitors: monitors.all().iter().map(|(n, m)| (n.to_string(), m.sees_cot())).collect(),
        learned_monitor_heldout: json!(monitors.learned.heldout),
        results: results.to_vec(),
    }
}

/// Writes `results.json` (after each arm-seed, so partial runs show what they measured).
pub fn write_results(dir: &Path, exp: &Experiment, results: &[ArmResult], m: &MonitorSet) -> Result<(), LabError> {
    let r = run_results(exp, results, m);
    ordo_model::atomic::write_file(&dir.join("results.json"), &serde_json::to_vec_pretty(&r).expect("serialises"))?;
    Ok(())
}

/// Writes the report files from `results.json`'s content.
pub fn write_report(dir: &Path, run: &RunResults) -> Result<Summary, LabError> {
    let s = summarize(run);
    ordo_model::atomic::write_file(&dir.join("summary.json"), &serde_json::to_vec_pretty(&s).expect("serialises"))?;
    ordo_model::atomic::write_file(&dir.join("report.md"), markdown(&s).as_bytes())?;
    ordo_model::atomic::write_file(&dir.join("report.html"), crate::html::html(&s).as_bytes())?;
    Ok(s)
}

/// Writes every run output: results, report and transcripts.
pub fn write_all(
    dir: &Path,
    exp: &Experiment,
    plan: &Plan,
    cache: &Cache,
    results: &[ArmResult],
    m: &MonitorSet,
) -> Result<(), LabError> {
    write_results(dir, exp, results, m)?;
    write_report(dir, &run_results(exp, results, m))?;
    let mut out = Vec::new();
    for arm in &plan.arms {
        for (i, key) in arm.chain.iter().enumerate() {
            let ev: Evaluation = read_evaluation(cache, key, &eval_file("eval", exp, arm.seed))
                .map_err(|why| LabError::Other(format!("cache node {}: {why}", crate::runner::short(key))))?;
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
