//! Small inputs that once panicked, hung or allocated without bound: each now fails at once with a
//! clear message (GGUF metadata, config sizes, shard paths, chat templates, generation lengths).

mod common;
use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::*;
use ordo_model::tokenizer::render_chat_template;
use ordo_model::{sampler, ChatMessage, Decoder, SamplingParams};
use std::path::Path;
use std::time::{Duration, Instant};

fn load_err(path: &Path) -> String {
    match ordo_model::load(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A llama GGUF with the given head count and token embedding tensor.
fn gguf(path: &Path, head_count: u32, embd: Tensor) {
    let u = GValue::U32;
    let md: Vec<(&str, GValue)> = vec![
        ("general.architecture", GValue::String("llama".into())),
        ("llama.embedding_length", u(8)),
        ("llama.block_count", u(1)),
        ("llama.feed_forward_length", u(16)),
        ("llama.attention.head_count", u(head_count)),
        ("llama.context_length", u(32)),
    ];
    let q = QTensor::quantize(&embd, GgmlDType::F32).unwrap();
    let mdr: Vec<(&str, &GValue)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &mdr, &[("token_embd.weight", &q)]).unwrap();
}

#[test]
fn gguf_with_zero_heads_or_a_shapeless_embedding_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zero-heads.gguf");
    gguf(&p, 0, Tensor::zeros((4, 8), candle_core::DType::F32, &Device::Cpu).unwrap());
    let e = load_err(&p);
    assert!(e.contains("`llama.attention.head_count`: expected a positive integer, found 0"), "{e}");
    let p = dir.path().join("flat-embd.gguf");
    gguf(&p, 2, Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).unwrap());
    let e = load_err(&p);
    assert!(e.contains("token_embd.weight has shape [32], expected [vocab, hidden]"), "{e}");
    // A tensor whose shape does not fit the metadata is named before any data is read.
    let p = dir.path().join("wrong-shape.gguf");
    gguf(&p, 2, Tensor::zeros((4, 6), candle_core::DType::F32, &Device::Cpu).unwrap());
    let e = load_err(&p);
    assert!(e.contains("token_embd.weight` has shape [4, 6], the metadata implies [4, 8]"), "{e}");
}

fn fixture_with_config(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(hf_fixture("llama-tiny").join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf_fixture("llama-tiny").join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

#[test]
fn absurd_config_sizes_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    for (field, value, want) in [
        (
            "num_hidden_layers",
            serde_json::json!(1_000_000),
            "`num_hidden_layers`: 1000000 is out of range (expected 1 to 1024)",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(1u64 << 62),
            "`num_hidden_layers`: 4611686018427388000 is out of range",
        ),
        ("vocab_size", serde_json::json!(1u64 << 40), "`vocab_size`: 1099511627776 is out of range"),
        (
            "max_position_embeddings",
            serde_json::json!(1u64 << 30),
            "`max_position_embeddings`: 1073741824 is out of range",
        ),
        ("rms_norm_eps", serde_json::json!(-1.0), "`rms_norm_eps`: -1 is out of range"),
        ("rope_theta", serde_json::json!(0.0), "`rope_theta`: 0 is out of range"),
    ] {
        let d = dir.path().join(format!("{field}-{value}"));
        fixture_with_config(&d, |c| c[field] = value.clone());
        let started = Instant::now();
        let e = load_err(&d);
        assert!(e.contains(want), "{field}: expected {want:?} in {e:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{field}: took {:?}", started.elapsed());
    }
    // Sizes each within bounds whose weights alone exceed this machine's memory are refused with the figure.
    let d = dir.path().join("too-big");
    fixture_with_config(&d, |c| {
        c["hidden_size"] = serde_json::json!(65536);
        c["intermediate_size"] = serde_json::json!(262144);
        c["num_attention_heads"] = serde_json::json!(512);
        c["num_key_value_heads"] = serde_json::json!(512);
        c["head_dim"] = serde_json::json!(128);
        c["num_hidden_layers"] = serde_json::json!(1024);
    });
    let e = load_err(&d);
    assert!(e.contains("GiB in f32, more than this machine's"), "{e}");
}

#[test]
fn a_shard_index_cannot_name_a_file_outside_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    fixture_with_config(dir.path(), |_| {});
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    for bad in ["../../etc/hostname", "/etc/hostname", "sub/model.safetensors", ""] {
        let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": bad}});
        std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains("is not a file name inside the checkpoint directory"), "{bad}: {e}");
    }
}

#[test]
fn a_chat_template_with_runaway_loops_stops_within_its_budget() {
    let template = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}{% endfor %}{% endfor %}{% endfor %}";
    let started = Instant::now();
    let e = render_chat_template(template, &[ChatMessage::new("user", "hi")], true, &serde_json::json!({}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not finish within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn asking_for_more_new_tokens_than_positions_fails_before_allocating() {
    let m = ordo_model::load(&hf_fixture("llama-tiny"), &Device::Cpu).unwrap();
    let dec = Decoder::new_inference(&m.config, &m.params).unwrap();
    let params = SamplingParams::greedy(100_000_000);
    let started = Instant::now();
    let e = sampler::generate(&dec, &[vec![1, 2, 3]], &params).unwrap_err().to_string();
    assert!(e.contains("a 3-token prompt plus 100000000 new tokens exceeds the model's"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let e = sampler::generate(&dec, &[vec![1, 2, 3]], &SamplingParams::greedy(usize::MAX)).unwrap_err().to_string();
    assert!(e.contains("exceeds the model's"), "{e}");
}
