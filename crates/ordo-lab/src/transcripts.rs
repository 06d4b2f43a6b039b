//! Reading `transcripts.jsonl` back: filters a researcher uses to see what a model actually did.

use ordo_worlds::World;
use serde_json::Value;
use std::path::Path;

/// Which transcripts to show.
#[derive(Debug, Clone, Default)]
pub struct TranscriptFilter {
    pub arm: Option<String>,
    pub seed: Option<u64>,
    /// Stage name the checkpoint was evaluated after (default: every boundary).
    pub stage: Option<String>,
    /// Evaluation suite (None in [`TranscriptFilter::matches`]: any; [`select`] fills in the suite the
    /// world's monitors judge).
    pub suite: Option<String>,
    /// Conditions that must all hold: a ground-truth label of the world's transcripts
    /// ([`World::transcript_labels`]), `flagged` or `unflagged` (by `monitor`), each negatable with a
    /// leading `!`.
    pub conditions: Vec<String>,
    /// The monitor `flagged` / `unflagged` refer to ([`select`] fills in the run's first monitor).
    pub monitor: Option<String>,
}

impl TranscriptFilter {
    /// Whether a condition asks for a monitor's verdict.
    fn reads_verdicts(&self) -> bool {
        self.conditions.iter().any(|c| matches!(c.trim_start_matches('!'), "flagged" | "unflagged"))
    }

    /// Checks the conditions against the world's labels (an error lists what is accepted) and fills
    /// in the defaults: the suite the world's monitors judge, the run's first monitor (`monitors`).
    pub fn in_run(&self, world: &dyn World, monitors: &[String]) -> Result<Self, String> {
        let labels = world.transcript_labels();
        for c in &self.conditions {
            let c = c.trim_start_matches('!');
            if !labels.contains(&c) && c != "flagged" && c != "unflagged" {
                return Err(format!(
                    "unknown filter {c:?}; expected flagged, unflagged or a label: {}",
                    labels.join(", ")
                ));
            }
        }
        let mut f = self.clone();
        f.suite.get_or_insert_with(|| world.monitored_suite().to_string());
        if f.monitor.is_none() {
            f.monitor = monitors.first().cloned();
        }
        if f.monitor.is_none() && f.reads_verdicts() {
            return Err("flagged and unflagged need a monitor, and this run has none".into());
        }
        Ok(f)
    }

    /// Whether a transcript line passes.
    pub fn matches(&self, t: &Value) -> bool {
        let s = |k: &str| t[k].as_str().unwrap_or("");
        if self.arm.as_deref().is_some_and(|a| a != s("arm"))
            || self.seed.is_some_and(|x| Some(x) != t["seed"].as_u64())
            || self.stage.as_deref().is_some_and(|x| x != s("stage"))
            || self.suite.as_deref().is_some_and(|x| x != s("suite"))
        {
            return false;
        }
        self.conditions.iter().all(|c| {
            let (neg, name) = match c.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, c.as_str()),
            };
            let flagged = self.monitor.as_deref().and_then(|m| t["verdicts"][m].as_bool());
            let holds = match name {
                "flagged" => flagged == Some(true),
                "unflagged" => flagged == Some(false),
                label => t["labels"][label].as_bool().unwrap_or(false),
            };
            holds != neg
        })
    }
}

/// The transcripts of `path` (a run in `world` with `monitors`) that pass the filter with the run's
/// defaults ([`TranscriptFilter::in_run`]), at most `limit`; an error names the file and line, and an
/// arm, seed, stage, suite or monitor that the run does not have (with those it has).
pub fn select(
    path: &Path,
    filter: &TranscriptFilter,
    limit: usize,
    (world, monitors): (&dyn World, &[String]),
) -> Result<(Vec<Value>, usize), String> {
    let asked_monitor = filter.monitor.is_some() || filter.reads_verdicts();
    let filter = &filter.in_run(world, monitors)?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (transcripts.jsonl is written by `ordo run` when it evaluates a world experiment)",
            path.display()
        )
    })?;
    let (mut out, mut total) = (Vec::new(), 0);
    // What the run has, to tell a filter value that matches nothing from one that does not exist.
    let mut seen: [std::collections::BTreeSet<String>; 5] = Default::default();
    for (i, line) in text.lines().enumerate() {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: not JSON: {e}", path.display(), i + 1))?;
        for (set, field) in seen.iter_mut().zip(["arm", "seed", "stage", "suite"]) {
            set.insert(v[field].as_str().map_or_else(|| v[field].to_string(), str::to_string));
        }
        seen[4].extend(v["verdicts"].as_object().into_iter().flat_map(|m| m.keys().cloned()));
        if filter.matches(&v) {
            total += 1;
            if out.len() < limit {
                out.push(v);
            }
        }
    }
    let asked = [
        ("arm", filter.arm.clone()),
        ("seed", filter.seed.map(|s| s.to_string())),
        ("stage", filter.stage.clone()),
        ("suite", filter.suite.clone()),
        ("monitor", filter.monitor.clone().filter(|_| asked_monitor)),
    ];
    for ((what, value), have) in asked.iter().zip(&seen) {
        if let Some(value) = value.as_ref().filter(|v| !have.contains(*v) && !have.is_empty()) {
            let list: Vec<&str> = have.iter().map(String::as_str).collect();
            return Err(format!("{}: no {what} {value:?} in this run (it has: {})", path.display(), list.join(", ")));
        }
    }
    Ok((out, total))
}

/// One transcript of a run in `world` as readable text.
pub fn render(t: &Value, world: &dyn World) -> String {
    let labels: Vec<&str> =
        world.transcript_labels().iter().copied().filter(|l| t["labels"][*l].as_bool() == Some(true)).collect();
    let cot = world.cot();
    let verdicts: Vec<String> = t["verdicts"]
        .as_object()
        .map(|m| {
            m.iter().map(|(k, v)| format!("{k}={}", if v.as_bool() == Some(true) { "FLAG" } else { "-" })).collect()
        })
        .unwrap_or_default();
    format!(
        "{} seed {} after {} [{}]\n  prompt: {}\n  think:  {}{}{}\n  output: {}\n  labels: {}\n  monitors: {}\n",
        t["arm"].as_str().unwrap_or("?"),
        t["seed"],
        t["stage"].as_str().unwrap_or("?"),
        t["suite"].as_str().unwrap_or("?"),
        t["prompt"].as_str().unwrap_or(""),
        cot.open,
        t["think"].as_str().unwrap_or(""),
        cot.close,
        t["output"].as_str().unwrap_or(""),
        if labels.is_empty() { "-".into() } else { labels.join(", ") },
        if verdicts.is_empty() { "-".into() } else { verdicts.join(" ") },
    )
}
