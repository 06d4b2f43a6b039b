//! The CPU sampling path against the tensor path: logits at every step, ragged rows, every family switch.

mod common;
use candle_core::{Device, Tensor};
use common::*;
use ordo_model::decoder::ids_tensor;
use ordo_model::{sampler, Decoder, OpPath, ParamStore, SamplingParams, SamplingPath};

/// The full-sequence logits of `row` alone at its last position (the tensor path, no cache).
fn last_logits_alone(dec: &Decoder, row: &[u32]) -> Vec<f32> {
    let full = dec.forward(&ids_tensor(&[row.to_vec()], &Device::Cpu).unwrap(), None, OpPath::Differentiable).unwrap();
    let t = row.len();
    full.narrow(1, t - 1, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Feeds two rows raggedly (different prefill lengths, a step where one row rests, multi-token
/// chunks after single tokens) and checks each returned row of logits against the full forward.
fn check_cpu_path(dec: &Decoder, rows: &[Vec<u32>; 2], what: &str) {
    let cpu = dec.cpu_decoder().unwrap().expect("a CPU f32 decoder has the CPU path");
    let vocab = cpu.vocab();
    let mut cache = cpu.cache(2, 16);
    // (row 0 chunk length, row 1 chunk length); 0 = not fed this step.
    let schedule = [(5usize, 3usize), (1, 1), (0, 2), (1, 0), (3, 1), (1, 1)];
    let mut seen = [0usize, 0usize];
    for (s, &(a, b)) in schedule.iter().enumerate() {
        let mut feed: Vec<(usize, &[u32])> = Vec::new();
        for (r, n) in [(0, a), (1, b)] {
            if n > 0 {
                feed.push((r, &rows[r][seen[r]..seen[r] + n]));
            }
        }
        let logits = cpu.step(&mut cache, &feed).unwrap();
        assert_eq!(logits.len(), feed.len() * vocab);
        for (k, &(r, chunk)) in feed.iter().enumerate() {
            seen[r] += chunk.len();
            assert_eq!(cache.len(r), seen[r]);
            let want = last_logits_alone(dec, &rows[r][..seen[r]]);
            let err = max_diff(&logits[k * vocab..(k + 1) * vocab], &want);
            assert!(err < 1e-4, "{what}: step {s} row {r} after {} tokens: max |diff| {err}", seen[r]);
        }
    }
}

#[test]
fn cpu_path_logits_equal_the_full_forward_on_both_fixtures() {
    for name in FAMILIES {
        let m = ordo_model::load(&hf_fixture(name), &Device::Cpu).unwrap();
        let dec = Decoder::new_inference(&m.config, &m.params).unwrap();
        let ids = rows_u32(&reference(name)["input_ids"]);
        let rows = [ids[0].iter().chain(&ids[1]).copied().collect(), ids[1].iter().chain(&ids[0]).copied().collect()];
        check_cpu_path(&dec, &rows, name);
    }
}

/// Random models with the switches the fixtures do not cover: q/k/v biases (Qwen2), q/k/v and o
/// biases (Llama `attention_bias`), grouped-query attention, Llama 3.1 rope scaling, untied head.
#[test]
fn cpu_path_covers_biases_grouped_queries_and_rope_scaling() {
    for (model_type, extra, biases) in
        [("qwen2", serde_json::json!({}), 2 * 3), ("llama", serde_json::json!({ "attention_bias": true }), 2 * 4)]
    {
        let cfg = switches_config(model_type, &extra);
        assert!(cfg.qkv_bias && cfg.kv_groups() == 2 && cfg.rope_scaling.is_some());
        let params = ParamStore::init(&cfg, 0.3, 5, &Device::Cpu).unwrap();
        // Biases start at zero; give them values so that a dropped bias shows.
        let mut set = 0;
        for (name, var) in params.iter() {
            if name.ends_with(".bias") {
                var.set(&Tensor::randn(0f32, 0.5, var.as_tensor().dims(), &Device::Cpu).unwrap()).unwrap();
                set += 1;
            }
        }
        assert_eq!(set, biases, "{model_type}: bias count");
        let dec = Decoder::new_inference(&cfg, &params).unwrap();
        let rows = [(0..14u32).map(|i| (i * 7 + 3) % 50).collect(), (0..14u32).map(|i| (i * 11 + 1) % 50).collect()];
        check_cpu_path(&dec, &rows, model_type);
    }
}

#[test]
fn cpu_and_tensor_paths_sample_the_same_tokens() {
    for name in FAMILIES {
        let m = ordo_model::load(&hf_fixture(name), &Device::Cpu).unwrap();
        let dec = Decoder::new_inference(&m.config, &m.params).unwrap();
        // Repeated prompts (as in a GRPO group) share their prefill on the CPU path.
        let prompts =
            vec![vec![5u32, 17, 42], vec![9u32, 8, 7, 6, 5, 4, 3], vec![1u32], vec![5u32, 17, 42], vec![1u32]];
        for params in [
            SamplingParams::greedy(16),
            SamplingParams { temperature: 0.8, top_p: Some(0.9), seed: 4, ..SamplingParams::greedy(16) },
        ] {
            let auto = sampler::generate_on(&dec, &prompts, &params, SamplingPath::Auto).unwrap();
            let tensor = sampler::generate_on(&dec, &prompts, &params, SamplingPath::Tensor).unwrap();
            assert_eq!(auto, tensor, "{name} {params:?}");
        }
        // A stop token ends its row on both paths while the others go on.
        let first = sampler::generate(&dec, &prompts, &SamplingParams::greedy(16)).unwrap();
        let stop = SamplingParams { stop_tokens: vec![first[1][2]], ..SamplingParams::greedy(16) };
        let auto = sampler::generate_on(&dec, &prompts, &stop, SamplingPath::Auto).unwrap();
        assert_eq!(auto, sampler::generate_on(&dec, &prompts, &stop, SamplingPath::Tensor).unwrap());
        assert!(auto[1].len() <= 3, "{name}: row 1 should stop at its stop token");
    }
}

#[test]
fn cpu_path_rejects_overflow_and_bad_feeds() {
    let m = ordo_model::load(&hf_fixture("llama-tiny"), &Device::Cpu).unwrap();
    let dec = Decoder::new_inference(&m.config, &m.params).unwrap();
    let cpu = dec.cpu_decoder().unwrap().unwrap();
    let mut cache = cpu.cache(2, 4);
    let err = cpu.step(&mut cache, &[(0, &[1, 2, 3, 4, 5])]).unwrap_err().to_string();
    assert!(err.contains("would hold 5 tokens"), "{err}");
    let err = cpu.step(&mut cache, &[(2, &[1])]).unwrap_err().to_string();
    assert!(err.contains("beyond the cache"), "{err}");
    let err = cpu.step(&mut cache, &[(0, &[1]), (0, &[2])]).unwrap_err().to_string();
    assert!(err.contains("one non-empty chunk"), "{err}");
    let err = cpu.step(&mut cache, &[(0, &[100_000])]).unwrap_err().to_string();
    assert!(err.contains("out of the vocabulary"), "{err}");
    assert_eq!(cache.len(0), 0, "a rejected step caches nothing");
}

/// A decoder's CPU path copies the weights once, at first use, and shares that copy between its
/// calls (its training passes included); a decoder built after an optimiser step updated the
/// parameters in place sees the new weights, on the CPU path as on the tensor path.
#[test]
fn cpu_path_copies_weights_once_per_decoder() {
    let m = ordo_model::load(&hf_fixture("llama-tiny"), &Device::Cpu).unwrap();
    let dec = Decoder::new(&m.config, &m.params).unwrap();
    let view = dec.cpu_decoder().unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(&view, &dec.cpu_decoder().unwrap().unwrap()), "one copy per decoder");
    let prompts = vec![vec![5u32, 17, 42], vec![9u32, 8, 7]];
    let greedy = SamplingParams::greedy(12);
    let before = sampler::generate(&dec, &prompts, &greedy).unwrap();
    for (_, var) in m.params.iter() {
        let t = var.as_tensor();
        var.set(&(t + Tensor::randn(0f32, 0.5, t.dims(), &Device::Cpu).unwrap()).unwrap()).unwrap();
    }
    assert_eq!(sampler::generate(&dec, &prompts, &greedy).unwrap(), before, "the decoder keeps its snapshot");
    let fresh = Decoder::new(&m.config, &m.params).unwrap();
    let after = sampler::generate_on(&fresh, &prompts, &greedy, SamplingPath::Auto).unwrap();
    assert_eq!(after, sampler::generate_on(&fresh, &prompts, &greedy, SamplingPath::Tensor).unwrap());
    assert_ne!(before, after, "perturbed weights should change 24 greedy tokens");
}

/// A shared prefill gives every row the logits and the cache that feeding it alone would.
#[test]
fn shared_prefill_equals_separate_prefills_bit_for_bit() {
    let m = ordo_model::load(&hf_fixture(FAMILIES[0]), &Device::Cpu).unwrap();
    let cpu = Decoder::new_inference(&m.config, &m.params).unwrap().cpu_decoder().unwrap().unwrap();
    let (a, b) = (vec![5u32, 17, 42, 8], vec![9u32, 8, 7]);
    let feed: Vec<(usize, &[u32])> = vec![(0, &a), (1, &b), (2, &a), (3, &a)];
    let mut shared = cpu.cache(4, 16);
    let mut separate = cpu.cache(4, 16);
    let got = cpu.prefill(&mut shared, &feed).unwrap();
    let mut want = Vec::new();
    for f in &feed {
        want.extend(cpu.step(&mut separate, &[*f]).unwrap());
    }
    assert_eq!(got, want);
    for r in 0..4 {
        assert_eq!(shared.len(r), separate.len(r));
    }
    // The copied caches carry on identically.
    let next: Vec<(usize, &[u32])> = vec![(0, &[3]), (2, &[3]), (3, &[4])];
    assert_eq!(cpu.step(&mut shared, &next).unwrap(), cpu.step(&mut separate, &next).unwrap());
    assert!(cpu.prefill(&mut shared, &feed).is_err(), "a prefill needs empty caches");
}
