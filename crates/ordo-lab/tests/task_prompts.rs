//! RL on prompts from a JSONL file with a task reward (`answer_match` on prompt metadata), starting
//! from an HF checkpoint, without a world.

use ordo_lab::RunOptions;
use ordo_train::rewards::{answer_match, RewardSource, RlPrompt};

#[test]
fn answer_match_compares_the_last_answer_with_the_metadata() {
    let re = regex::Regex::new(ordo_train::rewards::DEFAULT_ANSWER_PATTERN).unwrap();
    let r = answer_match("answer_match", "answer", &re, false);
    let prompt = |v: serde_json::Value| RlPrompt {
        text: "q".into(),
        ids: vec![1],
        metadata: serde_json::from_value(serde_json::json!({ "answer": v })).unwrap(),
    };
    let (p_str, p_num, p_none) = (prompt("42".into()), prompt(42.into()), prompt(serde_json::Value::Null));
    let s = r.score(&[&p_str, &p_num, &p_str, &p_none], &["so 6*7 = 42", "The answer is 42.", "41 or 42? 41", "42"]);
    assert_eq!(s.unwrap(), vec![1.0, 1.0, 0.0, 0.0]);
    let boxed = regex::Regex::new(r"\\boxed\{([^}]*)\}").unwrap();
    let r = answer_match("boxed", "answer", &boxed, false);
    assert_eq!(r.score(&[&p_str, &p_str], &["\\boxed{42}", "42"]).unwrap(), vec![1.0, 0.0]);
}

#[test]
fn grpo_on_file_prompts_with_a_task_reward() {
    let dir = tempfile::tempdir().unwrap();
    // An HF checkpoint with the world's character tokenizer (no world in the experiment).
    let cfg = ordo_world::organism_config();
    let params = ordo_model::ParamStore::init(&cfg, 0.02, 3, &ordo_model::Device::Cpu).unwrap();
    ordo_model::weights::save_hf_dir(
        &dir.path().join("model"),
        &cfg,
        &params,
        Some(&ordo_world::tokenizer()),
        usize::MAX,
    )
    .unwrap();
    let rows: String = (0..8).map(|i| format!("{{\"prompt\": \"Q:{i}+1;{{\", \"answer\": {}}}\n", i + 1)).collect();
    std::fs::write(dir.path().join("prompts.jsonl"), rows).unwrap();
    let spec = r#"
[experiment]
name = "task"
seeds = [1]

[model]
init = "hf:model"

[stages]
rl = { kind = "grpo", prompts = "prompts.jsonl", rewards = [{ name = "answer_match", field = "answer" }], steps = 2, batch_size = 2, group_size = 2, max_new_tokens = 6, cot_open = "{", cot_close = "}" }

[arms]
a = ["rl"]
"#;
    let exp = ordo_lab::spec::parse(spec, "task.toml", dir.path()).unwrap();
    let opts = RunOptions {
        run_dir: dir.path().join("runs/task"),
        cache_dir: dir.path().join("runs/cache"),
        progress: false,
        jobs: 1,
    };
    let summary = ordo_lab::run(&exp, &opts).unwrap();
    assert_eq!(summary.trained.len(), 1);
    let metrics =
        std::fs::read_to_string(dir.path().join("runs/cache").join(&summary.trained[0]).join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    assert!(metrics.contains("answer_match"), "{metrics}");

    // Bad specs are named.
    for (bad, want) in [
        (spec.replace(r#"field = "answer" "#, ""), "rewards[0].field: missing"),
        (
            spec.replace(r#"name = "answer_match""#, r#"name = "verifier""#),
            "without a world (experiment.world) there are only answer_match and reward_model",
        ),
        (spec.replace(r#"field = "answer""#, r#"field = "answer", pattern = "(""#), "pattern: not a valid regex"),
        (spec.replace(r#", cot_close = "}""#, ""), "cot_open and cot_close go together"),
    ] {
        let e = ordo_lab::spec::parse(&bad, "task.toml", dir.path()).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}
