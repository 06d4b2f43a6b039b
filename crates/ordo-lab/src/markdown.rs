//! `report.md`: the report in Markdown, from the summary.

use crate::summary::{fmt_estimate, RunResults, Summary};
use ordo_worlds::World;
use std::fmt::Write as _;

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

/// The report in Markdown, in the run's world.
pub fn markdown(s: &Summary, world: &dyn World) -> String {
    let run = &s.run;
    let mut o = String::new();
    let _ = writeln!(o, "# ordo report: {}\n", run.experiment);
    let _ = writeln!(o, "**Question.** {}\n", world.report_question());
    o.push_str(&crate::answer::markdown_section(&s.hypotheses, run.seeds.len(), run.failures.len()));
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
    let mut probe_rates: Vec<String> =
        run.results.iter().filter_map(|r| r.probe.as_ref()).flat_map(|p| p.rates.keys().cloned()).collect();
    probe_rates.sort();
    probe_rates.dedup();
    for line in world.method_lines(&run.eval, &run.probe, &run.monitors, &run.learned_monitor_heldout, &probe_rates) {
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o, "- Statistics: the seed is the unit. Mean over seeds with a 95% t-interval on the seed values, whose variance is at least the mean prompt-sampling variance of a share (Agresti-Coull, so that seeds agreeing to the last sample do not give a zero-width interval; the degrees of freedom grow where that floor binds), and n; arm differences by a two-sided permutation test of the mean difference (exact up to 200,000 relabellings: with 3 seeds per arm the smallest attainable p is 0.1, with 5 it is 0.0079). `n/m` = not measurable.\n");

    let cat = world.catalogue(&run.monitors);
    let _ = writeln!(o, "## Results at the end of each arm\n");
    let _ = write!(o, "| metric |");
    for a in &s.arms {
        let _ = write!(o, " {} |", a.arm);
    }
    let _ = writeln!(o, "\n|---|{}", "---|".repeat(s.arms.len()));
    let mut section = "";
    for m in s.reported(&cat) {
        if m.family != section {
            section = m.family;
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
    for m in s.reported(&cat) {
        let _ = writeln!(o, "- `{}`: {}", m.name, m.definition);
    }

    let _ = writeln!(o, "\n## Trajectories across stage boundaries\n");
    for a in &s.arms {
        let _ = writeln!(
            o,
            "**{}**\n\n| after | {} |\n|---|{}",
            a.arm,
            cat.trajectories.join(" | "),
            "---|".repeat(cat.trajectories.len())
        );
        for (stage, b) in a.stages.iter().zip(&a.boundaries) {
            let cells: Vec<String> = cat.trajectories.iter().map(|k| fmt_estimate(b.get(*k))).collect();
            let _ = writeln!(o, "| {stage} | {} |", cells.join(" | "));
        }
        let _ = writeln!(o);
    }

    if let Some(rate) = cat.probe.rates.first() {
        let heading = format!("Alignment uptake ({} along the probe)", rate.label);
        probe_curves(&mut o, s, &heading, rate.metric, crate::summary::UPTAKE_PROBE);
        let heading = format!(
            "Alignment transfer ({} in the RLVF context along the transfer probe, trained in the second context)",
            rate.label
        );
        probe_curves(&mut o, s, &heading, rate.metric, crate::summary::TRANSFER_PROBE);
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
    let label = world.transcript_labels().first().copied().unwrap_or("LABEL");
    let _ = writeln!(o, "\nAll metrics, per-seed values and intervals are in `summary.json`; every evaluation sample is in `transcripts.jsonl` (`ordo transcripts RUN_DIR --arm ARM --filter {label},unflagged`).\n");

    if !run.failures.is_empty() {
        let _ = writeln!(o, "## Arm-seeds not measured\n");
        for f in &run.failures {
            let _ = writeln!(o, "- {} seed {}: stage `{}` failed: {}", f.arm, f.seed, f.stage, f.reason);
        }
        let _ = writeln!(o);
    }
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

/// A probe's curve of `metric` per arm that ran it, under `heading` (nothing when no arm did).
fn probe_curves(
    o: &mut String,
    s: &Summary,
    heading: &str,
    metric: &str,
    (steps_of, curve_of): crate::summary::ProbeView,
) {
    if s.arms.iter().all(|a| steps_of(a).is_empty()) {
        return;
    }
    let _ = writeln!(o, "## {heading}\n");
    for a in s.arms.iter().filter(|a| !steps_of(a).is_empty()) {
        let cells: Vec<String> = steps_of(a)
            .iter()
            .zip(curve_of(a, metric))
            .map(|(st, e)| format!("step {st}: {}", fmt_estimate(Some(e))))
            .collect();
        let _ = writeln!(o, "- **{}**: {}", a.arm, cells.join("; "));
    }
    let _ = writeln!(o);
}
