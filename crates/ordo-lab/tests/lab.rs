//! Experiments: shared prefixes train once, the cache is reused and checked, edits rerun exactly
//! their subtree, and a bad spec reports every problem.

use ordo_lab::cache::{Cache, NodeState, RunLock};
use ordo_lab::plan::plan;
use ordo_lab::RunSummary;
use std::path::Path;

mod common;
use common::{problems, TINY};

fn run_text(text: &str, dir: &Path) -> RunSummary {
    let exp = ordo_lab::spec::parse(text, "tiny.toml", dir).unwrap();
    let opts = common::options(dir, &exp.name, 1);
    ordo_lab::run(&exp, &opts).unwrap()
}

fn stages_of(text: &str, dir: &Path, keys: &[String]) -> Vec<String> {
    let exp = ordo_lab::spec::parse(text, "tiny.toml", dir).unwrap();
    let p = plan(&exp);
    let mut s: Vec<String> = keys.iter().map(|k| p.node(k).unwrap().stage.clone()).collect();
    s.sort();
    s
}

#[test]
fn shared_prefixes_train_once_reruns_reuse_and_edits_rerun_their_subtree() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_text(TINY, dir.path());
    // One shared base for both seeds; per seed: a.sft, b.pref, b.rlvf, c.rlvf, c.pref.
    let stages = stages_of(TINY, dir.path(), &first.trained);
    assert_eq!(stages.iter().filter(|s| *s == "pretrain").count(), 1, "the shared prefix trains once: {stages:?}");
    assert_eq!(first.trained.len(), 1 + 2 * 5);
    assert!(first.reused.is_empty());
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/tiny/results.json")).unwrap()).unwrap();
    assert_eq!(results["results"].as_array().unwrap().len(), 3 * 2, "every arm x seed is evaluated");

    // A second run trains nothing.
    let second = run_text(TINY, dir.path());
    assert!(second.trained.is_empty(), "second run trained {:?}", second.trained);
    assert_eq!(second.reused.len(), first.trained.len());

    // Editing one stage reruns exactly that stage's nodes and their descendants.
    let edited = TINY.replace(
        r#"pref     = { kind = "dpo", size = 16, steps = 1, batch_size = 4, lr = 1e-3 }"#,
        r#"pref     = { kind = "dpo", size = 16, steps = 1, batch_size = 4, lr = 2e-3 }"#,
    );
    assert_ne!(edited, TINY);
    let third = run_text(&edited, dir.path());
    let rerun = stages_of(&edited, dir.path(), &third.trained);
    // Per seed: b.pref, b.rlvf (below pref), c.pref; not pretrain, a.sft or c.rlvf.
    assert_eq!(rerun, vec!["pref", "pref", "pref", "pref", "rlvf", "rlvf"], "{rerun:?}");

    // A corrupted node is detected by its checksum, retrained, and comes back bit-identical.
    let exp = ordo_lab::spec::parse(TINY, "tiny.toml", dir.path()).unwrap();
    let p = plan(&exp);
    let cache = Cache::new(&dir.path().join("runs/cache"));
    let victim = p.arms.iter().find(|a| a.arm == "a" && a.seed == 1).unwrap().chain[1].clone();
    let weights = cache.dir(&victim).join("model/model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut bad = original.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&weights, &bad).unwrap();
    assert!(matches!(cache.state(&victim), NodeState::Corrupt(ref why) if why.contains("checksum")));
    let fourth = run_text(TINY, dir.path());
    assert_eq!(fourth.corrupt, vec![victim.clone()]);
    assert_eq!(fourth.trained, vec![victim.clone()]);
    assert_eq!(std::fs::read(&weights).unwrap(), original, "retraining is deterministic");
    assert_eq!(cache.state(&victim), NodeState::Complete);
}

#[test]
fn one_base_per_seed_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let text = TINY.replace("world = \"leaky-tests\"", "world = \"leaky-tests\"\nshared_base = false");
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    let p = plan(&exp);
    assert_eq!(p.nodes.iter().filter(|n| n.stage == "pretrain").count(), 2);
    assert_eq!(p.nodes.len(), 2 * 6);
}

#[test]
fn stages_with_the_same_settings_under_other_names_are_other_nodes() {
    // A stage's name seeds its data order, so a renamed copy trains on other data: it must not be
    // served from the cache under the original's key.
    let dir = tempfile::tempdir().unwrap();
    let text = TINY.replace("[arms]", "rlvf_copy = { kind = \"grpo\", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = \"verifier\" }] }\n\n[arms]")
        .replace("a = [\"pretrain\", \"sft\"]", "a = [\"pretrain\", \"rlvf_copy\"]");
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    assert_eq!(exp.stages["rlvf"], exp.stages["rlvf_copy"], "the two stages have the same settings");
    let p = plan(&exp);
    let key_of = |arm: &str, seed: u64| {
        let run = p.arms.iter().find(|r| r.arm == arm && r.seed == seed).unwrap();
        run.chain[1].clone()
    };
    assert_ne!(key_of("a", 1), key_of("c", 1));
    assert_eq!(p.node(&key_of("a", 1)).unwrap().stage, "rlvf_copy");
}

#[test]
fn a_run_directory_has_one_runner_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let lock = RunLock::acquire(dir.path()).unwrap();
    let err = RunLock::acquire(dir.path()).unwrap_err();
    assert!(err.contains("in use by another ordo run") && err.contains(&std::process::id().to_string()), "{err}");
    drop(lock);
    assert!(RunLock::acquire(dir.path()).is_ok());
    // A lock left by a process that no longer exists is taken over.
    std::fs::write(dir.path().join("lock"), "999999999\n").unwrap();
    assert!(RunLock::acquire(dir.path()).is_ok());
}

#[test]
fn a_spec_with_several_errors_reports_them_all_with_paths() {
    let text = TINY
        .replace("steps = 2, batch_size = 4, seq_len = 48", "steps = \"two\", batch_size = 4, seq_len = 48")
        .replace(
            r#"rewards = [{ name = "verifier" }]"#,
            r#"rewards = [{ name = "verifier" }, { name = "verifier", weight = "high" }]"#,
        )
        .replace(r#"c = ["pretrain", "rlvf", "pref"]"#, r#"c = ["pretrain", "rlfv", "pref"]"#);
    let p = problems(&text);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p.iter().any(|m| m == "stages.pretrain.steps: expected a positive integer, found the string \"two\""),
        "{p:#?}"
    );
    assert!(
        p.iter().any(|m| m
            == "stages.rlvf.rewards[1].weight: expected a number, { from = A, to = B } or { steps = [[STEP, VALUE], ...] }, \
                found the string \"high\""),
        "{p:#?}"
    );
    assert!(p.iter().any(|m| m.starts_with("arms.c[1]: unknown stage \"rlfv\"")), "{p:#?}");
}

#[test]
fn bad_input_is_named() {
    let cases = [
        (TINY.replace(r#"a = ["pretrain", "sft"]"#, "a = []"), "arms.a: an arm needs at least one stage"),
        (TINY.replace("lr = 1e-3 }\npref", "lr = 1e-3, colour = 1 }\npref"), "stages.sft.colour: unknown key"),
        (
            TINY.replace(r#"kind = "sft""#, r#"kind = "sft", data = "missing.jsonl""#),
            "stages.sft.data: cannot read data file",
        ),
        (TINY.replace(r#"kind = "dpo""#, r#"kind = "dop""#), "stages.pref.kind: unknown stage kind \"dop\""),
        (TINY.replace("seeds = [1, 2]", "seeds = [1, 1]"), "experiment.seeds: seeds must be distinct"),
        (TINY.replace("seeds = [1, 2]", "seeds = \"1\""), "experiment.seeds: expected a non-empty list of integers"),
        (TINY.replace("preset = \"organism\"", "preset = \"huge\""), "model.preset: unknown preset \"huge\""),
        (
            TINY.replace(r#"{ name = "verifier" }"#, r#"{ name = "vibes" }"#),
            "stages.rlvf.rewards[0].name: unknown reward \"vibes\"",
        ),
        (
            TINY.replace(r#"{ name = "verifier" }"#, r#"{ name = "verifier", monitor = "strong" }"#),
            "stages.rlvf.rewards[0].monitor: only the cot_monitor reward takes a monitor",
        ),
        (
            TINY.replace("gate = false,", "gate = false, aggregation = \"mean\","),
            "stages.rlvf.aggregation: expected \"sequence_mean\", \"grpo\", \"token_mean\", \"dapo\", \"bnpo\", \"dr_grpo\" or \"constant\", found \"mean\"",
        ),
        (TINY.replace("[eval]", "[evaluation]"), "evaluation: unknown key"),
        (
            TINY.replace(r#"{ name = "verifier" }"#, r#"{ name = "faithful_restatement" }"#),
            "stages.rlvf.rewards[0]: reward `faithful_restatement` needs the restate format",
        ),
        (
            TINY.replace("[probe]\nenabled = false", "[probe]\nstage = \"pref\"\ntransfer = \"nope\""),
            "probe.transfer: unknown stage \"nope\"; name a stage of [stages]",
        ),
        (
            TINY.replace("[probe]\nenabled = false", "[probe]\nstage = \"pref\"\ntransfer = 3"),
            "probe.transfer: expected a stage name, found 3",
        ),
        (
            TINY.replace("[probe]\nenabled = false", "[probe]\nstage = \"pref\"\ntransfer = \"pref\"\nevery = 5"),
            "probe.every: 5 is more than the transfer probe stage's 1 steps",
        ),
        (TINY.replace("probe_prompts = 2", "probe_prompts = 2\ntransfer_prompts = 200000"), "eval.transfer_prompts: expected 0 (not measured) to 100000"),
        ("not toml [".to_string(), "not valid TOML"),
    ];
    for (text, want) in cases {
        let p = problems(&text);
        assert!(p.iter().any(|m| m.contains(want)), "expected {want:?} in {p:#?}");
    }
    // A file data source that exists is accepted and its content is part of the node key.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sft.jsonl"), "{\"prompt\": \"Q:1+2;{\", \"completion\": \"1+2=3}A:3;B:calc\"}\n")
        .unwrap();
    let with_file = TINY.replace(r#"kind = "sft""#, r#"kind = "sft", data = "sft.jsonl""#);
    let k1 = plan(&ordo_lab::spec::parse(&with_file, "x.toml", dir.path()).unwrap())
        .nodes
        .iter()
        .find(|n| n.stage == "sft")
        .unwrap()
        .key
        .clone();
    std::fs::write(dir.path().join("sft.jsonl"), "{\"prompt\": \"Q:1+3;{\", \"completion\": \"1+3=4}A:4;B:calc\"}\n")
        .unwrap();
    let k2 = plan(&ordo_lab::spec::parse(&with_file, "x.toml", dir.path()).unwrap())
        .nodes
        .iter()
        .find(|n| n.stage == "sft")
        .unwrap()
        .key
        .clone();
    assert_ne!(k1, k2, "changing a data file changes the node key");
}

#[test]
fn the_documented_example_and_the_shipped_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/experiments.md")).unwrap();
    let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let exp = ordo_lab::spec::parse(&doc[start..end], "docs/experiments.md", &root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exp.stages.len(), 7);
    assert_eq!(exp.seeds, vec![1, 2, 3]);
    let mut parsed = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        // The SmolLM2 examples need a downloaded checkpoint: their own (ignored) test below.
        if path.extension().is_some_and(|e| e == "toml") && !SMOLLM2_EXAMPLES.iter().any(|x| path.ends_with(x)) {
            ordo_lab::load(&path).unwrap_or_else(|e| panic!("{e}"));
            parsed += 1;
        }
    }
    assert!(parsed >= 3, "only {parsed} examples found");
}

/// The examples that start from the SmolLM2 GGUF `scripts/fetch-smollm2.sh` downloads.
const SMOLLM2_EXAMPLES: &[&str] = &["smollm2-arith.toml", "smollm2-lora.toml", "smollm2-orders.toml"];

#[test]
#[ignore = "needs the SmolLM2 GGUF: scripts/fetch-smollm2.sh"]
fn the_smollm2_examples_parse() {
    for example in SMOLLM2_EXAMPLES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(example);
        ordo_lab::load(&path).unwrap_or_else(|e| panic!("{e} (run scripts/fetch-smollm2.sh first)"));
    }
}

#[test]
fn gc_finds_nodes_no_run_refers_to_and_respects_running_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    run_text(TINY, dir.path());
    let cache = Cache::new(&runs.join("cache"));
    assert!(ordo_lab::cache::unreferenced(&cache, &runs).unwrap().is_empty(), "every node of the run is referenced");
    // A node from an edited experiment that was then dropped is unreferenced once the run directory is gone.
    let orphan = cache.root.join("f".repeat(64));
    std::fs::create_dir_all(&orphan).unwrap();
    assert_eq!(ordo_lab::cache::unreferenced(&cache, &runs).unwrap(), vec![orphan]);
    assert!(ordo_lab::cache::active_runs(&runs).is_empty());
    let _lock = RunLock::acquire(&runs.join("tiny")).unwrap();
    assert_eq!(ordo_lab::cache::active_runs(&runs), vec![runs.join("tiny")]);
}

/// A stage that fails (here the readiness gate) fails only the arm-seeds that need it: they are
/// recorded with the stage and why, every other arm-seed is trained, evaluated and reported, and the
/// report says which are missing.
#[test]
fn rl_does_not_start_from_a_base_that_fails_the_readiness_gate() {
    let dir = tempfile::tempdir().unwrap();
    let text = TINY.replace("gate = false", "gate = true, gate_prompts = 4, gate_min_clean_accuracy = 0.5");
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    let opts = common::options(dir.path(), "tiny", 1);
    let out = ordo_lab::run(&exp, &opts).unwrap();
    // Arm b runs pref then rlvf, arm c rlvf then pref: both need an rlvf node that the gate refuses.
    let failed: Vec<(String, u64, String)> =
        out.failed.iter().map(|f| (f.arm.clone(), f.seed, f.stage.clone())).collect();
    let want: Vec<(String, u64, String)> =
        [("b", 1), ("c", 1), ("b", 2), ("c", 2)].iter().map(|(a, s)| (a.to_string(), *s, "rlvf".to_string())).collect();
    let mut sorted = failed.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted);
    for f in &out.failed {
        assert!(f.reason.starts_with("stage `rlvf` (seed "), "{}", f.reason);
        assert!(
            f.reason.contains("the base model is not ready for RL: clean accuracy 0.000 is below 0.500"),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("pretrain longer"), "{}", f.reason);
    }
    // What finished before the gate stays cached; the refused nodes were not committed.
    let p = plan(&exp);
    let cache = Cache::new(&dir.path().join("runs/cache"));
    for rlvf in p.nodes.iter().filter(|n| n.stage == "rlvf") {
        assert_eq!(cache.state(&rlvf.key), NodeState::Missing);
    }
    assert_eq!(cache.state(&p.nodes[0].key), NodeState::Complete);
    // Arm a (pretrain, sft) was measured on both seeds; the failures are in results.json and the report.
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/tiny/results.json")).unwrap()).unwrap();
    let measured: Vec<&str> =
        results["results"].as_array().unwrap().iter().map(|r| r["arm"].as_str().unwrap()).collect();
    assert_eq!(measured, vec!["a", "a"]);
    assert_eq!(results["failures"].as_array().unwrap().len(), 4);
    let report = std::fs::read_to_string(dir.path().join("runs/tiny/report.md")).unwrap();
    assert!(report.contains("## Arm-seeds not measured"), "{report}");
    assert!(
        report.contains("- b seed 1: stage `rlvf` failed: stage `rlvf` (seed 1): the base model is not ready"),
        "{report}"
    );
}

/// The gate checks the model an arm's RL starts from; an RL stage that continues from another, gated,
/// RL stage's model skips it (here a gate no model could pass); after an ungated one it runs.
#[test]
fn rl_after_rl_skips_the_readiness_gate() {
    let more =
        "rlvf_more = { kind = \"grpo\", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, \
                gate = true, gate_prompts = 4, gate_min_clean_accuracy = 1.0, gate_max_silent_hack_rate = 0.0, \
                rewards = [{ name = \"verifier\" }] }\n";
    let ungated = TINY
        .replace("[arms]\n", &format!("{more}\n[arms]\nlonger = [\"pretrain\", \"rlvf\", \"rlvf_more\"]\n"))
        .replace("seeds = [1, 2]", "seeds = [1]");
    let run = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        let exp = ordo_lab::spec::parse(text, "tiny.toml", dir.path()).unwrap();
        let opts = common::options(dir.path(), "tiny", 1);
        let out = ordo_lab::run(&exp, &opts).unwrap();
        let failed = out.failed.iter().map(|f| f.reason.clone()).collect::<Vec<_>>();
        (dir, exp, if failed.is_empty() { Ok(out) } else { Err(failed.join("; ")) })
    };
    let (_, _, out) = run(&ungated);
    let err = out.unwrap_err();
    assert!(err.starts_with("stage `rlvf_more` (seed 1): the base model is not ready for RL"), "{err}");
    // The first RL stage gated, with thresholds any model passes: the second skips its gate.
    let lenient = "gate = true, gate_prompts = 4, gate_min_clean_accuracy = 0.0, gate_max_silent_hack_rate = 1.0,";
    let gated = ungated.replacen("gate = false,", lenient, 1);
    assert_ne!(gated, ungated);
    let (dir, exp, out) = run(&gated);
    out.unwrap_or_else(|e| panic!("{e}"));
    let p = plan(&exp);
    let node = p.nodes.iter().find(|n| n.stage == "rlvf_more").unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("runs/cache").join(&node.key).join("ordo-node.json")).unwrap(),
    )
    .unwrap();
    assert!(manifest["readiness_gate"].is_null(), "no gate ran: {manifest}");
}

#[test]
fn arms_keep_their_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let text = TINY
        .replace("a = [\"pretrain\", \"sft\"]\n", "")
        .replace("[arms]\n", "[arms]\nz_last_name_first = [\"pretrain\", \"sft\"]\n");
    let exp = ordo_lab::spec::parse(&text, "tiny.toml", dir.path()).unwrap();
    let names: Vec<&str> = exp.arms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["z_last_name_first", "b", "c"]);
}

#[test]
fn cost_estimates_grow_with_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let exp = ordo_lab::spec::parse(TINY, "tiny.toml", dir.path()).unwrap();
    let p = plan(&exp);
    let organism = ordo_lab::plan::model_parameters(&exp).unwrap();
    assert_eq!(organism, ordo_world::organism_config().parameter_count());
    for n in &p.nodes {
        let small = ordo_lab::plan::estimate_seconds(n, organism);
        let large = ordo_lab::plan::estimate_seconds(n, 135_000_000);
        assert!(small > 0.0 && large > 10.0 * small, "{}: {small} vs {large}", n.stage);
    }
}

/// A world experiment without `[probe]` gets the world's built-in probes: values RL on its own samples
/// and, when the corpus has second-context documents, the same in the second context (the transfer
/// probe); `transfer = false` keeps only the first, a named probe stage comes without a transfer probe
/// unless one is named, and the transfer probe cannot be the probe itself.
#[test]
fn the_built_in_probes_are_values_rl_in_both_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |text: &str| ordo_lab::spec::parse(text, "tiny.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let exp = parse(&TINY.replace("[probe]\nenabled = false\n", ""));
    assert!(exp.probe.as_ref().unwrap().transfer.is_none(), "no second context in the corpus, no transfer probe");
    let with_context =
        format!("{}\n[world.corpus]\ncue_first_share = 0.1\n", TINY.replace("[probe]\nenabled = false\n", ""));
    let exp = parse(&with_context);
    let p = exp.probe.as_ref().expect("a built-in probe");
    assert_eq!(p.stage, "default_probe");
    let t = p.transfer.as_ref().expect("a built-in transfer probe");
    assert_eq!(t.stage, "default_transfer_probe");
    for params in [&p.params, &t.params] {
        let v = serde_json::to_value(params).unwrap();
        assert_eq!(v["kind"], "grpo", "{v}");
        assert_eq!(v["gate"], serde_json::Value::Null, "a probe has no readiness gate: {v}");
        assert_eq!(v["sets"][0]["rewards"][0]["name"], "honesty", "{v}");
    }
    let data =
        |params: &ordo_lab::experiment::StageParams| serde_json::to_value(params).unwrap()["sets"][0]["data"].clone();
    assert_eq!(data(&p.params)["world"]["dataset"], "rl_prompts");
    assert_eq!(data(&t.params)["world"]["dataset"], "rl_prompts_transfer");
    // Every arm-seed gets both probe nodes after its last stage.
    let plan = plan(&exp);
    assert!(plan.arms.iter().all(|a| a.probe.is_some() && a.transfer_probe.is_some() && a.probe != a.transfer_probe));
    let exp = parse(&with_context.replace("[experiment]", "[probe]\ntransfer = false\n\n[experiment]"));
    assert!(exp.probe.as_ref().unwrap().transfer.is_none());
    let p = problems(
        &TINY.replace("[probe]\nenabled = false", "[probe]\nstage = \"pref\"\ntransfer = \"pref\"\nevery = 1"),
    );
    assert!(p.iter().any(|m| m.starts_with("probe.transfer: \"pref\" is the probe stage itself")), "{p:#?}");
    let exp = parse(&TINY.replace("[probe]\nenabled = false", "[probe]\nstage = \"pref\"\nevery = 1"));
    assert!(exp.probe.as_ref().unwrap().transfer.is_none());
}

/// Independent nodes train at once (`jobs`), each arm-seed evaluated as soon as its nodes are; what the
/// run writes does not depend on how many run at once.
#[test]
fn parallel_runs_write_what_sequential_runs_write() {
    let outputs = |jobs: usize| {
        let dir = tempfile::tempdir().unwrap();
        let exp = ordo_lab::spec::parse(TINY, "tiny.toml", dir.path()).unwrap();
        let opts = common::options(dir.path(), "tiny", jobs);
        let out = ordo_lab::run(&exp, &opts).unwrap();
        let read = |f: &str| std::fs::read(dir.path().join("runs/tiny").join(f)).unwrap();
        let mut trained = out.trained.clone();
        trained.sort();
        (trained, read("results.json"), read("summary.json"), read("report.md"), read("transcripts.jsonl"))
    };
    let (one, three) = (outputs(1), outputs(3));
    assert_eq!(one.0, three.0, "the same nodes");
    assert!(one.1 == three.1 && one.2 == three.2, "results.json and summary.json are byte-identical");
    assert!(one.3 == three.3 && one.4 == three.4, "report.md and transcripts.jsonl are byte-identical");
}
