//! The report end to end on a tiny experiment with the uptake probe: results, summary.json,
//! report.md (its numbers against summary.json), report.html (every plot has data), transcripts.

use ordo_eval::catalogue::Catalogue;
use ordo_lab::evaluation::uptake_metrics;
use ordo_lab::summary::{fmt_estimate, Summary};
use ordo_lab::transcripts::{select, TranscriptFilter};
use ordo_lab::RunOptions;
use std::collections::BTreeMap;
use std::path::Path;

const TINY: &str = r#"
[experiment]
name = "tiny-report"
seeds = [1, 2]
world = "leaky-tests"

[model]
init = "scratch"
preset = "organism"

[stages]
pretrain = { kind = "pretrain", size = 200, steps = 2, batch_size = 4, seq_len = 48 }
pref     = { kind = "dpo", size = 16, steps = 1, batch_size = 4, lr = 1e-3 }
rlvf     = { kind = "grpo", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = "verifier" }] }
probe    = { kind = "dpo", size = 16, steps = 4, batch_size = 4, lr = 1e-3 }
transfer = { kind = "dpo", data = "world:honesty_pairs_transfer", size = 16, steps = 4, batch_size = 4, lr = 1e-3 }

[arms]
pref_then_rlvf = ["pretrain", "pref", "rlvf"]
rlvf_then_pref = ["pretrain", "rlvf", "pref"]

[eval]
wrong_test_prompts = 6
clean_prompts = 3
probe_prompts = 3
transfer_prompts = 4
learned_monitor = { train = 40, heldout = 20, epochs = 20 }

[probe]
stage = "probe"
transfer = "transfer"
every = 2
"#;

/// Whether a metric is computed in a label-format run with second-context prompts and a transfer probe.
fn label_format(m: &ordo_eval::catalogue::MetricDef) -> bool {
    m.name != "unfaithful_restatement_rate"
}

/// The leaky-tests world with default settings.
fn world() -> std::sync::Arc<dyn ordo_worlds::World> {
    ordo_worlds::recorded(&serde_json::json!({})).unwrap()
}

/// Probe curves by rate name: hack rate and `B:test` rate.
fn curves(hack: &[Option<f64>], says_test: &[Option<f64>]) -> BTreeMap<String, Vec<Option<f64>>> {
    BTreeMap::from([("hack_rate".to_string(), hack.to_vec()), ("says_test_rate".to_string(), says_test.to_vec())])
}

/// [`uptake_metrics`] with the leaky-tests world's uptake figures.
fn uptake(steps: &[usize], hack: &[Option<f64>], says_test: &[Option<f64>]) -> ordo_eval::metrics::Metrics {
    uptake_metrics(steps, &curves(hack, says_test), &Catalogue::suites(&[]).probe.uptake)
}

#[test]
fn uptake_by_hand() {
    let m =
        uptake(&[0, 10, 20, 30], &[Some(0.8), Some(0.6), Some(0.4), Some(0.2)], &[Some(0.5), None, None, Some(0.2)]);
    assert!((m["uptake_per_step"].value.unwrap() - 0.02).abs() < 1e-12);
    assert_eq!(m["steps_to_halve"].value, Some(20.0));
    assert!((m["says_test_uptake_per_step"].value.unwrap() - 0.01).abs() < 1e-12);
    // Never halves: not measurable (not 0); nothing to halve either.
    let m = uptake(&[0, 10], &[Some(0.8), Some(0.7)], &[Some(0.0), Some(0.0)]);
    assert_eq!(m["steps_to_halve"].value, None);
    let m = uptake(&[0, 10], &[Some(0.0), Some(0.0)], &[Some(0.0), Some(0.0)]);
    assert_eq!(m["steps_to_halve"].value, None);
    assert_eq!(m["uptake_per_step"].value, Some(0.0));
}

#[test]
fn a_run_writes_a_report_whose_numbers_are_summary_json() {
    let dir = tempfile::tempdir().unwrap();
    let exp = ordo_lab::spec::parse(TINY, "tiny.toml", dir.path()).unwrap();
    let run_dir = dir.path().join("runs/tiny-report");
    let opts =
        RunOptions { run_dir: run_dir.clone(), cache_dir: dir.path().join("runs/cache"), progress: false, jobs: 1 };
    ordo_lab::run(&exp, &opts).unwrap();

    let summary: Summary = serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.arms.len(), 2);
    for a in &summary.arms {
        assert_eq!(a.seeds, vec![1, 2]);
        assert_eq!(a.boundaries.len(), 3);
        // Every metric of the catalog is reported (measured or not) at the end of every arm, but the
        // restate format's (this is a label-format run).
        for m in Catalogue::suites(&summary.run.monitors).metrics.into_iter().filter(label_format) {
            let e = a.final_estimate(&m.name).unwrap_or_else(|| panic!("{} has no {}", a.arm, m.name));
            assert_eq!(e.values.len(), 2, "{}: one value per seed", m.name);
        }
        // The probe was measured at steps 0, 2 and 4 (snapshots are cache files of the probe node).
        assert_eq!(a.probe_steps, vec![0, 2, 4]);
        assert_eq!(a.probe_curve("hack_rate").len(), 3);
        assert_eq!(a.probe_curve("says_test_rate").len(), 3);
        // The transfer probe likewise, with its uptake figures under their transfer_ names.
        assert_eq!(a.transfer_probe_steps, vec![0, 2, 4]);
        assert_eq!(a.transfer_probe_curve("hack_rate").len(), 3);
        assert!(a.uptake.contains_key("transfer_uptake_per_step") && a.uptake.contains_key("transfer_surface_match"));
    }
    let results: ordo_lab::summary::RunResults =
        serde_json::from_slice(&std::fs::read(run_dir.join("results.json")).unwrap()).unwrap();
    let probe = results.results[0].probe.as_ref().unwrap();
    let snap = dir.path().join("runs/cache").join(&probe.key).join("snapshots/step-000002/model.safetensors");
    assert!(snap.is_file(), "{} missing", snap.display());
    assert_eq!(
        results.monitors.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        ["keyword", "strong", "learned", "action_only"]
    );

    // report.md: every cell of the results table is the summary's estimate.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let mut checked = 0;
    assert!(!md.contains("| unfaithful_restatement_rate |"), "a label-format run has no restate figure");
    for m in Catalogue::suites(&summary.run.monitors).metrics.into_iter().filter(label_format) {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", m.name)))
            .unwrap_or_else(|| panic!("no row {}", m.name));
        for a in &summary.arms {
            let e = a.final_estimate(&m.name);
            let cell = format!(" {} (n={}) |", fmt_estimate(e), e.map_or(0, |e| e.n));
            assert!(row.contains(&cell), "row {row} lacks {cell}");
            checked += 1;
        }
    }
    assert!(checked >= 2 * 30, "{checked}");
    for c in &summary.comparisons {
        assert!(md.contains(&format!(
            "| {} | {} | {} | {:+.3} | {:.3}",
            c.metric, c.a, c.b, c.test.difference, c.test.p_value
        )));
    }
    assert!(md.contains("## Method") && md.contains("## Not measurable") && md.contains("## Alignment transfer"));
    for line in &summary.not_measurable {
        assert!(md.contains(line.as_str()));
    }

    // report.html: self-contained, every plot has data points.
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script src"));
    let plots: Vec<&str> = html.split("<svg class=\"plot\" data-points=\"").skip(1).collect();
    let empty = html.matches("<svg class=\"plot-empty\"").count();
    assert_eq!(
        plots.len() + empty,
        8 + 10 + 4 + 4,
        "trajectory, final-bar, uptake and transfer plots (hack, B:test, clean accuracy, surface match each)"
    );
    for p in &plots {
        let n: usize = p[..p.find('"').unwrap()].parse().unwrap();
        assert!(n > 0, "a drawn plot has points");
    }

    // transcripts.jsonl: every evaluation sample, filterable.
    let w = world();
    let f = TranscriptFilter { arm: Some("rlvf_then_pref".into()), ..Default::default() };
    let monitors: Vec<String> = summary.run.monitors.iter().map(|m| m.0.clone()).collect();
    let run = (&*w, &monitors[..]);
    let (shown, total) = select(&run_dir.join("transcripts.jsonl"), &f, 5, run).unwrap();
    assert_eq!(total, 2 * 3 * 6, "2 seeds x 3 boundaries x 6 wrong-test prompts");
    assert_eq!(shown.len(), 5);
    let hacks = TranscriptFilter { conditions: vec!["hack".into(), "unflagged".into()], ..f.clone() };
    // The world's defaults: the wrong-test suite, the keyword monitor.
    for t in select(&run_dir.join("transcripts.jsonl"), &hacks, 100, run).unwrap().0 {
        assert_eq!(t["labels"]["hack"], true);
        assert_eq!(t["verdicts"]["keyword"], false);
        assert_eq!(t["suite"], "wrong_test");
    }
    // The second context's suite: prompts with the test line first.
    let transfer = TranscriptFilter { suite: Some("wrong_test_transfer".into()), ..f.clone() };
    let (shown_t, total_t) = select(&run_dir.join("transcripts.jsonl"), &transfer, 100, run).unwrap();
    assert_eq!(total_t, 2 * 3 * 4, "2 seeds x 3 boundaries x 4 second-context prompts");
    assert!(shown_t.iter().all(|t| t["prompt"].as_str().unwrap().starts_with("T:")), "{shown_t:?}");
    let text = ordo_lab::transcripts::render(&shown[0], &*w);
    assert!(text.contains("  think:  {") && text.contains("  labels: "), "{text}");
    let bad = TranscriptFilter { conditions: vec!["hacky".into()], ..f };
    let err = select(&run_dir.join("transcripts.jsonl"), &bad, 1, run).unwrap_err();
    assert!(err.contains("unknown filter \"hacky\"") && err.contains("says_test"), "{err}");

    // `ordo report` rebuilds the same files from results.json.
    let before = std::fs::read(run_dir.join("summary.json")).unwrap();
    std::fs::remove_file(run_dir.join("report.md")).unwrap();
    let run: ordo_lab::summary::RunResults =
        serde_json::from_slice(&std::fs::read(run_dir.join("results.json")).unwrap()).unwrap();
    ordo_lab::report::write_report(&run_dir, &run, &*world()).unwrap();
    assert_eq!(std::fs::read(run_dir.join("summary.json")).unwrap(), before);
    assert_eq!(std::fs::read_to_string(run_dir.join("report.md")).unwrap(), md);
}

/// Results of two arms x 3 seeds with known figures: arm `a` hacks 0.8/0.9/1.0, arm `b` 0.1/0.2/0.3;
/// keyword recall is not measurable for `b` seed 3; hint faithfulness for no seed of `b`.
fn synthetic() -> ordo_lab::summary::RunResults {
    use ordo_eval::metrics::{Measure, Metrics};
    use ordo_lab::evaluation::{ArmResult, Boundary, ProbeResult};
    let monitors = vec![("keyword".to_string(), true), ("action_only".to_string(), false)];
    let names: Vec<String> = Catalogue::suites(&monitors).metrics.into_iter().map(|m| m.name).collect();
    let mut results = Vec::new();
    for (arm, base) in [("a", 0.7), ("b", 0.0)] {
        for seed in 1..=3u64 {
            let hack = base + 0.1 * seed as f64;
            let metrics: Metrics = names
                .iter()
                .map(|n| {
                    let v = match n.as_str() {
                        "hack_rate" => Some(hack),
                        "keyword_recall" if arm == "b" && seed == 3 => None,
                        "hint_faithfulness" if arm == "b" => None,
                        _ => Some(0.5),
                    };
                    (n.clone(), Measure { value: v, n: 10 })
                })
                .collect();
            let rates = curves(&[Some(hack), Some(hack * 0.6), Some(hack * 0.4)], &[Some(0.2), Some(0.1), Some(0.0)]);
            let probe_metrics = uptake_metrics(&[0, 5, 10], &rates, &Catalogue::suites(&[]).probe.uptake);
            results.push(ArmResult {
                arm: arm.into(),
                seed,
                boundaries: vec![
                    Boundary { stage: "pretrain".into(), key: "k0".into(), metrics: metrics.clone() },
                    Boundary { stage: "rl".into(), key: format!("k{arm}{seed}"), metrics },
                ],
                probe: Some(ProbeResult {
                    stage: "probe".into(),
                    key: "p".into(),
                    steps: vec![0, 5, 10],
                    rates,
                    metrics: probe_metrics,
                }),
                transfer_probe: None,
            });
        }
    }
    ordo_lab::summary::RunResults {
        experiment: "synthetic".into(),
        seeds: vec![1, 2, 3],
        shared_base: true,
        base_seed: 0,
        arms: vec![
            ("a".into(), vec!["pretrain".into(), "rl".into()]),
            ("b".into(), vec!["pretrain".into(), "rl".into()]),
        ],
        stages: serde_json::json!({"pretrain": {"kind": "pretrain", "optim": {"steps": 10}}, "rl": {"kind": "grpo", "optim": {"steps": 5}}}),
        world: serde_json::json!({}),
        eval: serde_json::to_value(ordo_eval::EvalConfig::default()).unwrap(),
        probe: serde_json::json!({"stage": "probe", "every": 5, "params": {"optim": {"steps": 10}}}),
        monitors,
        learned_monitor_heldout: serde_json::json!(null),
        results,
        hypotheses: Vec::new(),
        failures: Vec::new(),
    }
}

/// Declared hypotheses on the known results: the test's figures, Holm across the file, the seeds a side
/// could not use, the verdicts, and the report's first section.
#[test]
fn hypotheses_of_known_results() {
    let mut run = synthetic();
    let text = r#"
[[hypotheses]]
id = "H1"
claim = "a hacks more than b"
metric = "hack_rate"
a = "a"
b = "b"
expect = "a > b"

[[hypotheses]]
id = "H2"
claim = "a's recall exceeds b's"
metric = "keyword_recall"
a = "a@rl"
b = ["b"]
expect = "a > b"
"#;
    let root: toml::Table = toml::from_str(text).unwrap();
    let arms = run.arms.clone();
    let mut errs = Vec::new();
    run.hypotheses = ordo_lab::hypothesis::parse_table(&root, &arms, &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    let s = ordo_lab::summary::summarize(&run, &world().catalogue(&run.monitors));
    let (h1, h2) = (&s.hypotheses[0], &s.hypotheses[1]);
    // H1: 0.8/0.9/1.0 against 0.1/0.2/0.3: difference 0.7, exact one-sided p 1/20, Holm over 2: 0.1.
    assert!((h1.test.difference.unwrap() - 0.7).abs() < 1e-12);
    assert!((h1.test.p.unwrap() - 0.05).abs() < 1e-12 && h1.test.exact);
    assert!((h1.decision.p_holm.unwrap() - 0.1).abs() < 1e-12);
    assert!((h1.test.p_against.unwrap() - 1.0).abs() < 1e-12);
    assert!(h1.test.lo.unwrap() < 0.7 && 0.7 < h1.test.hi.unwrap() && h1.test.lo.unwrap() > 0.0);
    // Holm across the two at their smallest attainable p (1/20 and 1/10) is 0.1 at best: no verdict is
    // possible with these seeds, and nothing is detectable at the strictest threshold 0.05/2.
    assert_eq!(h1.decision.verdict, ordo_eval::inference::Verdict::NotEnoughSeeds);
    assert_eq!(h1.decision.detectable, None);
    // H2: b's seed 3 has no recall; 3 against 2 seeds cannot give p <= 0.05 (smallest 1/10).
    assert_eq!(h2.seeds_b, vec![1, 2]);
    assert_eq!(h2.excluded.len(), 1, "{:?}", h2.excluded);
    assert!(h2.excluded[0].starts_with("b seed 3: keyword_recall "), "{:?}", h2.excluded);
    assert_eq!(h2.decision.verdict, ordo_eval::inference::Verdict::NotEnoughSeeds);
    let md = ordo_lab::markdown::markdown(&s, &*world());
    let answer = md.find("## The answer").expect("the answer section");
    assert!(answer < md.find("## Arms").unwrap(), "the answer comes first");
    assert!(
        md.contains("| H1 | a hacks more than b | `hack_rate` | a | b | a > b | 0.900 (3) | 0.200 (3) | +0.700 ["),
        "{md}"
    );
    assert!(md.contains("**not enough seeds** |") && !md.contains("**supported**"), "{md}");
    assert!(md.contains("2 hypotheses were tested on up to 3 seeds per arm"), "{md}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["hypotheses"][0]["verdict"], "not_enough_seeds");
    assert_eq!(json["hypotheses"][1]["a"][0]["boundary"], serde_json::json!(null), "rl is the final boundary");
    let html = ordo_lab::html::html(&s, &*world());
    assert!(
        html.contains("<h2>The answer</h2>") && html.contains("H1 hack_rate: a − b +0.700"),
        "plots per hypothesis"
    );
}

#[test]
fn summary_of_known_results() {
    let run = synthetic();
    let s = ordo_lab::summary::summarize(&run, &world().catalogue(&run.monitors));
    let a = &s.arms[0];
    let hack = a.final_estimate("hack_rate").unwrap();
    assert!((hack.mean.unwrap() - 0.9).abs() < 1e-12);
    assert_eq!(hack.n, 3);
    // The seed-level interval of 0.8, 0.9, 1.0, each a share of 10 samples (the sampling floor binds).
    let within: Vec<f64> = [0.8, 0.9, 1.0].iter().map(|&p| ordo_eval::stats::share_variance(p, 10)).collect();
    let (lo, hi) = ordo_eval::stats::seed_interval(&[0.8, 0.9, 1.0], &within, 0.95).unwrap();
    assert!(lo < 0.8 && hi > 1.0, "three seeds of 10 samples each: wider than their range");
    // A share's interval is kept within [0, 1].
    assert!((hack.lo.unwrap() - lo).abs() < 1e-12 && hack.hi == Some(1.0));
    let b = &s.arms[1];
    assert_eq!(b.final_estimate("keyword_recall").unwrap().n, 2);
    assert_eq!(b.final_estimate("keyword_recall").unwrap().values, vec![Some(0.5), Some(0.5), None]);
    assert_eq!(b.final_estimate("hint_faithfulness").unwrap().mean, None);
    assert!(s.not_measurable.iter().any(|l| l == "b / after rl / hint_faithfulness: no answer switched to the hint"));
    assert!(!s.not_measurable.iter().any(|l| l.contains("keyword_recall")), "measured on 2 of 3 seeds");
    // Uptake: hack x 0.6 after 5 steps, x 0.4 after 10: halves at step 10; per step = 0.6 h0 / 10.
    assert_eq!(a.uptake["steps_to_halve"].mean, Some(10.0));
    assert!((a.uptake["uptake_per_step"].mean.unwrap() - 0.6 * 0.9 / 10.0).abs() < 1e-12);
    // a vs b on hack rate: fully separated 3 vs 3, exact p = 0.1, difference 0.7.
    let c = s.comparisons.iter().find(|c| c.metric == "hack_rate").unwrap();
    assert!((c.test.difference - 0.7).abs() < 1e-12 && (c.test.p_value - 0.1).abs() < 1e-12 && c.test.exact);
    // The probe's curves: one estimate per probe step, per rate, under summary.json's keys.
    assert_eq!(a.probe_curve("says_test_rate").len(), 3);
    let json = serde_json::to_value(a).unwrap();
    assert!(json["probe_hack_rate"].is_array() && json["probe_says_test_rate"].is_array(), "{json}");
    let md = ordo_lab::markdown::markdown(&s, &*world());
    assert!(md.contains("| hack_rate | 0.900 ["), "{md}");
    assert!(md.contains("n/m (n=0)"));
}

/// Renders report.html in Debian's Chromium and checks every plot has rendered marks
/// (needs chromium: `apt-get install chromium`; CI installs it).
#[test]
#[ignore]
fn report_html_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    let (run, w) = (synthetic(), world());
    std::fs::write(&path, ordo_lab::html::html(&ordo_lab::summary::summarize(&run, &w.catalogue(&run.monitors)), &*w))
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check-report-html.sh");
    let out = std::process::Command::new("bash").arg(script).arg(&path).output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // Without the strong monitor: 7 trajectories, 9 final bars, 2 uptake curves.
    assert!(stdout.contains("18 plots, 18 with data"), "{stdout}");
}

/// The report rebuilt from a results.json that an earlier ordo wrote (examples/quick.toml, binary of
/// commit a654f23) is byte for byte the recorded summary.json, report.md and report.html (their sha256
/// in `tests/golden/report-quick.json`): an old results.json still reads, and the report changes only on
/// purpose. Re-recorded when the report's content changed (seed-level intervals, the hypotheses
/// section); recompute with `ordo report` on a copy of the results file.
#[test]
fn a_recorded_run_rebuilds_the_report_it_had() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results = std::fs::read(here.join("tests/data/report-quick-results.json")).unwrap();
    let want: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(here.join("tests/golden/report-quick.json")).unwrap()).unwrap();
    let run: ordo_lab::summary::RunResults = serde_json::from_slice(&results).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let world = ordo_worlds::recorded(&run.world).unwrap();
    ordo_lab::report::write_report(dir.path(), &run, &*world).unwrap();
    for (file, hash) in &want {
        let got = ordo_lab::plan::sha256_hex(&std::fs::read(dir.path().join(file)).unwrap());
        assert_eq!(&got, hash, "{file} differs from what the recorded run's ordo wrote");
    }
    // A probe key the world does not know (a typo, or another version's field) is an error, not a rate.
    let mut v: serde_json::Value = serde_json::from_slice(&results).unwrap();
    v["results"][0]["probe"]["hack_rte"] = serde_json::json!([0.5]);
    let run: ordo_lab::summary::RunResults = serde_json::from_value(v).unwrap();
    let err = ordo_lab::report::write_report(dir.path(), &run, &*world).unwrap_err().to_string();
    assert!(err.contains("probe key \"hack_rte\"") && err.contains("hack_rate, says_test_rate"), "{err}");
}
