//! Regression tests of the reliability defects a hostile user found: each runs the `ordo` binary on
//! the bad input and checks the clear error, the non-zero exit and that nothing was lost.

use std::path::Path;

/// The experiment tests' shared helpers (a diverging checkpoint among them).
#[path = "../../ordo-lab/tests/common/mod.rs"]
mod common;
use std::process::Command;

fn ordo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn corpus(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["world", "corpus", "--out", out.to_str().unwrap(), "--size", "corpus=20"];
    args.extend_from_slice(&["--size", "preferences=5", "--size", "rl_prompts=5", "--size", "eval=5"]);
    args.extend_from_slice(extra);
    ordo(&args)
}

#[test]
fn world_corpus_never_replaces_a_directory_or_file_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory of the user's files is left as it was.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "keep me").unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let (code, _, err) = corpus(&theirs, extra);
        assert_ne!(code, 0, "replaced a foreign directory with {extra:?}");
        assert!(err.contains("ordo will not replace it"), "{err}");
        assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "keep me");
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1);
    }
    // A file is left as it was, and no hidden copy appears beside it.
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "mine").unwrap();
    let (code, _, err) = corpus(&file, &["--force"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // An earlier ordo output is replaced only with --force.
    let ours = tmp.path().join("ours");
    assert_eq!(corpus(&ours, &[]).0, 0);
    let (code, _, err) = corpus(&ours, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = corpus(&ours, &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(ours.join("corpus.jsonl").is_file());
}

#[test]
fn a_diverging_run_exits_non_zero_naming_the_step_once_and_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    common::overflowing_model(&model);
    let exp = tmp.path().join("exp.toml");
    std::fs::write(
        &exp,
        r#"
[experiment]
name = "diverge"
seeds = [1]
world = "leaky-tests"
[model]
init = "hf:model"
[stages]
sft = { kind = "sft", size = 16, steps = 2, batch_size = 4 }
[arms]
a = ["sft"]
[probe]
enabled = false
"#,
    )
    .unwrap();
    let runs = tmp.path().join("runs");
    let (code, _, err) = ordo(&["run", exp.to_str().unwrap(), "--runs", runs.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert_eq!(err.matches("step 1: the loss is NaN").count(), 1, "{err}");
    assert!(err.contains("stage `sft` (seed 1): step 1: the loss is NaN (not finite)"), "{err}");
    assert!(err.contains("error: 1 arm-seed(s) could not finish") && err.contains("a seed 1 (stage sft)"), "{err}");
    let committed: Vec<_> = std::fs::read_dir(runs.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(committed.is_empty(), "{committed:?}");
}

#[test]
fn generate_refuses_more_new_tokens_than_positions_at_once() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/hf/llama-tiny");
    let started = std::time::Instant::now();
    let (code, _, err) = ordo(&[
        "generate",
        "--model",
        fixture.to_str().unwrap(),
        "--ids",
        "1,2,3",
        "--max-new-tokens",
        "100000000",
        "--format",
        "ids",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("exceeds the model's"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn transcripts_name_an_arm_stage_suite_seed_or_monitor_the_run_does_not_have() {
    let tmp = tempfile::tempdir().unwrap();
    let line = r#"{"arm":"a","seed":1,"stage":"rlvf","suite":"wrong_test","verdicts":{"keyword":true},"labels":{"hack":true}}"#;
    std::fs::write(tmp.path().join("transcripts.jsonl"), format!("{line}\n")).unwrap();
    std::fs::write(tmp.path().join("results.json"), "{\"world\": {}}").unwrap();
    let dir = tmp.path().to_str().unwrap();
    let (code, out, err) = ordo(&["transcripts", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 of 1 matching"), "{out}");
    for (flag, value, want) in [
        ("--arm", "zzz", "no arm \"zzz\" in this run (it has: a)"),
        ("--seed", "7", "no seed \"7\" in this run (it has: 1)"),
        ("--stage", "pref", "no stage \"pref\""),
        ("--suite", "clean", "no suite \"clean\""),
        ("--monitor", "oracle", "no monitor \"oracle\" in this run (it has: keyword)"),
    ] {
        let (code, _, err) = ordo(&["transcripts", dir, flag, value]);
        assert_ne!(code, 0, "{flag} {value}");
        assert!(err.contains(want), "{flag}: {err}");
    }
}

#[test]
fn status_reads_the_run_directorys_own_cache_and_refuses_what_is_not_a_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let key = "a".repeat(64);
    let runs = tmp.path().join("runs");
    std::fs::create_dir_all(runs.join("exp")).unwrap();
    std::fs::create_dir_all(runs.join("cache").join(&key)).unwrap();
    std::fs::write(runs.join("cache").join(&key).join("ordo-node.json"), r#"{"files": {}}"#).unwrap();
    let plan = format!(
        r#"{{"nodes": [{{"key": "{key}", "stage": "pretrain", "kind": "pretrain", "seed": 0}}], "arms": [{{"arm": "a", "seed": 1, "chain": ["{key}"]}}]}}"#
    );
    std::fs::write(runs.join("exp/plan.json"), plan).unwrap();
    // A copy of the runs directory, its original gone: the copy reports its own cache.
    let copy = tmp.path().join("copy");
    std::fs::rename(&runs, &copy).unwrap();
    let (code, out, err) = ordo(&["status", copy.join("exp").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1/1 nodes complete; lock free"), "{out}");
    // A lock file left by a dead or reused PID is not a held lock.
    std::fs::write(copy.join("exp/lock"), "1\n").unwrap();
    let (_, out, _) = ordo(&["status", copy.join("exp").to_str().unwrap()]);
    assert!(out.contains("lock free"), "{out}");
    for bad in ["[1,2,3]", "{\"nodes\": 3, \"arms\": []}", "{\"nodes\": [{\"key\": \"../../x\"}], \"arms\": []}"] {
        std::fs::write(copy.join("exp/plan.json"), bad).unwrap();
        let (code, _, err) = ordo(&["status", copy.join("exp").to_str().unwrap()]);
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("not an ordo plan") || err.contains("expected a 64-digit hex node key"), "{bad}: {err}");
    }
}
