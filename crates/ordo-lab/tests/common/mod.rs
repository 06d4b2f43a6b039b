//! What the experiment tests share: a tiny experiment on the built-in world, and reading a spec's problems.
#![allow(dead_code)]

use std::path::Path;

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
