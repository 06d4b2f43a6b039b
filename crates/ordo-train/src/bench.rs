//! `ordo bench engine`: training-step and sampling speed of the engine, against sgemm measured in the same run.

use crate::optim::{AdamW, AdamWConfig, Gradients};
use candle_core::{Device, Result, Tensor};
use ordo_model::decoder::ids_tensor;
use ordo_model::{ops, sampler, Decoder, ModelConfig, OpPath, ParamStore, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The bench model: d_model 256, 4 layers, 4 heads, MLP 1024, vocab 512 (Llama layout, untied head).
pub fn bench_config() -> ModelConfig {
    let v = serde_json::json!({
        "model_type": "llama", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 1024,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    });
    ModelConfig::from_json(&v, "bench model").expect("the bench config is valid")
}

/// Multiply-add FLOPs of one training step (forward + backward = 3x forward) on `batch` x `seq` tokens:
/// every projection and the LM head, plus attention scores and their weighted sum.
pub fn training_step_flops(cfg: &ModelConfig, batch: usize, seq: usize) -> f64 {
    let tokens = (batch * seq) as f64;
    let (h, hd, i) = (cfg.hidden_size as f64, cfg.head_dim as f64, cfg.intermediate_size as f64);
    let (q, kv) = (cfg.num_attention_heads as f64 * hd, cfg.num_key_value_heads as f64 * hd);
    let per_layer_params = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
    let matmul_params = per_layer_params * cfg.num_hidden_layers as f64 + h * cfg.vocab_size as f64;
    let attention = 2.0 * 2.0 * batch as f64 * cfg.num_attention_heads as f64 * (seq * seq) as f64 * hd;
    3.0 * (2.0 * tokens * matmul_params + attention * cfg.num_hidden_layers as f64)
}

/// Figures of one engine benchmark run.
#[derive(Debug, Clone)]
pub struct EngineBench {
    pub batch: usize,
    pub seq: usize,
    pub step_ms: Vec<f64>,
    pub step_ms_median: f64,
    pub step_flops: f64,
    pub step_gflops: f64,
    pub sgemm_n: usize,
    pub sgemm_gflops: f64,
    pub sample_batch: usize,
    pub sample_new_tokens: usize,
    pub sample_tokens_per_s: f64,
}

/// Median of a list of timings.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// GFLOP/s of an `n` x `n` x `n` f32 matmul on `device` (best of `reps`).
pub fn sgemm_gflops(n: usize, reps: usize, device: &Device) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let _ = a.matmul(&b)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        device.synchronize()?;
        drop(c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Runs the engine benchmark: `steps` timed training steps (after one warm-up) and one sampling run.
pub fn bench_engine(steps: usize, device: &Device, progress: &mut dyn FnMut(&str)) -> Result<EngineBench> {
    let cfg = bench_config();
    let (batch, seq) = (16, 128);
    let params = ParamStore::init(&cfg, 0.02, 0, device).map_err(to_candle)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let rows: Vec<Vec<u32>> =
        (0..batch).map(|_| (0..seq).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()).collect();
    let ids = ids_tensor(&rows, device).map_err(to_candle)?;
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut step_ms = Vec::new();
    for s in 0..=steps {
        let t = Instant::now();
        let dec = Decoder::new(&cfg, &params).map_err(to_candle)?;
        let logits = dec.forward(&ids, None, OpPath::Differentiable).map_err(to_candle)?;
        let loss = ops::next_token_loss(&logits, &ids, None)?;
        let mut grads = Gradients::from_backward(&params, &loss.backward()?);
        grads.clip(1.0)?;
        opt.step(&params, &grads, 1e-3)?;
        device.synchronize()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if s > 0 {
            step_ms.push(ms);
        }
        progress(&format!("train step {s}/{steps}: {ms:.0} ms"));
    }
    let step_ms_median = median(&step_ms);
    let step_flops = training_step_flops(&cfg, batch, seq);

    progress("sampling");
    let (sample_batch, sample_new_tokens) = (16, 128);
    let prompts: Vec<Vec<u32>> = rows.iter().take(sample_batch).map(|r| r[..8].to_vec()).collect();
    let dec = Decoder::new_inference(&cfg, &params).map_err(to_candle)?;
    let sp = SamplingParams { temperature: 1.0, seed: 1, ..SamplingParams::greedy(sample_new_tokens) };
    let t = Instant::now();
    let out = sampler::generate(&dec, &prompts, &sp).map_err(to_candle)?;
    let secs = t.elapsed().as_secs_f64();
    let produced: usize = out.iter().map(Vec::len).sum();

    progress("sgemm baseline");
    let sgemm_n = 2048;
    let sgemm = sgemm_gflops(sgemm_n, 3, device)?;
    Ok(EngineBench {
        batch,
        seq,
        step_ms,
        step_ms_median,
        step_flops,
        step_gflops: step_flops / (step_ms_median / 1e3) / 1e9,
        sgemm_n,
        sgemm_gflops: sgemm,
        sample_batch,
        sample_new_tokens,
        sample_tokens_per_s: produced as f64 / secs,
    })
}

fn to_candle(e: ordo_model::ModelError) -> candle_core::Error {
    match e {
        ordo_model::ModelError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
