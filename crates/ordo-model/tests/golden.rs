//! Bit-level goldens of the engine: hashes of the exact f32 bits of the CPU training pass (logits and
//! every gradient), the inference forward, greedy and sampled tokens, initialisation, and the bytes of
//! saved HF and GGUF checkpoints, on the fixtures and on switch configs, recorded in
//! `tests/golden/model.json`. A refactor of the engine must leave every hash as it is (results stay
//! bit-identical); a change that alters results on purpose re-records them with
//! `ORDO_BLESS=1 cargo test -p ordo-model --test golden`. The hashes hold for x86-64 with AVX2 and
//! FMA (the kernels' fast path); elsewhere the test says so and checks nothing.

mod common;
use candle_core::{DType, Device, Tensor, D};
use common::*;
use ordo_model::decoder::ids_tensor;
use ordo_model::{sampler, Decoder, ModelConfig, OpPath, ParamStore, SamplingParams};
use serde_json::{json, Map, Value};

const DEV: Device = Device::Cpu;

/// FNV-1a over bytes, as 16 hex digits.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn bits(t: &Tensor) -> String {
    let v = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    fnv(v.iter().flat_map(|x| x.to_bits().to_le_bytes()))
}

/// Rows with padding on either side, shared prefixes, and enough distinct tokens (over 64) that the
/// matrix products take their many-row kernels too.
fn batch(vocab: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut rows = Vec::new();
    let mut mask = Vec::new();
    for r in 0..12u32 {
        let row: Vec<u32> = (0..10u32).map(|i| (r * 7 + i * 3 + (r % 3) * i) % vocab).collect();
        let m: Vec<u32> = (0..10u32).map(|i| u32::from(!(r % 4 == 1 && i < 2 || r % 4 == 2 && i > 7))).collect();
        rows.push(row);
        mask.push(m);
    }
    rows[5] = rows[0].clone();
    rows[5][8] = (rows[5][8] + 1) % vocab;
    (rows, mask)
}

fn record(cfg: &ModelConfig, params: &ParamStore) -> Value {
    let mut out = Map::new();
    let (rows, mask) = batch(cfg.vocab_size as u32);
    let ids = ids_tensor(&rows, &DEV).unwrap();
    let mask_t = Tensor::new(mask.clone(), &DEV).unwrap();
    let real = mask_t.to_dtype(DType::F32).unwrap();
    let dec = Decoder::new(cfg, params).unwrap();
    let pass = dec.forward_train(&ids, Some(&mask_t)).unwrap();
    let masked = pass.logits.broadcast_mul(&real.unsqueeze(D::Minus1).unwrap()).unwrap();
    out.insert("train_logits".into(), json!(bits(&masked)));
    let n = pass.logits.elem_count();
    let w: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 2.0).collect();
    let loss = masked.mul(&Tensor::from_vec(w, pass.logits.dims(), &DEV).unwrap()).unwrap().sum_all().unwrap();
    let grads = pass.parameter_gradients(&loss.backward().unwrap()).unwrap();
    let mut g: Vec<(String, String)> = grads.iter().map(|(n, t)| (n.clone(), bits(t))).collect();
    g.sort();
    out.insert("gradients".into(), json!(fnv(g.iter().flat_map(|(n, h)| n.bytes().chain(h.bytes())))));
    let inference = Decoder::new_inference(cfg, params).unwrap();
    let logits = inference.forward(&ids, Some(&mask_t), OpPath::Inference).unwrap();
    out.insert(
        "inference_logits".into(),
        json!(bits(&logits.broadcast_mul(&real.unsqueeze(D::Minus1).unwrap()).unwrap())),
    );
    if cfg.score_labels.is_none() {
        let long: Vec<u32> = (0..40u32).map(|i| (i * 5 + 1) % cfg.vocab_size as u32).collect();
        let prompts = vec![vec![3u32, 4, 5], long, vec![3u32, 4, 6]];
        let greedy = sampler::generate(&inference, &prompts, &SamplingParams::greedy(8)).unwrap();
        let sampled = SamplingParams { temperature: 1.0, top_p: Some(0.9), seed: 3, ..SamplingParams::greedy(8) };
        let sampled = sampler::generate(&inference, &prompts, &sampled).unwrap();
        out.insert("greedy".into(), json!(greedy));
        out.insert("sampled".into(), json!(sampled));
    }
    let dir = tempfile::tempdir().unwrap();
    ordo_model::weights::save_hf_dir(&dir.path().join("m"), cfg, params, None, usize::MAX).unwrap();
    out.insert("safetensors".into(), json!(fnv(std::fs::read(dir.path().join("m/model.safetensors")).unwrap())));
    if cfg.score_labels.is_none() {
        let path = dir.path().join("m.gguf");
        ordo_model::gguf::save_gguf(&path, cfg, params, None, candle_core::quantized::GgmlDType::F32).unwrap();
        out.insert("gguf".into(), json!(fnv(std::fs::read(&path).unwrap())));
        let back = ordo_model::load(&path, &DEV).unwrap();
        let mut names: Vec<(String, String)> =
            back.params.iter().map(|(n, v)| (n.clone(), bits(v.as_tensor()))).collect();
        names.sort();
        out.insert("gguf_import".into(), json!(fnv(names.iter().flat_map(|(n, h)| n.bytes().chain(h.bytes())))));
    }
    Value::Object(out)
}

fn cases() -> Vec<(String, ModelConfig, ParamStore)> {
    let mut v = Vec::new();
    for name in FAMILIES {
        let m = ordo_model::load(&hf_fixture(name), &DEV).unwrap();
        v.push((name.to_string(), m.config, m.params));
    }
    for (label, model_type, extra) in [
        ("qwen2-switches", "qwen2", json!({})),
        ("llama-biases", "llama", json!({ "attention_bias": true })),
        ("qwen3-switches", "qwen3", json!({ "head_dim": 8 })),
        ("llama-classifier", "llama", json!({ "architectures": ["LlamaForSequenceClassification"], "num_labels": 1 })),
    ] {
        let cfg = switches_config(model_type, &extra);
        let params = ParamStore::init(&cfg, 0.3, 5, &DEV).unwrap();
        v.push((label.to_string(), cfg, params));
    }
    v
}

#[test]
fn engine_results_are_bit_identical_to_the_recorded_ones() {
    #[cfg(target_arch = "x86_64")]
    let fast = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    if !fast {
        eprintln!("golden: the recorded hashes are for x86-64 with AVX2 and FMA; not checked on this CPU");
        return;
    }
    let mut got = Map::new();
    for (name, cfg, params) in cases() {
        let mut r = record(&cfg, &params);
        r["init"] = json!(fnv(ParamStore::init(&cfg, 0.02, 7, &DEV)
            .unwrap()
            .iter()
            .flat_map(|(n, v)| n.clone().into_bytes().into_iter().chain(bits(v.as_tensor()).into_bytes()))
            .collect::<Vec<u8>>()));
        got.insert(name, r);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/model.json");
    if std::env::var_os("ORDO_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (name, w) in &want {
        let g = &got[name];
        for (k, wv) in w.as_object().unwrap() {
            assert_eq!(&g[k], wv, "{name}: {k} changed (see this file's doc comment)");
        }
    }
    assert_eq!(got.len(), want.len());
}
