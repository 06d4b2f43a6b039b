//! `ordo bench stages`: seconds per step of SFT, DPO and GRPO on the bench model, against each step's
//! FLOP floor at the sgemm rate measured in the same run, and each stage's peak memory against its need.

use crate::measure::{median, peak_rss_bytes, reset_peak_rss, Sgemm};
use candle_core::Device;
use ordo_model::flops::{forward_flops, sampling_flops, step_memory_bytes, training_step_flops};
use ordo_model::{ModelConfig, ParamStore};
use ordo_train::batch::Policy;
use ordo_train::data::{TokenizedPair, TokenizedSequence};
use ordo_train::dpo::{train_dpo, DpoSettings};
use ordo_train::grpo::{train_grpo, GrpoConfig, GrpoSettings, PromptSet};
use ordo_train::lm::train_lm;
use ordo_train::losses::{PreferenceLoss, PreferenceLossConfig};
use ordo_train::rewards::{CotFormat, FnReward, RlPrompt, WeightedReward};
use ordo_train::trainer::{OptimConfig, StepLogger};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
) -> ordo_train::Result<StagesBench> {
    let cfg = ModelConfig::bench();
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
    let settings = DpoSettings { preference: loss, optim: optim(8), lora: None };
    train_dpo(&mut policy.clone_deep()?, &reference, &pairs, &settings, 0, 0, &mut log, None)?;
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
        proportion: 1.0.into(),
        rewards: vec![WeightedReward { source: Box::new(reward), weight: 1.0.into(), target: Default::default() }],
    }];
    let grpo = GrpoConfig {
        settings: GrpoSettings { group_size: 8, max_new_tokens: 64, optim: optim(8), ..Default::default() },
        stop_tokens: vec![],
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

/// Prints a run's figures: each stage's seconds, FLOPs, floor and ratio to it, GRPO's phases, and each
/// stage's peak memory against its need.
pub fn print(b: &StagesBench, device: &Device) {
    println!("ordo bench stages (bench model: d_model 256, 4 layers, 4 heads, MLP 1024, vocab 512; f32, {device:?})");
    let sgemm = b.sgemm_gflops.iter().cloned().fold(0.0, f64::max);
    let slowest = b.sgemm_gflops.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "median seconds per step over {} steps, after one warm-up step. A step's floor is its FLOPs, as ordo",
        b.steps
    );
    println!(
        "computes the step (shared prefixes once, no padding), at this run's fastest sgemm rate, {sgemm:.1} GFLOP/s"
    );
    println!("(2048^3 f32 matmul, measured before each stage and after the last; slowest {slowest:.1}):");
    println!("                                                 seconds    GFLOP    floor     of floor");
    let shapes =
        ["sft   16 x 128 tokens", "dpo   8 pairs x 128 tokens per side", "grpo  8 prompts x 8 samples x 64 new tokens"];
    let seconds = [b.sft_s, b.dpo_s, b.grpo_s];
    let floors: Vec<f64> = b.flops.iter().map(|f| f / (sgemm * 1e9)).collect();
    for k in 0..3 {
        println!(
            "  {:<45}  {:>6.3} s  {:>7.1}   {:>5.3} s   {:.2}x",
            shapes[k],
            seconds[k],
            b.flops[k] / 1e9,
            floors[k],
            seconds[k] / floors[k]
        );
    }
    println!(
        "  grpo's phases, at its median completion length ({:.1} new tokens per sample):",
        b.grpo_completion_length
    );
    for (k, phase) in ["sampling", "reference forward", "update"].iter().enumerate() {
        let floor = b.grpo_phase_flops[k] / (sgemm * 1e9);
        println!(
            "    {:<43}  {:>6.3} s  {:>7.1}   {:>5.3} s   {:.2}x",
            phase,
            b.grpo_phase_s[k],
            b.grpo_phase_flops[k] / 1e9,
            floor,
            b.grpo_phase_s[k] / floor
        );
    }
    println!(
        "peak resident memory per stage (whole process, peak reset before each stage) against what its step needs"
    );
    println!("(parameters + gradients + AdamW moments + reference + activations, f32; see ordo_model::flops::step_memory_bytes):");
    for (name, (rss, need)) in ["sft ", "dpo ", "grpo"].iter().zip(b.peak_rss.iter().zip(b.needed)) {
        match rss {
            Some(r) => println!(
                "  {name}  {:>8.1} MiB   needs {:>7.1} MiB   ratio {:.2}",
                *r as f64 / 1048576.0,
                need / 1048576.0,
                *r as f64 / need
            ),
            None => {
                println!("  {name}  not measurable here (no /proc/self/status)   needs {:.1} MiB", need / 1048576.0)
            }
        }
    }
}
