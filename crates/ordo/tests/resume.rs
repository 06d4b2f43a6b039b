//! A run killed with SIGKILL at a random step resumes with `ordo run` and ends exactly as an
//! uninterrupted run: the same metrics (timing aside) and bit-identical weights for every node.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXPERIMENT: &str = r#"
[experiment]
name = "resume"
seeds = [1]
world = "leaky-tests"
checkpoint_every = 1

[model]
init = "scratch"
preset = "organism"

[stages]
pretrain = { kind = "pretrain", size = 300, steps = 30, batch_size = 8, seq_len = 48 }
rlvf     = { kind = "grpo", size = 32, steps = 8, batch_size = 2, group_size = 4, max_new_tokens = 12, gate = false, rewards = [{ name = "verifier" }] }

[arms]
a = ["pretrain", "rlvf"]

[eval]
wrong_test_prompts = 2
clean_prompts = 2
probe_prompts = 2
learned_monitor = { train = 40, heldout = 20, epochs = 20 }

[probe]
enabled = false
"#;

fn ordo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ordo"));
    c.current_dir(dir).args(["run", "exp.toml", "--runs", "runs"]).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Lines in the metrics file of the node being built, if any.
fn progress(cache: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(cache) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".staging"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("metrics.jsonl")).ok())
        .map(|t| t.lines().count())
        .max()
        .unwrap_or(0)
}

/// Starts a run and kills it with SIGKILL once `done_nodes` nodes are committed and the node in
/// progress has logged at least `at` steps.
fn kill_at(dir: &Path, done_nodes: usize, at: usize) {
    let mut child = ordo(dir).spawn().unwrap();
    let cache = dir.join("runs/cache");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let committed = std::fs::read_dir(&cache)
            .map(|rd| rd.filter_map(|e| e.ok()).filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
            .unwrap_or(0);
        if committed == done_nodes && progress(&cache) >= at {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run finished ({status}) before it could be killed at step {at} of node {}", done_nodes + 1);
        }
        assert!(Instant::now() < deadline, "timed out waiting for step {at}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn node_outputs(dir: &Path) -> Vec<(String, Vec<serde_json::Value>, Vec<u8>)> {
    let cache = dir.join("runs/cache");
    let mut keys: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    keys.sort();
    keys.iter()
        .map(|k| {
            let metrics = std::fs::read_to_string(k.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let o = v.as_object_mut().unwrap();
                    o.retain(|k, _| !ordo_train::trainer::is_timing_metric(k));
                    v
                })
                .collect();
            let mut weights = std::fs::read(k.join("model/model.safetensors")).unwrap();
            // A LoRA node's adapters too.
            weights.extend(std::fs::read(k.join("adapter/adapter_model.safetensors")).unwrap_or_default());
            (k.file_name().unwrap().to_string_lossy().into_owned(), metrics, weights)
        })
        .collect()
}

#[test]
fn kill_9_at_a_random_step_then_resume_gives_identical_results() {
    kill_and_resume(EXPERIMENT);
}

/// The same with LoRA adapters (and their dropout) on the GRPO stage: the resumed stage restores the
/// adapters and their optimiser state, and ends with the same merged weights and adapter files.
#[test]
fn kill_9_inside_a_lora_stage_then_resume_gives_identical_results() {
    let lora = EXPERIMENT.replace(
        "rewards = [{ name = \"verifier\" }] }",
        "rewards = [{ name = \"verifier\" }], lora_rank = 4, lora_dropout = 0.1 }",
    );
    assert_ne!(lora, EXPERIMENT);
    let dir = kill_and_resume(&lora);
    let adapters: Vec<_> = std::fs::read_dir(dir.path().join("runs/cache"))
        .unwrap()
        .map(|e| e.unwrap().path().join("adapter/adapter_model.safetensors"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(adapters.len(), 1, "the LoRA node keeps its adapters");
}

/// Runs `experiment` once uninterrupted and once killed (inside pretraining, then inside the second
/// stage) and resumed; checks every node's metrics and files are the same. Returns the resumed run.
fn kill_and_resume(experiment: &str) -> tempfile::TempDir {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        std::fs::write(d.path().join("exp.toml"), experiment).unwrap();
    }
    assert!(ordo(a.path()).status().unwrap().success());

    // A random step (from the clock) inside pretraining, then a kill inside GRPO.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as usize;
    let at = 3 + nanos % 20;
    kill_at(b.path(), 0, at);
    assert!(b.path().join("runs/resume/lock").exists(), "a killed run leaves its lock behind");
    kill_at(b.path(), 1, 3);
    let resumed = ordo(b.path()).status().unwrap();
    assert!(resumed.success(), "the resumed run failed");

    let (x, y) = (node_outputs(a.path()), node_outputs(b.path()));
    assert_eq!(x.len(), 2);
    assert_eq!(x.len(), y.len());
    for ((ka, ma, wa), (kb, mb, wb)) in x.iter().zip(&y) {
        assert_eq!(ka, kb);
        assert_eq!(ma, mb, "node {ka}: metrics differ after kill -9 at step {at} and resume");
        assert!(wa == wb, "node {ka}: weights differ after kill -9 at step {at} and resume");
    }
    // No step checkpoint or staging directory is left behind (only the nodes' lock files, which stay).
    let leftovers: Vec<_> = std::fs::read_dir(b.path().join("runs/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.') && !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    b
}
