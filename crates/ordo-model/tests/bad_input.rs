//! Bad input gets a clear error naming the file and what was expected, never a panic.

mod common;
use candle_core::Device;
use common::*;
use ordo_model::decoder::ids_tensor;
use ordo_model::{tokenizer::render_chat_template, ChatMessage, Decoder, OpPath};
use std::path::Path;

fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(hf_fixture(name).join(f), to.join(f)).unwrap();
    }
}

fn load_err(path: &Path) -> String {
    match ordo_model::load(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_paths_and_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(&dir.path().join("nope"));
    assert!(e.contains("nope") && e.contains("no such file"), "{e}");
    std::fs::write(
        dir.path().join("config.json"),
        std::fs::read(hf_fixture("llama-tiny").join("config.json")).unwrap(),
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("expected an HF checkpoint directory"), "{e}");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("qwen3-tiny", dir.path());
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn shapes_that_do_not_match_the_config_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("llama-tiny", dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["intermediate_size"] = serde_json::json!(128);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("mlp.gate_proj.weight") && e.contains("[160, 64]") && e.contains("[128, 64]"), "{e}");
}

#[test]
fn config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("llama-tiny", dir.path());
    let cfg_path = dir.path().join("config.json");
    let orig: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("model_type", serde_json::json!("gpt2"), "model_type `gpt2` is not supported"),
        ("hidden_size", serde_json::json!("big"), "field `hidden_size`: expected a positive integer"),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act `gelu`"),
        ("num_key_value_heads", serde_json::json!(3), "multiple of num_key_value_heads"),
    ];
    for (field, value, expected) in cases {
        let mut cfg = orig.clone();
        cfg[field] = value;
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains(expected) && e.contains("config.json"), "{field}: {e}");
    }
}

#[test]
fn gguf_with_an_unknown_tensor_type_or_garbage_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // A minimal GGUF v3 file: one metadata entry, one tensor whose type id (99) no reader knows.
    let mut b: Vec<u8> = Vec::new();
    b.extend(0x46554747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    s(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(99u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + 512, 0);
    let p = dir.path().join("weird.gguf");
    std::fs::write(&p, &b).unwrap();
    let e = load_err(&p);
    assert!(e.contains("weird.gguf") && e.contains("unknown dtype for tensor 99"), "{e}");

    let p = dir.path().join("garbage.gguf");
    std::fs::write(&p, b"definitely not gguf").unwrap();
    let e = load_err(&p);
    assert!(e.contains("garbage.gguf") && e.contains("not a readable GGUF file"), "{e}");
}

#[test]
fn token_ids_outside_the_vocabulary_are_an_error() {
    let m = ordo_model::load(&hf_fixture("llama-tiny"), &Device::Cpu).unwrap();
    let dec = Decoder::new(&m.config, &m.params).unwrap();
    let e = dec.forward(&ids_tensor(&[vec![1, 384]], &Device::Cpu).unwrap(), None, OpPath::Inference).unwrap_err();
    assert!(e.to_string().contains("token id 384 is out of the vocabulary (size 384)"), "{e}");
}

#[test]
fn chat_templates_render_as_jinja_with_python_methods() {
    let chatml = "{% for m in messages %}{% if m.role == 'system' and not m.content.strip() %}{{ raise_exception('empty system') }}{% endif %}\
<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let cfg = serde_json::json!({"bos_token": {"content": "<s>"}, "eos_token": "</s>"});
    let msgs = [ChatMessage::new("system", "Be brief. "), ChatMessage::new("user", "2+2?")];
    let out = render_chat_template(chatml, &msgs, true, &cfg).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_bos =
        render_chat_template("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", &msgs, false, &cfg).unwrap();
    assert_eq!(with_bos, "<s>Be brief. </s>");
    let e = render_chat_template(chatml, &[ChatMessage::new("system", "  ")], true, &cfg).unwrap_err();
    assert!(e.to_string().contains("empty system"), "{e}");
    assert!(render_chat_template("{% for %}", &msgs, true, &cfg).unwrap_err().to_string().contains("does not parse"));
}

#[test]
fn char_tokenizer_round_trips_through_tokenizer_json() {
    let tok = ordo_model::tokenizer::char_tokenizer(
        "0123456789+*=;:{}ABQT\n",
        &["<pad>", "<eos>"],
        Some("<eos>"),
        Some("<pad>"),
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 2 + 22);
    let ids = tok.encode_strict("Q:2+3;{2+3=5}A:5<eos>").unwrap();
    assert_eq!(ids.len(), "Q:2+3;{2+3=5}A:5".len() + 1, "one id per character plus the special token");
    assert_eq!(*ids.last().unwrap(), 1);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Q:2+3;{2+3=5}A:5<eos>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "Q:2+3;{2+3=5}A:5");
    let dir = tempfile::tempdir().unwrap();
    tok.save_to_dir(dir.path()).unwrap();
    let back = ordo_model::TextTokenizer::from_dir(dir.path()).unwrap().unwrap();
    assert_eq!(back.encode_strict("Q:2+3;{2+3=5}A:5<eos>").unwrap(), ids);
    assert_eq!(back.special_token("eos_token").as_deref(), Some("<eos>"));
    let e = tok.encode_strict("Q:2-3").unwrap_err().to_string();
    assert!(e.contains("\"-\" is not in the vocabulary"), "{e}");
}
