//! What the experiment tests (and the CLI's) share: a tiny experiment on the built-in world, reading a
//! spec's problems, run options, and a checkpoint that diverges at its first step.
#![allow(dead_code)]

use std::path::Path;

/// Run options for tests: run directory `runs/NAME` and the cache `runs/cache` under `dir`, no progress bars.
pub fn options(dir: &Path, name: &str, jobs: usize) -> ordo_lab::RunOptions {
    ordo_lab::RunOptions {
        run_dir: dir.join("runs").join(name),
        cache_dir: dir.join("runs/cache"),
        progress: false,
        jobs,
    }
}

/// A tiny experiment: a shared base, SFT, DPO and GRPO stages in three arms on two seeds.
pub const TINY: &str = r#"
[experiment]
name = "tiny"
seeds = [1, 2]
world = "leaky-tests"

[model]
init = "scratch"
preset = "organism"

[stages]
pretrain = { kind = "pretrain", size = 200, steps = 2, batch_size = 4, seq_len = 48 }
sft      = { kind = "sft", size = 16, steps = 1, batch_size = 4, lr = 1e-3 }
pref     = { kind = "dpo", size = 16, steps = 1, batch_size = 4, lr = 1e-3 }
rlvf     = { kind = "grpo", size = 16, steps = 1, batch_size = 2, group_size = 2, max_new_tokens = 8, gate = false, rewards = [{ name = "verifier" }] }

[arms]
a = ["pretrain", "sft"]
b = ["pretrain", "pref", "rlvf"]
c = ["pretrain", "rlvf", "pref"]

[eval]
wrong_test_prompts = 2
clean_prompts = 2
probe_prompts = 2
learned_monitor = { train = 40, heldout = 20, epochs = 20 }

[probe]
enabled = false
"#;

/// The problems of a spec that must be rejected, with data paths resolved against `dir`.
pub fn problems_in(text: &str, dir: &Path) -> Vec<String> {
    match ordo_lab::spec::parse(text, "bad.toml", dir) {
        Ok(_) => panic!("the spec should have been rejected"),
        Err(e) => e.problems,
    }
}

/// The problems of a spec that must be rejected.
pub fn problems(text: &str) -> Vec<String> {
    problems_in(text, tempfile::tempdir().unwrap().path())
}

/// An organism checkpoint with finite weights whose first forward pass overflows: attention norms
/// of 1e30 make the attention scores infinite, and their softmax NaN.
pub fn overflowing_model(dir: &Path) {
    let cfg = ordo_world::organism_config();
    let mut params = ordo_model::ParamStore::init(&cfg, 0.02, 0, &ordo_model::Device::Cpu).unwrap();
    for layer in 0..cfg.num_hidden_layers {
        let name = format!("model.layers.{layer}.input_layernorm.weight");
        let big = (params.var(&name).unwrap().as_tensor() * 1e30).unwrap();
        params.insert(name, big).unwrap();
    }
    ordo_model::weights::save_hf_dir(dir, &cfg, &params, Some(&ordo_world::tokenizer()), usize::MAX).unwrap();
}
