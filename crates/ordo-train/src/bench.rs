//! `ordo bench engine`: training-step and sampling speed of the engine, against sgemm measured in the same run.

use crate::batch::Policy;
use crate::data::{TokenizedPair, TokenizedSequence};
use crate::dpo::train_dpo;
use crate::grpo::{train_grpo, GrpoConfig, PromptSet};
use crate::lm::train_lm;
use crate::losses::{AdvantageEstimator, ClipConfig, LossAggregation, PreferenceLoss, PreferenceLossConfig};
use crate::optim::{AdamW, AdamWConfig, Gradients};
use crate::rewards::{CotFormat, FnReward, RlPrompt, WeightedReward};
use crate::trainer::{OptimConfig, StepLogger};
use candle_core::{Device, Result, Tensor};
use ordo_model::decoder::ids_tensor;
use ordo_model::{ops, sampler, Decoder, ModelConfig, ParamStore, SamplingParams, SamplingPath};
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
    /// Sampling throughput of `sampler::generate` (the CPU path on the CPU).
    pub sample_tokens_per_s: f64,
    /// The same sampling on the tensor path (candle ops, KV cache), measured in the same run.
    pub sample_tensor_tokens_per_s: f64,
    /// Rows x tokens of the organism's training step (its pretraining shape).
    pub organism_shape: (usize, usize),
    /// Median organism training step on the training pass, and through candle's graph (same run).
    pub organism_step_ms: f64,
    pub organism_graph_step_ms: f64,
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

/// Random token rows, `batch` x `seq`, below `vocab` (seeded).
fn random_rows(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..batch).map(|_| (0..seq).map(|_| rng.random_range(0..vocab as u32)).collect()).collect()
}

/// Milliseconds of each of `steps` training steps (forward, backward, clip, AdamW; after one warm-up)
/// of a fresh `cfg` model on `rows`: through the training pass (`Decoder::forward_train`, hand-written
/// on the CPU) or, with `graph`, through candle's graph (`Decoder::forward` and its backward pass).
pub fn train_step_ms(
    cfg: &ModelConfig,
    rows: &[Vec<u32>],
    steps: usize,
    graph: bool,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<f64>> {
    let params = ParamStore::init(cfg, 0.02, 0, device).map_err(to_candle)?;
    let ids = ids_tensor(rows, device).map_err(to_candle)?;
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut step_ms = Vec::new();
    for s in 0..=steps {
        let t = Instant::now();
        let dec = Decoder::new(cfg, &params).map_err(to_candle)?;
        let mut grads = if graph {
            let logits = dec.forward(&ids, None, ordo_model::OpPath::Differentiable).map_err(to_candle)?;
            Gradients::from_backward(&params, &ops::next_token_loss(&logits, &ids, None)?.backward()?)
        } else {
            let pass = dec.forward_train(&ids, None).map_err(to_candle)?;
            let loss = ops::next_token_loss(&pass.logits, &ids, None)?;
            Gradients::from_loss(&params, &pass, &loss).map_err(to_candle)?
        };
        grads.clip(1.0)?;
        opt.step(&params, &grads, 1e-3)?;
        device.synchronize()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if s > 0 {
            step_ms.push(ms);
        }
        progress(&format!("train step {s}/{steps}: {ms:.0} ms"));
    }
    Ok(step_ms)
}

/// Runs the engine benchmark: `steps` timed training steps (after one warm-up) of the bench model and
/// of `organism` (the world's model at its pretraining shape, on the training pass and on candle's
/// graph), and sampling (the median of three runs after a warm-up run, on the CPU path and on the
/// tensor path).
pub fn bench_engine(
    steps: usize,
    organism: &ModelConfig,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<EngineBench> {
    let cfg = bench_config();
    let (batch, seq) = (16, 128);
    let rows = random_rows(batch, seq, cfg.vocab_size);
    let step_ms = train_step_ms(&cfg, &rows, steps, false, device, progress)?;
    let step_ms_median = median(&step_ms);
    let (organism_batch, organism_seq) = (96, 64);
    let organism_rows = random_rows(organism_batch, organism_seq, organism.vocab_size);
    progress("organism training steps");
    let organism_step_ms = median(&train_step_ms(organism, &organism_rows, steps, false, device, progress)?);
    progress("organism training steps through candle's graph (baseline)");
    let organism_graph_step_ms = median(&train_step_ms(organism, &organism_rows, steps, true, device, progress)?);
    let step_flops = training_step_flops(&cfg, batch, seq);

    progress("sampling");
    let (sample_batch, sample_new_tokens) = (16, 128);
    let prompts: Vec<Vec<u32>> = rows.iter().take(sample_batch).map(|r| r[..8].to_vec()).collect();
    let params = ParamStore::init(&cfg, 0.02, 0, device).map_err(to_candle)?;
    let dec = Decoder::new_inference(&cfg, &params).map_err(to_candle)?;
    let sp = SamplingParams { temperature: 1.0, seed: 1, ..SamplingParams::greedy(sample_new_tokens) };
    // Median of three timed runs after one warm-up run, as for the training steps.
    let tokens_per_s = |path: SamplingPath| -> Result<f64> {
        let mut rates = Vec::new();
        for run in 0..4 {
            let t = Instant::now();
            let out = sampler::generate_on(&dec, &prompts, &sp, path).map_err(to_candle)?;
            let produced: usize = out.iter().map(Vec::len).sum();
            if run > 0 {
                rates.push(produced as f64 / t.elapsed().as_secs_f64());
            }
        }
        Ok(median(&rates))
    };
    let sample_tokens_per_s = tokens_per_s(SamplingPath::Auto)?;
    progress("sampling on the tensor path (baseline)");
    let sample_tensor_tokens_per_s = tokens_per_s(SamplingPath::Tensor)?;

    progress("sgemm baseline");
    let sgemm_n = 2048;
    let sgemm = sgemm_gflops(sgemm_n, 3, device)?;
    Ok(EngineBench {
        organism_shape: (organism_batch, organism_seq),
        organism_step_ms,
        organism_graph_step_ms,
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
        sample_tokens_per_s,
        sample_tensor_tokens_per_s,
    })
}

/// Seconds per step of each stage on the bench model (medians, after one warm-up step).
#[derive(Debug, Clone)]
pub struct StagesBench {
    pub steps: usize,
    /// SFT: 16 sequences x 128 tokens.
    pub sft_s: f64,
    /// DPO: 8 pairs x 128 tokens per side, reference forward included.
    pub dpo_s: f64,
    /// GRPO: 8 prompts x 8 samples x 64 new tokens (sampling, rewards, reference, update).
    pub grpo_s: f64,
    /// Peak resident memory of each stage (SFT, DPO, GRPO), when the platform reports it (Linux).
    pub peak_rss: [Option<u64>; 3],
    /// What each stage's step needs at least (bytes): see `step_memory_bytes`.
    pub needed: [f64; 3],
}

/// Peak resident memory since the last `reset_peak_rss`, from `/proc/self/status` (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident memory to the current one (Linux: `/proc/self/clear_refs`); false if unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes a training step needs at least, in f32: parameters, gradients and AdamW's two moments, a frozen
/// reference's parameters when there is one, and the activations of a batch of `slots` positions
/// (rows x padded length) of which `computed` are distinct real-token prefixes, the positions the
/// training pass computes (`ordo_model::cpu_train`: shared prefixes once, padding never). Per computed
/// token and layer about 7 x hidden + 4 x MLP width values (norms, projections, attention output, MLP,
/// and their gradients in the backward pass); per slot and layer 3 x hidden (q, k and v on attention's
/// padded grid; no attention probabilities, which the fused attention recomputes in its backward pass),
/// plus 2 x vocab per slot for the logits and their gradient.
pub fn step_memory_bytes(cfg: &ModelConfig, computed: usize, slots: usize, reference: bool) -> f64 {
    let p = cfg.parameter_count() as f64;
    let state = p * 4.0 * if reference { 5.0 } else { 4.0 };
    let (h, i, layers) = (cfg.hidden_size as f64, cfg.intermediate_size as f64, cfg.num_hidden_layers as f64);
    let per_computed = (7.0 * h + 4.0 * i) * layers;
    let per_slot = 3.0 * h * layers + 2.0 * cfg.vocab_size as f64;
    state + (computed as f64 * per_computed + slots as f64 * per_slot) * 4.0
}

/// Per-step seconds (after the first) from a logger's cumulative `seconds` field.
fn step_seconds(log: &StepLogger) -> Vec<f64> {
    let t: Vec<f64> = log.history.iter().map(|m| m["seconds"].as_f64().unwrap_or(0.0)).collect();
    t.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Times `steps` steps (plus one warm-up) of SFT, DPO and GRPO on the bench model.
///
/// Before each stage's peak is reset, `release_memory` asks the global allocator to hand the memory
/// it keeps for reuse back to the system (the binary's mimalloc: `mi_collect`); otherwise a stage's
/// peak starts at what the previous stage left resident and measures that stage, not its own.
pub fn bench_stages(
    steps: usize,
    device: &Device,
    progress: &mut dyn FnMut(&str),
    release_memory: &mut dyn FnMut(),
) -> crate::Result<StagesBench> {
    let cfg = bench_config();
    let policy = Policy { config: cfg.clone(), params: ParamStore::init(&cfg, 0.02, 0, device)? };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(2..cfg.vocab_size as u32)).collect() };
    let optim = |batch: usize| OptimConfig {
        steps: steps + 1,
        batch_size: batch,
        micro_batch_size: batch,
        lr: 1e-4,
        ..Default::default()
    };

    let mut peak_rss = [None; 3];
    release_memory();
    reset_peak_rss();
    progress("sft");
    let sft: Vec<TokenizedSequence> = (0..16)
        .map(|_| {
            let ids = tokens(128);
            let mut loss_mask = vec![0u8; 32];
            loss_mask.extend(vec![1u8; 96]);
            TokenizedSequence { ids, loss_mask }
        })
        .collect();
    let mut log = StepLogger::new("sft", steps + 1, None, false)?;
    train_lm(&mut policy.clone_deep()?, &sft, &optim(16), 0, 0, &mut log, None)?;
    let sft_s = median(&step_seconds(&log));
    peak_rss[0] = peak_rss_bytes();
    release_memory();
    reset_peak_rss();

    progress("dpo");
    let pairs: Vec<TokenizedPair> =
        (0..8).map(|_| TokenizedPair { prompt: tokens(64), chosen: tokens(64), rejected: tokens(64) }).collect();
    let loss = PreferenceLossConfig { loss: PreferenceLoss::Dpo, beta: 0.1, simpo_gamma: 0.0, length_normalize: false };
    let mut log = StepLogger::new("dpo", steps + 1, None, false)?;
    let reference = policy.frozen_copy()?;
    train_dpo(&mut policy.clone_deep()?, &reference, &pairs, &optim(8), &loss, 0, 0, &mut log, None)?;
    let dpo_s = median(&step_seconds(&log));
    peak_rss[1] = peak_rss_bytes();
    release_memory();
    reset_peak_rss();

    progress("grpo");
    // A tokenizer with one character per id, so completions decode to text the reward can read.
    let alphabet: String = (0..cfg.vocab_size as u32 - 2).filter_map(|i| char::from_u32(0x100 + i)).collect();
    let tok = ordo_model::tokenizer::char_tokenizer(&alphabet, &["<pad>", "<eos>"], Some("<eos>"), Some("<pad>"))?;
    let prompts: Vec<RlPrompt> = (0..8)
        .map(|_| {
            let ids = tokens(16);
            RlPrompt { text: tok.decode(&ids, false).unwrap_or_default(), ids, metadata: Default::default() }
        })
        .collect();
    let reward =
        FnReward::new("chars_below_u200", true, |_, s: &str| s.chars().filter(|&c| (c as u32) < 0x200).count() as f64);
    let sets = [PromptSet {
        name: "bench".into(),
        prompts,
        proportion: 1.0,
        rewards: vec![WeightedReward { source: Box::new(reward), weight: 1.0 }],
    }];
    let grpo = GrpoConfig {
        optim: optim(8),
        group_size: 8,
        max_new_tokens: 64,
        temperature: 1.0,
        top_p: None,
        top_k: None,
        stop_tokens: vec![],
        inner_epochs: 1,
        clip: ClipConfig { eps_low: 0.2, eps_high: 0.2, kl_coef: 0.02, aggregation: LossAggregation::SequenceMean },
        advantage: AdvantageEstimator::Grpo { scale_by_std: true },
        cot: CotFormat::default(),
    };
    let mut log = StepLogger::new("grpo", steps + 1, None, false)?;
    train_grpo(&mut policy.clone_deep()?, &reference, &sets, &tok, &grpo, 0, 0, &mut log, None)?;
    let grpo_s = median(&step_seconds(&log));
    peak_rss[2] = peak_rss_bytes();
    // Computed positions: SFT's 16 random rows share nothing; a DPO pair's two sides share their
    // 64-token prompt (8 x 64 + 16 x 64); a GRPO group's 8 samples share their 16-token prompt and
    // (random 64-token completions) almost never more: 8 x 16 + 64 x 64.
    let needed = [
        step_memory_bytes(&cfg, 16 * 128, 16 * 128, false),
        step_memory_bytes(&cfg, 8 * 64 + 16 * 64, 16 * 128, true),
        step_memory_bytes(&cfg, 8 * 16 + 64 * 64, 64 * 80, true),
    ];
    Ok(StagesBench { steps, sft_s, dpo_s, grpo_s, peak_rss, needed })
}

fn to_candle(e: ordo_model::ModelError) -> candle_core::Error {
    match e {
        ordo_model::ModelError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
