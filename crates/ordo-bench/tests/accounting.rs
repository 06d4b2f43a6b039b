//! Accounting of `ordo bench`: the peak-RSS probe, the bytes a step needs and the FLOPs it does.

use ordo_bench::measure::{peak_rss_bytes, reset_peak_rss};
use ordo_bench::stages::{grpo_phase_flops, stage_step_flops, Shapes};
use ordo_model::flops::{forward_flops, sampling_flops, step_memory_bytes, training_step_flops};
use ordo_model::ModelConfig;

#[test]
fn peak_rss_sees_a_large_allocation_and_resets() {
    if !reset_peak_rss() {
        #[cfg(target_os = "linux")]
        panic!("Linux exposes /proc/self/clear_refs");
        #[cfg(not(target_os = "linux"))]
        return;
    }
    let before = peak_rss_bytes().unwrap();
    let big = std::hint::black_box(vec![1u8; 200 << 20]);
    let during = peak_rss_bytes().unwrap();
    assert!(during >= before + (150 << 20), "{before} -> {during}");
    drop(big);
    assert!(reset_peak_rss());
    let after = peak_rss_bytes().unwrap();
    assert!(after + (150 << 20) <= during, "the peak resets: {during} -> {after}");
}

#[test]
fn step_memory_by_hand() {
    let cfg = ModelConfig::bench();
    let p = cfg.parameter_count() as f64;
    // No tokens: parameters, gradients and two AdamW moments (f32); a reference adds its parameters.
    assert_eq!(step_memory_bytes(&cfg, 0, 0, false), 16.0 * p);
    assert_eq!(step_memory_bytes(&cfg, 0, 0, true), 20.0 * p);
    // One sequence of one token: per layer 7 h + 4 i (computed) + 3 h (its slot), plus 2 vocab, in f32.
    let per_token = 4.0 * ((10.0 * 256.0 + 4.0 * 1024.0) * 4.0 + 2.0 * 512.0);
    assert_eq!(step_memory_bytes(&cfg, 1, 1, false), 16.0 * p + per_token);
    // Two slots sharing one computed token (two rows of one identical token): the slot part twice.
    let per_slot = 4.0 * (3.0 * 256.0 * 4.0 + 2.0 * 512.0);
    assert_eq!(step_memory_bytes(&cfg, 1, 2, false), 16.0 * p + per_token + per_slot);
}

#[test]
fn flops_by_hand() {
    let cfg = ModelConfig::bench();
    // Per token, per layer: q, k, v, o (4 x 256 x 256) and the MLP (3 x 256 x 1024); then the head 256 x 512.
    let params = 4.0 * (4.0 * 256.0 * 256.0 + 3.0 * 256.0 * 1024.0) + 256.0 * 512.0;
    assert_eq!(params, 4_325_376.0);
    // One query against k keys: scores and weighted sum, 2 multiply-adds per key and head width, 4 heads x 4 layers.
    let attention = |keys: f64| 2.0 * 2.0 * 16.0 * 64.0 * keys;
    assert_eq!(forward_flops(&cfg, 1, 1, 1), 2.0 * params + attention(1.0));
    // Three computed tokens (a shared prefix) on a 2 x 2 grid: attention per slot, over all 2 keys.
    assert_eq!(forward_flops(&cfg, 3, 2, 2), 3.0 * 2.0 * params + 4.0 * attention(2.0));
    // The bench step: 16 x 128 tokens, forward and backward.
    assert_eq!(training_step_flops(&cfg, 16, 128), 3.0 * (2048.0 * 2.0 * params + 2048.0 * attention(128.0)));
    assert_eq!(training_step_flops(&cfg, 16, 128), 56_371_445_760.0);
    // Two rows from one 1-token prompt, two new tokens each: the prompt once, then caches of 2 and 3 keys.
    let decode = |keys: f64| 2.0 * (2.0 * params + attention(keys));
    assert_eq!(sampling_flops(&cfg, 1, 2, 1, 2), forward_flops(&cfg, 1, 1, 1) + decode(2.0) + decode(3.0));
    // The stages: SFT is the bench step; DPO trains 8 x 64 + 16 x 64 positions on a 16 x 128 grid, four
    // forward passes' worth (policy forward and backward, reference forward); GRPO is its phases.
    let [sft, dpo, grpo] = stage_step_flops(&cfg, &Shapes::bench(), None, 64.0);
    assert_eq!(sft, training_step_flops(&cfg, 16, 128));
    assert_eq!(dpo, 4.0 * (1536.0 * 2.0 * params + 2048.0 * attention(128.0)));
    let [sampling, reference, update] = grpo_phase_flops(&cfg, &Shapes::bench(), None, 64.0);
    assert_eq!(reference, (8.0 * 16.0 + 64.0 * 64.0) * 2.0 * params + 64.0 * 80.0 * attention(80.0));
    assert_eq!(update, 3.0 * reference);
    assert_eq!(sampling, sampling_flops(&cfg, 8, 64, 16, 64));
    assert_eq!(grpo, sampling + reference + update);
}

#[test]
fn lora_flops_by_hand() {
    use ordo_model::flops::{adapter_params, lora_training_flops};
    let cfg = ModelConfig::bench();
    let params = 4_325_376.0;
    let attention = |keys: f64| 2.0 * 2.0 * 16.0 * 64.0 * keys;
    // Rank 2 on q_proj (256 x 256) and down_proj (256 x 1024): 2 x (256 + 256) + 2 x (256 + 1024) per layer.
    let lora = ordo_model::lora::LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "down_proj".into()],
    };
    let adapters = 4.0 * (2.0 * 512.0 + 2.0 * 1280.0);
    assert_eq!(adapter_params(&cfg, &lora), adapters);
    // One token: the forward (2 per weight), the input's gradient (2 per weight), no weight gradient, and
    // the adapters' forward and backward (6 per adapter weight); attention forward and backward.
    let want = 2.0 * params + 2.0 * params + 3.0 * attention(1.0) + 6.0 * adapters;
    assert_eq!(lora_training_flops(&cfg, &lora, 1, 1, 1), want);
    // The stages with LoRA: SFT is that step on 8 x 128 tokens (the real shapes); DPO adds the base's forward.
    let s = Shapes::real();
    let [sft, dpo, _] = stage_step_flops(&cfg, &s, Some(&lora), 64.0);
    assert_eq!(sft, lora_training_flops(&cfg, &lora, 1024, 8, 128));
    let dpo_tokens = 4 * 64 + 8 * 64;
    assert_eq!(dpo, lora_training_flops(&cfg, &lora, dpo_tokens, 8, 128) + forward_flops(&cfg, dpo_tokens, 8, 128));
    assert!(sft < stage_step_flops(&cfg, &s, None, 64.0)[0], "LoRA skips the frozen weights' gradients");
    // Memory with LoRA: the base once (f32), the adapters with gradients and two moments, activations.
    let p = cfg.parameter_count() as f64;
    let activations = step_memory_bytes(&cfg, 3, 4, false) - 16.0 * p;
    assert_eq!(ordo_model::flops::lora_step_memory_bytes(&cfg, &lora, 3, 4), 4.0 * p + 16.0 * adapters + activations);
}
