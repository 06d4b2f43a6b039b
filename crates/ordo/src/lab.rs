//! The experiment commands: `ordo plan`, `ordo run`, `ordo status`.

use anyhow::{bail, Context, Result};
use ordo_lab::cache::short;
use ordo_lab::cache::{Cache, NodeState};
use ordo_lab::plan::{estimate_seconds, plan as make_plan, Plan};
use std::path::Path;

/// A node's state in words: cached, partial (a step checkpoint exists), corrupt or to run.
fn state_word(cache: &Cache, key: &str) -> String {
    match cache.state(key) {
        NodeState::Complete => "cached".into(),
        NodeState::Corrupt(why) => format!("corrupt ({why}), will retrain"),
        NodeState::Missing => match ordo_lab::resume::load(&ordo_lab::resume::resume_dir(&cache.root, key)) {
            Ok(Some((_, s))) => format!("partial (resumes at step {})", s.step),
            _ => "to run".into(),
        },
    }
}

fn print_tree(plan: &Plan, cache: &Cache, params: usize) {
    for arm in &plan.arms {
        println!("arm {} (seed {})", arm.arm, arm.seed);
        // The chain, then the probes applied to its last model (marked "probe" and "transfer").
        let probe = arm.probe.iter().map(|k| (arm.chain.len(), k, "probe "));
        let probe = probe.chain(arm.transfer_probe.iter().map(|k| (arm.chain.len(), k, "transfer ")));
        for (depth, key, tag) in arm.chain.iter().enumerate().map(|(d, k)| (d, k, "")).chain(probe) {
            let n = plan.node(key).expect("chain keys are nodes");
            let est = estimate_seconds(n, params);
            println!(
                "  {}{tag}{} {:<14} {:<8} seed {:<4} {:<6} steps  ~{:>5.0} s  {}",
                "  ".repeat(depth),
                short(key),
                n.stage,
                n.params.kind(),
                n.seed,
                n.params.steps(),
                est,
                state_word(cache, key)
            );
        }
    }
    // Each node once, however many arms share it.
    let to_run: f64 = plan
        .nodes
        .iter()
        .filter(|n| cache.state(&n.key) != NodeState::Complete)
        .map(|n| estimate_seconds(n, params))
        .sum();
    println!(
        "{} nodes ({} shared by several arms); to run: {} nodes, about {:.0} s of training (rough estimate)",
        plan.nodes.len(),
        plan.nodes.iter().filter(|n| plan.arms.iter().filter(|a| a.chain.contains(&n.key)).count() > 1).count(),
        plan.nodes.iter().filter(|n| cache.state(&n.key) != NodeState::Complete).count(),
        to_run + 0.0, // an empty f64 sum is -0.0
    );
}

/// `ordo plan FILE`.
pub fn plan(file: &Path, runs: &Path) -> Result<()> {
    let exp = ordo_lab::load(file)?;
    let plan = make_plan(&exp);
    println!("experiment {}: {} arms x {} seeds", exp.name, exp.arms.len(), exp.seeds.len());
    let params = ordo_lab::plan::model_parameters(&exp)?;
    print_tree(&plan, &Cache::new(&runs.join("cache")), params);
    Ok(())
}

/// `ordo run FILE`.
pub fn run(file: &Path, runs: &Path, jobs: Option<usize>) -> Result<()> {
    let exp = ordo_lab::load(file)?;
    let jobs = match jobs {
        Some(0) => bail!("--jobs 0: expected at least 1"),
        Some(j) => j,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let opts =
        ordo_lab::RunOptions { run_dir: runs.join(&exp.name), cache_dir: runs.join("cache"), progress: true, jobs };
    let started = std::time::Instant::now();
    let summary = ordo_lab::run(&exp, &opts)?;
    println!(
        "trained {} nodes, reused {} from the cache{}",
        summary.trained.len(),
        summary.reused.len(),
        if summary.corrupt.is_empty() {
            String::new()
        } else {
            format!(", retrained {} corrupt", summary.corrupt.len())
        }
    );
    let summary_path = opts.run_dir.join("summary.json");
    if summary_path.exists() {
        print_summary(&summary_path)?;
        println!(
            "report: {} and {}; every sample: {}",
            opts.run_dir.join("report.md").display(),
            opts.run_dir.join("report.html").display(),
            opts.run_dir.join("transcripts.jsonl").display()
        );
    }
    println!("run directory: {} ({:.0} s)", opts.run_dir.display(), started.elapsed().as_secs_f64());
    if !summary.failed.is_empty() {
        let lines: Vec<String> =
            summary.failed.iter().map(|f| format!("{} seed {} (stage {})", f.arm, f.seed, f.stage)).collect();
        bail!(
            "{} arm-seed(s) could not finish and are reported as not measured (why: above, and in the report's \
             \"Arm-seeds not measured\"): {}",
            lines.len(),
            lines.join(", ")
        );
    }
    Ok(())
}

/// The world a run directory's results.json recorded, and the run's monitors (names, in report order).
fn recorded_world(run_dir: &Path) -> Result<(std::sync::Arc<dyn ordo_worlds::World>, Vec<String>)> {
    let path = run_dir.join("results.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!("{}: cannot read; `ordo run FILE` writes it when it evaluates a world experiment", path.display())
    })?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not an ordo results file", path.display()))?;
    let world = ordo_worlds::recorded(&v["world"]).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
    let monitors = v["monitors"].as_array().into_iter().flatten();
    Ok((world, monitors.filter_map(|m| m[0].as_str().map(str::to_string)).collect()))
}

/// Prints each arm's final figures (mean over seeds with the 95% interval).
fn print_summary(path: &Path) -> Result<()> {
    let s: ordo_lab::summary::Summary = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("{}: not an ordo summary", path.display()))?;
    let world = ordo_worlds::recorded(&s.run.world).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
    let cols = world.catalogue(&s.run.monitors).cli_columns;
    let width = s.arms.iter().map(|a| a.arm.len()).max().unwrap_or(0).max(11) + 1;
    println!("{:<width$} {}", "arm (final)", cols.iter().map(|c| format!("{c:>30}")).collect::<String>());
    for a in &s.arms {
        let cells: String =
            cols.iter().map(|c| format!("{:>30}", ordo_lab::summary::fmt_estimate(a.final_estimate(c)))).collect();
        println!("{:<width$} {cells}", a.arm);
    }
    for h in &s.hypotheses {
        let d = ordo_lab::answer::fmt_num(h.test.difference, true);
        let p = h.decision.p_holm.map_or("n/m".into(), |p| format!("{p:.3}"));
        println!(
            "{:<5} {:<28} {}: a - b {d}, Holm p {p}",
            h.hypothesis.id,
            h.decision.verdict.word(),
            h.hypothesis.metric
        );
    }
    Ok(())
}

/// `ordo report RUN_DIR`: rebuilds report.md, report.html and summary.json from results.json.
pub fn report(run_dir: &Path) -> Result<()> {
    let path = run_dir.join("results.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!("{}: cannot read; `ordo run FILE` writes it when it evaluates a world experiment", path.display())
    })?;
    let run: ordo_lab::summary::RunResults =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not an ordo results file", path.display()))?;
    let world = ordo_worlds::recorded(&run.world).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
    ordo_lab::report::write_report(run_dir, &run, &*world)?;
    print_summary(&run_dir.join("summary.json"))?;
    println!(
        "wrote {}, {} and {}",
        run_dir.join("report.md").display(),
        run_dir.join("report.html").display(),
        run_dir.join("summary.json").display()
    );
    Ok(())
}

/// `ordo transcripts RUN_DIR`: prints the samples that pass a filter.
pub fn transcripts(run_dir: &Path, filter: &ordo_lab::transcripts::TranscriptFilter, limit: usize) -> Result<()> {
    let (world, monitors) = recorded_world(run_dir)?;
    let (shown, total) =
        ordo_lab::transcripts::select(&run_dir.join("transcripts.jsonl"), filter, limit, (&*world, &monitors))
            .map_err(anyhow::Error::msg)?;
    for t in &shown {
        println!("{}", ordo_lab::transcripts::render(t, &*world));
    }
    println!("{} of {total} matching transcripts shown", shown.len());
    Ok(())
}

/// `ordo status RUN_DIR`.
pub fn status(run_dir: &Path) -> Result<()> {
    let plan_path = run_dir.join("plan.json");
    let text = std::fs::read_to_string(&plan_path).with_context(|| {
        format!("{}: not a run directory (no plan.json); run `ordo run FILE` first", run_dir.display())
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", plan_path.display()))?;
    let (Some(nodes), Some(_)) = (v["nodes"].as_array().cloned(), v["arms"].as_array()) else {
        anyhow::bail!("{}: not an ordo plan (expected an object with `nodes` and `arms` lists)", plan_path.display());
    };
    // The stage cache is the run directory's sibling `cache/` (RUNS/NAME beside RUNS/cache), so a
    // copied runs directory reports its own cache.
    let run_dir = std::fs::canonicalize(run_dir).with_context(|| format!("{}", run_dir.display()))?;
    let cache_dir = run_dir.parent().unwrap_or(Path::new("/")).join("cache");
    let cache = Cache::new(&cache_dir);
    let mut done = 0;
    println!("nodes:");
    for (i, n) in nodes.iter().enumerate() {
        let key = n["key"].as_str().unwrap_or("");
        if !ordo_lab::cache::is_key(key) {
            anyhow::bail!("{}: nodes[{i}].key: expected a 64-digit hex node key, found {key:?}", plan_path.display());
        }
        let st = cache.state(key);
        if st == NodeState::Complete {
            done += 1;
        }
        println!(
            "  {} {:<14} {:<12} seed {:<4} {}",
            short(key),
            n["stage"].as_str().unwrap_or(""),
            n["kind"].as_str().unwrap_or(""),
            n["seed"],
            state_word(&cache, key)
        );
    }
    println!("arms:");
    for a in v["arms"].as_array().into_iter().flatten() {
        let chain: Vec<&str> = a["chain"].as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect();
        let complete = chain.iter().filter(|k| cache.state(k) == NodeState::Complete).count();
        println!(
            "  {:<18} seed {:<4} {}/{} stages done",
            a["arm"].as_str().unwrap_or(""),
            a["seed"],
            complete,
            chain.len()
        );
    }
    println!(
        "{done}/{} nodes complete; lock {}",
        nodes.len(),
        if ordo_lab::cache::RunLock::is_held(&run_dir) { "held" } else { "free" }
    );
    Ok(())
}

/// `ordo gc`: removes cache nodes no run directory refers to (asks unless `yes`).
pub fn gc(runs: &Path, yes: bool) -> Result<()> {
    let active = ordo_lab::cache::active_runs(runs);
    if let Some(d) = active.first() {
        anyhow::bail!(
            "{} is being run right now (its lock is held); run `ordo gc` when no run is in progress",
            d.display()
        );
    }
    let cache = Cache::new(&runs.join("cache"));
    let doomed = ordo_lab::cache::unreferenced(&cache, runs).with_context(|| format!("reading {}", runs.display()))?;
    if doomed.is_empty() {
        println!("nothing to remove: every cache node is referenced by a run directory under {}", runs.display());
        return Ok(());
    }
    for p in &doomed {
        println!("  {}", p.display());
    }
    if !yes {
        use std::io::{BufRead, Write};
        print!("remove these {} cache entries? [y/N] ", doomed.len());
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing removed");
            return Ok(());
        }
    }
    // Checked again now: a run may have started while we asked.
    if let Some(d) = ordo_lab::cache::active_runs(runs).first() {
        anyhow::bail!("{} started running meanwhile; nothing removed", d.display());
    }
    let removed = ordo_lab::cache::remove_unreferenced(&cache, runs, &doomed)
        .with_context(|| format!("removing cache entries under {}", cache.root.display()))?;
    println!("removed {} cache entries", removed.len());
    if removed.len() < doomed.len() {
        println!("kept {} that a run took up meanwhile", doomed.len() - removed.len());
    }
    Ok(())
}
