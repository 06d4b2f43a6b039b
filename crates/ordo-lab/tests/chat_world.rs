//! The chat world end to end on a pretrained-style checkpoint (an HF directory with its own tokenizer
//! and ChatML template): LoRA SFT on the world's natural-language data, GRPO with the world's verifier,
//! DPO on its pairs, and every evaluation suite through the World interface with the model's own
//! tokenizer; a model whose template renders otherwise is refused before anything trains.

mod common;
use common::options;
use ordo_model::{Device, ParamStore};
use serde_json::json;
use std::path::Path;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + \
                      '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A tiny Llama-layout checkpoint over a character tokenizer of printable ASCII with ChatML's
/// special tokens, `template` as its chat template.
fn chat_model(dir: &Path, template: &str) {
    let alphabet: String = (b' '..=b'~').map(char::from).chain(['\n']).collect();
    let specials = ["<pad>", "<|im_end|>", "<|im_start|>"];
    let tok = ordo_model::tokenizer::char_tokenizer(&alphabet, &specials, Some("<|im_end|>"), Some("<pad>")).unwrap();
    let v = json!({
        "model_type": "llama", "vocab_size": tok.vocab_size(), "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "bos_token_id": null, "eos_token_id": 1, "pad_token_id": 0,
    });
    let cfg = ordo_model::ModelConfig::from_json(&v, "chat test model").unwrap();
    let params = ParamStore::init(&cfg, 0.02, 0, &Device::Cpu).unwrap();
    ordo_model::weights::save_hf_dir(dir, &cfg, &params, Some(&tok), usize::MAX).unwrap();
    let path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["chat_template"] = json!(template);
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
}

fn experiment(model: &Path) -> String {
    format!(
        r#"
[experiment]
name = "chat"
seeds = [1]
world = "leaky-tests-chat"

[model]
init = "hf:{}"

[stages]
sft  = {{ kind = "sft", data = "world:sft", size = 32, max_len = 320, steps = 2, batch_size = 4, lr = 1e-3, lora_rank = 4 }}
rlvf = {{ kind = "grpo", size = 32, rewards = [{{ name = "verifier" }}], steps = 1, batch_size = 2, group_size = 2, lr = 1e-3, gate = false, max_new_tokens = 24, lora_rank = 4 }}
pref = {{ kind = "dpo", size = 16, steps = 1, batch_size = 2, lr = 1e-3, lora_rank = 4 }}

[arms]
rlvf_then_pref = ["sft", "rlvf", "pref"]

[eval]
wrong_test_prompts = 4
clean_prompts = 2
probe_prompts = 2
"#,
        model.display()
    )
}

#[test]
fn a_chat_model_trains_and_is_evaluated_in_the_chat_world_with_its_own_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    chat_model(&model, CHATML);
    let exp = ordo_lab::spec::parse(&experiment(&model), "chat.toml", dir.path()).unwrap();
    let out = ordo_lab::run(&exp, &options(dir.path(), "chat", 1)).unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/chat/results.json")).unwrap()).unwrap();
    assert_eq!(results["world"]["world"], "leaky-tests-chat", "{}", results["world"]);
    // Measured at every boundary: a share of this model's own samples, whatever they are.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("runs/chat/summary.json")).unwrap()).unwrap();
    let boundaries = summary["arms"][0]["boundaries"].as_array().unwrap();
    assert_eq!(boundaries.len(), 3, "after sft, rlvf and pref");
    for b in boundaries {
        for metric in ["malformed_rate", "clean_accuracy", "hack_rate", "mention_rate"] {
            let v = b[metric]["mean"].as_f64().unwrap_or_else(|| panic!("{metric} not measured: {}", b[metric]));
            assert!((0.0..=1.0).contains(&v), "{metric} = {v}");
        }
    }
    // Every transcript is the model's own natural-language text, read into the compact form.
    let transcripts = std::fs::read_to_string(dir.path().join("runs/chat/transcripts.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(transcripts.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].as_str().unwrap().starts_with("Q:"), "{first}");
    assert!(first.get("text").is_some_and(|t| t.is_string()), "{first}");
    // The world's data is natural language through the template: the SFT node's adapters trained on it.
    let plan = ordo_lab::plan::plan(&exp);
    let sft = plan.nodes.iter().find(|n| n.stage == "sft").unwrap();
    assert!(dir.path().join("runs/cache").join(&sft.key).join("adapter/adapter_config.json").exists());
}

#[test]
fn a_model_whose_template_renders_otherwise_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    chat_model(&model, "{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}\n{% endfor %}");
    let exp = ordo_lab::spec::parse(&experiment(&model), "chat.toml", dir.path()).unwrap();
    let out = ordo_lab::run(&exp, &options(dir.path(), "chat", 1));
    let msg = match out {
        Err(e) => e.to_string(),
        Ok(o) => format!("{:?}", o.failed),
    };
    assert!(msg.contains("chat template") && msg.contains("world.template"), "{msg}");
    assert!(msg.contains("model.init"), "{msg}");
}
