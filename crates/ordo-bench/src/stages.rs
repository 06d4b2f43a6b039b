//! `ordo bench stages` and `ordo bench real`: seconds per step of SFT, DPO and GRPO (on the bench model,
//! or on a real checkpoint with and without LoRA), against each step's FLOP floor at the sgemm rate
//! measured in the same run, and each stage's peak memory against its need.

use crate::measure::{median, peak_rss_bytes, reset_peak_rss, Sgemm};
use candle_core::Device;
use ordo_model::flops::{
    adapter_params, forward_flops, lora_step_memory_bytes, lora_training_flops, sampling_flops, step_memory_bytes,
};
use ordo_model::lora::LoraConfig;
use ordo_model::{ModelConfig, ParamStore, TextTokenizer};
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

/// The step shapes a stages benchmark times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shapes {
    /// SFT: rows x tokens, the first `sft_prompt` of each masked out of the loss.
    pub sft_rows: usize,
    pub sft_len: usize,
    pub sft_prompt: usize,
    /// DPO: pairs, each a shared prompt and two answers of these lengths.
    pub dpo_pairs: usize,
    pub dpo_prompt: usize,
    pub dpo_answer: usize,
    /// GRPO: prompts x samples each, prompts of `grpo_prompt` tokens, up to `grpo_new` new tokens.
    pub grpo_prompts: usize,
    pub grpo_group: usize,
    pub grpo_prompt: usize,
    pub grpo_new: usize,
}

impl Shapes {
    /// `ordo bench stages`: SFT 16 x 128, DPO 8 pairs x 128 per side, GRPO 8 prompts x 8 samples x 64.
    pub fn bench() -> Shapes {
        Shapes {
            sft_rows: 16,
            sft_len: 128,
            sft_prompt: 32,
            dpo_pairs: 8,
            dpo_prompt: 64,
            dpo_answer: 64,
            grpo_prompts: 8,
            grpo_group: 8,
            grpo_prompt: 16,
            grpo_new: 64,
        }
    }

    /// `ordo bench real`: the shapes TRL was timed at on SmolLM2-135M (issue 21): SFT 8 x 128, DPO 4
    /// pairs x 128 per side, GRPO 4 prompts x 8 samples x 64 new tokens (32-token prompts).
    pub fn real() -> Shapes {
        Shapes { sft_rows: 8, dpo_pairs: 4, grpo_prompts: 4, grpo_prompt: 32, ..Shapes::bench() }
    }

    /// Each stage's shape in words, for the printed table.
    fn describe(&self) -> [String; 3] {
        [
            format!("sft   {} x {} tokens", self.sft_rows, self.sft_len),
            format!("dpo   {} pairs x {} tokens per side", self.dpo_pairs, self.dpo_prompt + self.dpo_answer),
            format!("grpo  {} prompts x {} samples x {} new tokens", self.grpo_prompts, self.grpo_group, self.grpo_new),
        ]
    }
}

/// Seconds per step of each stage (medians, after one warm-up step).
#[derive(Debug, Clone)]
pub struct StagesBench {
    pub steps: usize,
    pub shapes: Shapes,
    /// The adapters trained instead of every weight, if any.
    pub lora: Option<LoraConfig>,
    pub sft_s: f64,
    /// DPO, reference forward included.
    pub dpo_s: f64,
    /// GRPO (sampling, rewards, reference, update).
    pub grpo_s: f64,
    /// Peak resident memory of each stage (SFT, DPO, GRPO), when the platform reports it (Linux).
    pub peak_rss: [Option<u64>; 3],
    /// What each stage's step needs at least (bytes): see `step_memory_bytes`.
    pub needed: [f64; 3],
    /// Multiply-add FLOPs of each stage's step as ordo computes it (shared prefixes once, no padding;
    /// with LoRA no frozen weight's gradient): see `stage_step_flops`.
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

/// A training pass's multiply-add FLOPs on a forward pass of `forward_flops(tokens, rows, seq)`: 3x
/// forward, or with LoRA the adapters' step without the frozen weights' gradients.
fn training_flops(cfg: &ModelConfig, lora: Option<&LoraConfig>, tokens: usize, rows: usize, seq: usize) -> f64 {
    match lora {
        None => 3.0 * forward_flops(cfg, tokens, rows, seq),
        Some(l) => lora_training_flops(cfg, l, tokens, rows, seq),
    }
}

/// Multiply-add FLOPs of a GRPO step's sampling, reference forward and update, as ordo computes them,
/// with samples `completion_length` tokens long: the rows sampled from the distinct prompts (with LoRA
/// each new token also through the adapters); then the prompts once and each sample's tokens, forward
/// (the reference: the base) and forward and backward (the update).
pub fn grpo_phase_flops(cfg: &ModelConfig, s: &Shapes, lora: Option<&LoraConfig>, completion_length: f64) -> [f64; 3] {
    let len = completion_length.round() as usize;
    let rows = s.grpo_prompts * s.grpo_group;
    let tokens = s.grpo_prompts * s.grpo_prompt + rows * len;
    let adapters = lora.map_or(0.0, |l| 2.0 * adapter_params(cfg, l) * (rows * len) as f64);
    [
        sampling_flops(cfg, s.grpo_prompts, rows, s.grpo_prompt, len) + adapters,
        forward_flops(cfg, tokens, rows, s.grpo_prompt + len),
        training_flops(cfg, lora, tokens, rows, s.grpo_prompt + len),
    ]
}

/// Multiply-add FLOPs of each stage's step (SFT, DPO, GRPO) as ordo computes it, with GRPO's samples
/// `completion_length` tokens long: SFT trains its rows; DPO trains the pairs' shared prompts once and
/// their two answers (policy forward and backward, reference forward); GRPO is its phases.
pub fn stage_step_flops(cfg: &ModelConfig, s: &Shapes, lora: Option<&LoraConfig>, completion_length: f64) -> [f64; 3] {
    let sft = training_flops(cfg, lora, s.sft_rows * s.sft_len, s.sft_rows, s.sft_len);
    let (pairs, side) = (s.dpo_pairs, s.dpo_prompt + s.dpo_answer);
    let dpo_tokens = pairs * s.dpo_prompt + 2 * pairs * s.dpo_answer;
    let dpo = training_flops(cfg, lora, dpo_tokens, 2 * pairs, side) + forward_flops(cfg, dpo_tokens, 2 * pairs, side);
    [sft, dpo, grpo_phase_flops(cfg, s, lora, completion_length).iter().sum()]
}

/// Per-step seconds (after the first) from a logger's cumulative `seconds` field.
fn step_seconds(log: &StepLogger) -> Vec<f64> {
    let t: Vec<f64> = log.history.iter().map(|m| m["seconds"].as_f64().unwrap_or(0.0)).collect();
    t.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Times `steps` steps (plus one warm-up) of SFT, DPO and GRPO at `shapes` on a model (each stage on
/// its own copy; with `lora`, adapters drawn from seed 0 train on a frozen base, and the reference is
/// the base), decoding GRPO's samples with `tok` (None: a tokenizer of one character per id).
///
/// Before each stage's peak is reset, `release_memory` asks the global allocator to hand the memory
/// it keeps for reuse back to the system (the binary's mimalloc: `mi_collect`); otherwise a stage's
/// peak starts at what the previous stage left resident and measures that stage, not its own.
pub fn bench_stages(
    (config, params): (&ModelConfig, &ParamStore),
    tok: Option<&TextTokenizer>,
    (shapes, lora): (&Shapes, Option<&LoraConfig>),
    steps: usize,
    progress: &mut dyn FnMut(&str),
    release_memory: &mut dyn FnMut(),
) -> ordo_train::Result<StagesBench> {
    let policy = Policy { config: config.clone(), params: params.clone() };
    let (cfg, device, s) = (policy.config.clone(), policy.device(), shapes);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tokens = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(2..cfg.vocab_size as u32)).collect() };
    let optim = |batch: usize| OptimConfig {
        steps: steps + 1,
        batch_size: batch,
        micro_batch_size: batch,
        lr: 1e-4,
        ..Default::default()
    };
    // Each stage trains its own copy of the model, with adapters when LoRA is benchmarked.
    let stage_policy = || -> ordo_train::Result<Policy> {
        let mut p = policy.clone_deep()?;
        if let Some(l) = lora {
            p.params.add_lora(&cfg, l, 0)?;
        }
        Ok(p)
    };

    let mut peak_rss = [None; 3];
    // The sgemm rate before each stage and after the last; its operands are freed before the peak is reset.
    let mut sgemm_gflops = [0.0; 4];
    let sgemm = || Sgemm::new(2048, &device)?.gflops(2);
    sgemm_gflops[0] = sgemm()?;
    release_memory();
    reset_peak_rss();
    progress("sft");
    let sft: Vec<TokenizedSequence> = (0..s.sft_rows)
        .map(|_| {
            let ids = tokens(s.sft_len);
            let mut loss_mask = vec![0u8; s.sft_prompt];
            loss_mask.extend(vec![1u8; s.sft_len - s.sft_prompt]);
            TokenizedSequence { ids, loss_mask }
        })
        .collect();
    let mut log = StepLogger::new("sft", steps + 1, None, false)?;
    train_lm(&mut stage_policy()?, &sft, &optim(s.sft_rows), 0, 0, &mut log, None)?;
    let sft_s = median(&step_seconds(&log));
    peak_rss[0] = peak_rss_bytes();
    sgemm_gflops[1] = sgemm()?;
    release_memory();
    reset_peak_rss();

    progress("dpo");
    let pairs: Vec<TokenizedPair> = (0..s.dpo_pairs)
        .map(|_| TokenizedPair {
            prompt: tokens(s.dpo_prompt),
            chosen: tokens(s.dpo_answer),
            rejected: tokens(s.dpo_answer),
        })
        .collect();
    let loss = PreferenceLossConfig { loss: PreferenceLoss::Dpo, beta: 0.1, simpo_gamma: 0.0, length_normalize: false };
    let mut log = StepLogger::new("dpo", steps + 1, None, false)?;
    let mut dpo_policy = stage_policy()?;
    let reference = dpo_policy.frozen_copy()?;
    let settings = DpoSettings { preference: loss, optim: optim(s.dpo_pairs), lora: lora.cloned() };
    train_dpo(&mut dpo_policy, &reference, &pairs, &settings, 0, 0, &mut log, None)?;
    drop((dpo_policy, reference));
    let dpo_s = median(&step_seconds(&log));
    peak_rss[1] = peak_rss_bytes();
    sgemm_gflops[2] = sgemm()?;
    release_memory();
    reset_peak_rss();

    progress("grpo");
    // Without the model's tokenizer, one character per id, so completions decode to text the reward reads.
    let alphabet: String = (0..cfg.vocab_size as u32 - 2).filter_map(|i| char::from_u32(0x100 + i)).collect();
    let own;
    let tok = match tok {
        Some(t) => t,
        None => {
            own = ordo_model::tokenizer::char_tokenizer(&alphabet, &["<pad>", "<eos>"], Some("<eos>"), Some("<pad>"))?;
            &own
        }
    };
    let prompts: Vec<RlPrompt> = (0..s.grpo_prompts)
        .map(|_| {
            let ids = tokens(s.grpo_prompt);
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
        settings: GrpoSettings {
            group_size: s.grpo_group,
            max_new_tokens: s.grpo_new,
            optim: optim(s.grpo_prompts),
            lora: lora.cloned(),
            ..Default::default()
        },
        stop_tokens: vec![],
        cot: CotFormat::default(),
    };
    let mut log = StepLogger::new("grpo", steps + 1, None, false)?;
    let mut grpo_policy = stage_policy()?;
    let reference = grpo_policy.frozen_copy()?;
    train_grpo(&mut grpo_policy, &reference, &sets, tok, &grpo, 0, 0, &mut log, None)?;
    let grpo_s = median(&step_seconds(&log));
    peak_rss[2] = peak_rss_bytes();
    sgemm_gflops[3] = sgemm()?;
    // The timed steps' medians of a logged metric (the first entry is the warm-up step).
    let logged = |key: &str| median(&log.history.iter().skip(1).filter_map(|m| m[key].as_f64()).collect::<Vec<_>>());
    let grpo_completion_length = logged("completion_length");
    let grpo_phase_s = ["seconds/sampling", "seconds/reference", "seconds/update"].map(logged);
    let grpo_phase_flops = grpo_phase_flops(&cfg, s, lora, grpo_completion_length);
    // Computed positions: SFT's random rows share nothing; a DPO pair's two sides share their prompt; a
    // GRPO group's samples share their prompt and (random completions) almost never more.
    let rows = s.grpo_prompts * s.grpo_group;
    let need = |computed: usize, slots: usize, reference: bool| match lora {
        None => step_memory_bytes(&cfg, computed, slots, reference),
        Some(l) => lora_step_memory_bytes(&cfg, l, computed, slots),
    };
    let needed = [
        need(s.sft_rows * s.sft_len, s.sft_rows * s.sft_len, false),
        need(s.dpo_pairs * (s.dpo_prompt + 2 * s.dpo_answer), 2 * s.dpo_pairs * (s.dpo_prompt + s.dpo_answer), true),
        need(s.grpo_prompts * s.grpo_prompt + rows * s.grpo_new, rows * (s.grpo_prompt + s.grpo_new), true),
    ];
    let flops = stage_step_flops(&cfg, s, lora, grpo_completion_length);
    Ok(StagesBench {
        steps,
        shapes: *s,
        lora: lora.cloned(),
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
pub fn print(b: &StagesBench, model: &str, device: &Device) {
    let how = match &b.lora {
        None => "every weight trains".to_string(),
        Some(l) => format!("LoRA rank {} on {} (no frozen weight's gradient)", l.rank, l.targets.join(", ")),
    };
    println!("{model}; f32, {device:?}; {how}");
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
    let shapes = b.shapes.describe();
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
    println!("(parameters + gradients + AdamW moments + reference + activations, f32; with LoRA the base once and the");
    println!("adapters' state; see ordo_model::flops::step_memory_bytes and lora_step_memory_bytes):");
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
