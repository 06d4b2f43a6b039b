//! Helpers shared by the stage tests: a character tokenizer and a tiny Llama-layout policy.
#![allow(dead_code)]

use candle_core::Device;
use ordo_model::tokenizer::char_tokenizer;
use ordo_model::{ModelConfig, ParamStore, TextTokenizer};
use ordo_train::Policy;

pub const PAD: u32 = 0;
pub const EOS: u32 = 1;

/// Lowercase letters, `A`, `B`, `Q` and punctuation, after `<pad>` (0) and `<eos>` (1).
pub fn tokenizer() -> TextTokenizer {
    char_tokenizer("abcdefghijklmnopqrstuvwxyzABQ:;{}", &["<pad>", "<eos>"], Some("<eos>"), Some("<pad>")).unwrap()
}

/// A 2-layer decoder of width `hidden` over `tok`'s vocabulary, initialised from `seed`.
pub fn tiny_policy(tok: &TextTokenizer, hidden: usize, seed: u64) -> Policy {
    let cfg = ModelConfig::from_json(
        &serde_json::json!({"model_type": "llama", "vocab_size": tok.vocab_size(), "hidden_size": hidden,
            "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "tie_word_embeddings": true, "eos_token_id": EOS, "pad_token_id": PAD}),
        "tiny",
    )
    .unwrap();
    Policy { params: ParamStore::init(&cfg, 0.05, seed, &Device::Cpu).unwrap(), config: cfg }
}

/// Metrics without the wall-clock fields (which differ between otherwise identical runs).
pub fn without_timing(
    h: &[serde_json::Map<String, serde_json::Value>],
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    h.iter()
        .map(|m| {
            let mut m = m.clone();
            m.retain(|k, _| !ordo_train::trainer::is_timing_metric(k));
            m
        })
        .collect()
}
