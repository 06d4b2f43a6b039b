//! Shared helpers of the engine's integration tests: fixture paths and tensor comparisons.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// A small random-architecture config with the switches the fixtures do not cover (grouped-query
/// attention, Llama 3.1 rope scaling, an untied head), `extra` fields added on top.
pub fn switches_config(model_type: &str, extra: &serde_json::Value) -> ordo_model::ModelConfig {
    let mut v = serde_json::json!({
        "model_type": model_type, "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
        "rope_scaling": { "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8 },
    });
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    ordo_model::ModelConfig::from_json(&v, "test").unwrap()
}

/// `shared/fixtures` beside the repository (or `ORDO_FIXTURES`).
pub fn fixtures_dir() -> PathBuf {
    if let Ok(p) = std::env::var("ORDO_FIXTURES") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let dir = root.join("shared/fixtures");
    assert!(dir.exists(), "fixtures not found at {}; set ORDO_FIXTURES", dir.display());
    dir
}

/// The HF fixture checkpoint `name` (qwen3-tiny or llama-tiny).
pub fn hf_fixture(name: &str) -> PathBuf {
    fixtures_dir().join("hf").join(name)
}

/// The reference tensors transformers computed for a fixture.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(hf_fixture(name).join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// The reference.json of a fixture.
pub fn reference_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(hf_fixture(name).join("reference.json")).unwrap()).unwrap()
}

/// Rows of an integer tensor as u32 ids.
pub fn rows_u32(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Largest absolute value.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub const FAMILIES: [&str; 2] = ["qwen3-tiny", "llama-tiny"];
