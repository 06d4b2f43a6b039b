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

/// Weights a token's per-token work multiplies by: every projection and the LM head.
fn matmul_params(cfg: &ModelConfig) -> f64 {
    let (h, hd, i) = (cfg.hidden_size as f64, cfg.head_dim as f64, cfg.intermediate_size as f64);
    let (q, kv) = (cfg.num_attention_heads as f64 * hd, cfg.num_key_value_heads as f64 * hd);
    let per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
    per_layer * cfg.num_hidden_layers as f64 + h * cfg.vocab_size as f64
}

/// Multiply-add FLOPs of attention's scores and weighted sums for one query against `keys` keys, all layers.
fn attention_flops(cfg: &ModelConfig, keys: f64) -> f64 {
    let heads = cfg.num_attention_heads as f64 * cfg.num_hidden_layers as f64;
    2.0 * 2.0 * heads * keys * cfg.head_dim as f64
}

/// Multiply-add FLOPs of a forward pass that runs the per-token work (projections, MLP, LM head) on
/// `tokens` positions and attention on `rows` rows of `seq` positions (each query against all `seq` keys,
/// as dense attention kernels compute it).
pub fn forward_flops(cfg: &ModelConfig, tokens: usize, rows: usize, seq: usize) -> f64 {
    2.0 * tokens as f64 * matmul_params(cfg) + (rows * seq) as f64 * attention_flops(cfg, seq as f64)
}

/// Multiply-add FLOPs of one training step (forward + backward = 3x forward) on `batch` x `seq` tokens.
pub fn training_step_flops(cfg: &ModelConfig, batch: usize, seq: usize) -> f64 {
    3.0 * forward_flops(cfg, batch * seq, batch, seq)
}

/// Multiply-add FLOPs of sampling `new_tokens` tokens in each of `rows` rows whose prompts have
/// `prompt_len` tokens, `distinct_prompts` of them (prefilled once each): per new token the per-token
/// work and attention over the cache so far.
pub fn sampling_flops(
    cfg: &ModelConfig,
    distinct_prompts: usize,
    rows: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> f64 {
    let prefill = forward_flops(cfg, distinct_prompts * prompt_len, distinct_prompts, prompt_len);
    let decode: f64 = (0..new_tokens)
        .map(|t| rows as f64 * (2.0 * matmul_params(cfg) + attention_flops(cfg, (prompt_len + t + 1) as f64)))
        .sum();
    prefill + decode
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

/// An `n` x `n` x `n` f32 matmul on random operands: the machine's sgemm rate, the engine's baseline.
pub struct Sgemm {
    a: Tensor,
    b: Tensor,
    device: Device,
}

impl Sgemm {
    /// Random `n` x `n` operands on `device`, multiplied once to warm up.
    pub fn new(n: usize, device: &Device) -> Result<Self> {
        let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
        let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
        let _ = a.matmul(&b)?;
        Ok(Self { a, b, device: device.clone() })
    }

    /// GFLOP/s of the faster of `reps` products.
    pub fn gflops(&self, reps: usize) -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let c = self.a.matmul(&self.b)?;
            self.device.synchronize()?;
            drop(c);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let n = self.a.dim(0)? as f64;
        Ok(2.0 * n.powi(3) / best / 1e9)
    }
}

/// Runs `a` and `b` alternately, `runs` times each after one discarded warm-up call of each, and returns
/// their results in pairs. This VM's speed drifts by tens of percent within minutes; a ratio taken
/// within each pair (then the median over pairs) compares the two under the same conditions.
pub fn interleaved(
    runs: usize,
    a: &mut dyn FnMut() -> Result<f64>,
    b: &mut dyn FnMut() -> Result<f64>,
) -> Result<Vec<(f64, f64)>> {
    a()?;
    b()?;
    (0..runs).map(|_| Ok((a()?, b()?))).collect()
}

/// Random token rows, `batch` x `seq`, below `vocab` (seeded).
fn random_rows(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..batch).map(|_| (0..seq).map(|_| rng.random_range(0..vocab as u32)).collect()).collect()
}

/// A fresh `cfg` model and its AdamW, trained step by step on fixed rows to time the step: through the
/// training pass (`Decoder::forward_train`, hand-written on the CPU) or, with `graph`, through candle's
/// graph (`Decoder::forward` and its backward pass).
pub struct TimedTraining {
    cfg: ModelConfig,
    params: ParamStore,
    ids: Tensor,
    opt: AdamW,
    graph: bool,
    device: Device,
}

impl TimedTraining {
    /// A model initialised with seed 0 and `rows` as its batch.
    pub fn new(cfg: &ModelConfig, rows: &[Vec<u32>], graph: bool, device: &Device) -> Result<Self> {
        let params = ParamStore::init(cfg, 0.02, 0, device).map_err(to_candle)?;
        let ids = ids_tensor(rows, device).map_err(to_candle)?;
        let opt = AdamW::new(AdamWConfig::default());
        Ok(Self { cfg: cfg.clone(), params, ids, opt, graph, device: device.clone() })
    }

    /// Milliseconds of one step: forward, backward, gradient clipping and AdamW.
    pub fn step_ms(&mut self) -> Result<f64> {
        let t = Instant::now();
        let dec = Decoder::new(&self.cfg, &self.params).map_err(to_candle)?;
        let mut grads = if self.graph {
            let logits = dec.forward(&self.ids, None, ordo_model::OpPath::Differentiable).map_err(to_candle)?;
            Gradients::from_backward(&self.params, &ops::next_token_loss(&logits, &self.ids, None)?.backward()?)
        } else {
            let pass = dec.forward_train(&self.ids, None).map_err(to_candle)?;
            let loss = ops::next_token_loss(&pass.logits, &self.ids, None)?;
            Gradients::from_loss(&self.params, &pass, &loss).map_err(to_candle)?
        };
        grads.clip(1.0)?;
        self.opt.step(&self.params, &grads, 1e-3)?;
        self.device.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Figures of one engine benchmark run. Each comparison is taken in pairs, subject and baseline run
/// alternately (`interleaved`); a ratio is the median of the pairs' ratios.
#[derive(Debug, Clone)]
pub struct EngineBench {
    pub batch: usize,
    pub seq: usize,
    /// Each timed training step of the bench model (ms) and the sgemm rate (GFLOP/s) measured just after it.
    pub step_ms: Vec<f64>,
    pub sgemm_gflops: Vec<f64>,
    pub step_flops: f64,
    /// Median over pairs of the step's GFLOP/s over the sgemm rate beside it.
    pub step_sgemm_ratio: f64,
    pub sgemm_n: usize,
    pub sample_batch: usize,
    pub sample_new_tokens: usize,
    /// Sampling throughput (tokens/s) of `sampler::generate` (the CPU path on the CPU), paired with the
    /// same sampling on the tensor path (candle ops, KV cache).
    pub sample_tokens_per_s: Vec<f64>,
    pub sample_tensor_tokens_per_s: Vec<f64>,
    /// Median over pairs of the CPU path's throughput over the tensor path's.
    pub sample_ratio: f64,
    /// Rows x tokens of the organism's training step (its pretraining shape).
    pub organism_shape: (usize, usize),
    /// Organism training steps (ms) on the training pass, each paired with one through candle's graph.
    pub organism_step_ms: Vec<f64>,
    pub organism_graph_step_ms: Vec<f64>,
    /// Median over pairs of the graph step's time over the training pass's.
    pub organism_speedup: f64,
}

/// Median of the ratios `f(a, b)` over `pairs`.
fn median_ratio(pairs: &[(f64, f64)], f: impl Fn(f64, f64) -> f64) -> f64 {
    median(&pairs.iter().map(|&(a, b)| f(a, b)).collect::<Vec<_>>())
}

/// Runs the engine benchmark, `steps` pairs of each comparison after one warm-up pair: training steps
/// of the bench model against sgemm (the faster of two 2048^3 products after each step), the organism
/// (the world's model at its pretraining shape) on the training pass against candle's graph, and
/// sampling on the CPU path against the tensor path.
pub fn bench_engine(
    steps: usize,
    organism: &ModelConfig,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<EngineBench> {
    let cfg = bench_config();
    let (batch, seq) = (16, 128);
    let rows = random_rows(batch, seq, cfg.vocab_size);
    let step_flops = training_step_flops(&cfg, batch, seq);
    let sgemm_n = 2048;
    progress("training steps of the bench model, each followed by sgemm (baseline)");
    let mut training = TimedTraining::new(&cfg, &rows, false, device)?;
    let sgemm = Sgemm::new(sgemm_n, device)?;
    let step_pairs = interleaved(steps, &mut || training.step_ms(), &mut || sgemm.gflops(2))?;
    let step_sgemm_ratio = median_ratio(&step_pairs, |ms, gflops| step_flops / (ms / 1e3) / 1e9 / gflops);

    let (organism_batch, organism_seq) = (96, 64);
    let organism_rows = random_rows(organism_batch, organism_seq, organism.vocab_size);
    progress("organism training steps, each followed by one through candle's graph (baseline)");
    let mut pass = TimedTraining::new(organism, &organism_rows, false, device)?;
    let mut graph = TimedTraining::new(organism, &organism_rows, true, device)?;
    let organism_pairs = interleaved(steps, &mut || pass.step_ms(), &mut || graph.step_ms())?;

    progress("sampling, each run followed by one on the tensor path (baseline)");
    let (sample_batch, sample_new_tokens) = (16, 128);
    let prompts: Vec<Vec<u32>> = rows.iter().take(sample_batch).map(|r| r[..8].to_vec()).collect();
    let params = ParamStore::init(&cfg, 0.02, 0, device).map_err(to_candle)?;
    let dec = Decoder::new_inference(&cfg, &params).map_err(to_candle)?;
    let sp = SamplingParams { temperature: 1.0, seed: 1, ..SamplingParams::greedy(sample_new_tokens) };
    let tokens_per_s = |path: SamplingPath| -> Result<f64> {
        let t = Instant::now();
        let out = sampler::generate_on(&dec, &prompts, &sp, path).map_err(to_candle)?;
        let produced: usize = out.iter().map(Vec::len).sum();
        Ok(produced as f64 / t.elapsed().as_secs_f64())
    };
    let sample_pairs = interleaved(steps.max(3), &mut || tokens_per_s(SamplingPath::Auto), &mut || {
        tokens_per_s(SamplingPath::Tensor)
    })?;
    Ok(EngineBench {
        batch,
        seq,
        step_ms: step_pairs.iter().map(|p| p.0).collect(),
        sgemm_gflops: step_pairs.iter().map(|p| p.1).collect(),
        step_flops,
        step_sgemm_ratio,
        sgemm_n,
        sample_batch,
        sample_new_tokens,
        sample_tokens_per_s: sample_pairs.iter().map(|p| p.0).collect(),
        sample_tensor_tokens_per_s: sample_pairs.iter().map(|p| p.1).collect(),
        sample_ratio: median_ratio(&sample_pairs, |cpu, tensor| cpu / tensor),
        organism_shape: (organism_batch, organism_seq),
        organism_step_ms: organism_pairs.iter().map(|p| p.0).collect(),
        organism_graph_step_ms: organism_pairs.iter().map(|p| p.1).collect(),
        organism_speedup: median_ratio(&organism_pairs, |pass, graph| graph / pass),
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
    /// Multiply-add FLOPs of each stage's step as ordo computes it (shared prefixes once, no padding):
    /// see `stage_step_flops`.
    pub flops: [f64; 3],
    /// The sgemm rate (GFLOP/s) measured before each stage and after the last. A step's floor is its
    /// FLOPs at the fastest of these: the least time this machine could take for them in this run.
    pub sgemm_gflops: [f64; 4],
    /// GRPO's median completion length over the timed steps (new tokens per sample).
    pub grpo_completion_length: f64,
    /// GRPO's median seconds in sampling, the reference forward and the update (forward, backward, AdamW).
    pub grpo_phase_s: [f64; 3],
    /// Multiply-add FLOPs of those three phases: see `grpo_phase_flops`.
    pub grpo_phase_flops: [f64; 3],
}

/// Multiply-add FLOPs of the bench GRPO step's sampling, reference forward and update, as ordo computes
/// them, with samples `completion_length` tokens long: 64 rows sampled from 8 distinct 16-token prompts;
/// then the prompts once and each sample's tokens, forward (reference) and forward and backward (update).
pub fn grpo_phase_flops(cfg: &ModelConfig, completion_length: f64) -> [f64; 3] {
    let len = completion_length.round() as usize;
    let forward = forward_flops(cfg, 8 * 16 + 64 * len, 64, 16 + len);
    [sampling_flops(cfg, 8, 64, 16, len), forward, 3.0 * forward]
}

/// Multiply-add FLOPs of each bench stage's step (SFT, DPO, GRPO) as ordo computes it, with GRPO's
/// samples `completion_length` tokens long: SFT trains 16 x 128 tokens; DPO trains the 8 pairs' shared
/// 64-token prompts once and their 2 x 8 64-token answers (policy forward and backward, reference
/// forward); GRPO samples 64 rows from 8 distinct 16-token prompts, then runs the reference forward
/// and the policy's forward and backward on the prompts once and each sample's tokens.
pub fn stage_step_flops(cfg: &ModelConfig, completion_length: f64) -> [f64; 3] {
    let sft = training_step_flops(cfg, 16, 128);
    let dpo = 4.0 * forward_flops(cfg, 8 * 64 + 16 * 64, 16, 128);
    [sft, dpo, grpo_phase_flops(cfg, completion_length).iter().sum()]
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
    // The sgemm rate before each stage and after the last; its operands are freed before the peak is reset.
    let mut sgemm_gflops = [0.0; 4];
    let sgemm = || Sgemm::new(2048, device)?.gflops(2);
    sgemm_gflops[0] = sgemm()?;
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
    sgemm_gflops[1] = sgemm()?;
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
    sgemm_gflops[2] = sgemm()?;
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
    sgemm_gflops[3] = sgemm()?;
    // The timed steps' medians of a logged metric (the first entry is the warm-up step).
    let logged = |key: &str| median(&log.history.iter().skip(1).filter_map(|m| m[key].as_f64()).collect::<Vec<_>>());
    let grpo_completion_length = logged("completion_length");
    let grpo_phase_s = ["seconds/sampling", "seconds/reference", "seconds/update"].map(logged);
    let grpo_phase_flops = grpo_phase_flops(&cfg, grpo_completion_length);
    // Computed positions: SFT's 16 random rows share nothing; a DPO pair's two sides share their
    // 64-token prompt (8 x 64 + 16 x 64); a GRPO group's 8 samples share their 16-token prompt and
    // (random 64-token completions) almost never more: 8 x 16 + 64 x 64.
    let needed = [
        step_memory_bytes(&cfg, 16 * 128, 16 * 128, false),
        step_memory_bytes(&cfg, 8 * 64 + 16 * 64, 16 * 128, true),
        step_memory_bytes(&cfg, 8 * 16 + 64 * 64, 64 * 80, true),
    ];
    let flops = stage_step_flops(&cfg, grpo_completion_length);
    Ok(StagesBench {
        steps,
        sft_s,
        dpo_s,
        grpo_s,
        peak_rss,
        needed,
        flops,
        sgemm_gflops,
        grpo_completion_length,
        grpo_phase_s,
        grpo_phase_flops,
    })
}

fn to_candle(e: ordo_model::ModelError) -> candle_core::Error {
    match e {
        ordo_model::ModelError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
