//! The quickstart, reduced: `examples/quick.toml` with every stage cut to a few steps runs end to end
//! through the `ordo` binary, and its report and summary.json hold every arm and every metric.

use std::process::Command;

/// examples/quick.toml with tiny stages, no readiness gate and small evaluations.
fn reduced_quickstart() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quick.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    t["experiment"]["name"] = "quick-ci".into();
    for (name, stage) in t["stages"].as_table_mut().unwrap().iter_mut() {
        let s = stage.as_table_mut().unwrap();
        s.insert("steps".into(), (if name == "pretrain" { 4 } else { 2 }).into());
        s.insert("batch_size".into(), 4.into());
        match s["kind"].as_str().unwrap() {
            "grpo" => {
                s.insert("group_size".into(), 2.into());
                s.insert("max_new_tokens".into(), 8.into());
                s.insert("gate".into(), false.into());
                s.remove("gate_min_clean_accuracy");
                s.remove("gate_max_silent_hack_rate");
                if let Some(sets) = s.get_mut("prompts").and_then(|p| p.as_array_mut()) {
                    for set in sets {
                        let set = set.as_table_mut().unwrap();
                        set.insert("size".into(), 16.into());
                        // A piecewise schedule's later points move to the stage's last step (1 of 0-1).
                        if let Some(points) = set
                            .get_mut("proportion")
                            .and_then(|p| p.as_table_mut())
                            .and_then(|p| p.get_mut("steps"))
                            .and_then(|p| p.as_array_mut())
                        {
                            for point in points.iter_mut().skip(1) {
                                point.as_array_mut().unwrap()[0] = 1.into();
                            }
                        }
                    }
                } else {
                    s.insert("size".into(), 16.into());
                }
            }
            _ => {
                s.insert("size".into(), 64.into());
            }
        }
    }
    let eval = t["eval"].as_table_mut().unwrap();
    eval.insert("wrong_test_prompts".into(), 4.into());
    eval.insert("clean_prompts".into(), 2.into());
    eval.insert("probe_prompts".into(), 2.into());
    eval.insert(
        "learned_monitor".into(),
        toml::Value::Table(toml::from_str("train = 40\nheldout = 20\nepochs = 10").unwrap()),
    );
    t["probe"]["every"] = 1.into();
    toml::to_string(&t).unwrap()
}

#[test]
fn reduced_quickstart_reports_every_arm_and_metric() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quick.toml"), reduced_quickstart()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .current_dir(dir.path())
        .args(["run", "quick.toml", "--runs", "runs"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.path().join("runs/quick-ci");
    let arms = [
        "rlvf",
        "rlvf_heavy",
        "rlvf_then_dpo",
        "rlvf_then_rlhf",
        "pref_then_rlvf",
        "sandwich",
        "mixed",
        "mixed_late",
        "cold_start_then_rlvf",
        "cot_pref_then_rlvf",
        "cot_pressure",
        "output_pressure",
    ];
    let summary: ordo_lab::summary::Summary =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.arms.iter().map(|a| a.arm.as_str()).collect::<Vec<_>>(), arms);
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    for a in &summary.arms {
        assert!(md.contains(&format!("- **{}**: ", a.arm)) && html.contains(&format!(">{}</th>", a.arm)));
        for m in ordo_eval::catalogue::Catalogue::suites(&summary.run.monitors).metrics {
            // A metric of a setting this run does not have is left out, not n/m.
            if m.only_when.is_some() {
                assert!(!md.contains(&format!("| {} |", m.name)), "report.md lists {} ({:?})", m.name, m.only_when);
                continue;
            }
            assert!(a.final_estimate(&m.name).is_some(), "{}: no {}", a.arm, m.name);
            assert!(md.contains(&format!("| {} |", m.name)), "report.md lacks {}", m.name);
        }
        assert_eq!(a.probe_steps, vec![0, 1, 2], "{}: the uptake probe ran", a.arm);
    }
    // One seed: every hypothesis is declared, computed, and reads "not enough seeds".
    assert_eq!(summary.hypotheses.len(), 12);
    for h in &summary.hypotheses {
        assert_eq!(h.decision.verdict, ordo_eval::inference::Verdict::NotEnoughSeeds, "{}", h.hypothesis.id);
    }
    assert!(md.starts_with("# ordo report: quick-ci") && md.contains("## The answer"), "{md}");
    assert!(md.contains("Not enough seeds to test H1, H2, H3"), "{md}");
    // The terminal shows each arm's final figures.
    for a in arms {
        assert!(stdout.contains(a), "{stdout}");
    }
}
