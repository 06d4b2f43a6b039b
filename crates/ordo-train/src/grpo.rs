//! The `grpo` stage: group-relative policy optimisation (GRPO, Dr.GRPO, RLOO advantages) with a
//! clipped importance ratio over `mu` inner epochs and a k3 KL penalty to a frozen reference.
//!
//! One step: draw prompts from the prompt sets in their proportions, sample `group_size`
//! completions per prompt, score them with each set's rewards, turn rewards into group-relative
//! advantages, then take `inner_epochs` optimiser steps on the clipped objective.

use crate::batch::{mean_entropy, next_token_logps, scalar, train_logps, Batch, Policy};
use crate::error::{Result, TrainError};
use crate::losses::{clipped_policy_loss, group_advantages, AdvantageEstimator, ClipConfig, LossAggregation};
use crate::optim::Gradients;
use crate::rewards::{score_all, CotFormat, RewardTarget, RlPrompt, WeightedReward};
use crate::schedule::ValueSchedule;
use crate::settings::{choice, SettingsReader, MAX_SEQUENCE};
use crate::trainer::{end_step, start_state, Checkpointing, DataOrder, OptimConfig, Optimizer, StepLogger};
use candle_core::Tensor;
use ordo_model::{sampler, OpPath, SamplingParams, TextTokenizer};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// `max_new_tokens` when neither the stage nor its world sets one.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 48;

/// How per-token losses are averaged, by the names experiment files use (each name is kept as
/// written: it is part of the node key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over each sequence's tokens, then over sequences (the original GRPO).
    SequenceMean,
    /// The same as `sequence_mean`.
    Grpo,
    /// Sum over the batch's tokens over their number (DAPO).
    TokenMean,
    /// The same as `token_mean`.
    Dapo,
    /// The same as `token_mean`.
    Bnpo,
    /// Sum over the batch's tokens over batch size x `max_new_tokens` (Dr.GRPO).
    DrGrpo,
    /// The same as `dr_grpo`.
    Constant,
}

impl Aggregation {
    /// Every accepted name.
    pub const NAMES: [(&'static str, Aggregation); 7] = [
        ("sequence_mean", Aggregation::SequenceMean),
        ("grpo", Aggregation::Grpo),
        ("token_mean", Aggregation::TokenMean),
        ("dapo", Aggregation::Dapo),
        ("bnpo", Aggregation::Bnpo),
        ("dr_grpo", Aggregation::DrGrpo),
        ("constant", Aggregation::Constant),
    ];

    /// The loss's aggregation, with completions of at most `max_completion_len` tokens.
    pub fn to_loss(self, max_completion_len: usize) -> LossAggregation {
        match self {
            Aggregation::SequenceMean | Aggregation::Grpo => LossAggregation::SequenceMean,
            Aggregation::TokenMean | Aggregation::Dapo | Aggregation::Bnpo => LossAggregation::TokenMean,
            Aggregation::DrGrpo | Aggregation::Constant => LossAggregation::ConstantNormalizer { max_completion_len },
        }
    }
}

/// Settings of a `grpo` stage (`optim.batch_size` is the number of prompts per step).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrpoSettings {
    /// Completions sampled per prompt (G).
    pub group_size: usize,
    /// Most tokens sampled per completion.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (None: all).
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens (None: all).
    pub top_k: Option<usize>,
    /// Optimiser steps on each sampled batch (mu); the ratio is to the policy that sampled it.
    pub inner_epochs: usize,
    /// Lower clip range: the ratio is clipped below at `1 - clip_low`.
    pub clip_low: f64,
    /// Upper clip range: the ratio is clipped above at `1 + clip_high` (DAPO's clip-higher when larger).
    pub clip_high: f64,
    /// Coefficient of the k3 KL penalty to the reference (0 disables it; the KL is still reported).
    pub kl_coef: f64,
    /// How rewards become advantages within a group.
    pub advantage: AdvantageEstimator,
    /// How per-token losses are averaged.
    pub aggregation: Aggregation,
    pub optim: OptimConfig,
    /// Think-block delimiters, when the stage sets them (None: the world's, else `<think>` `</think>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cot: Option<CotFormat>,
    /// LoRA adapters to train instead of the whole model (None: full fine-tuning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<ordo_model::lora::LoraConfig>,
}

impl Default for GrpoSettings {
    /// G 8, [`DEFAULT_MAX_NEW_TOKENS`], temperature 1, no top-p or top-k, mu 1, clip 0.2 / 0.2, KL
    /// 0.02, GRPO advantages, sequence-mean aggregation, batch 16, lr 1e-4, the world's think block.
    fn default() -> Self {
        GrpoSettings {
            group_size: 8,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            temperature: 1.0,
            top_p: None,
            top_k: None,
            inner_epochs: 1,
            clip_low: 0.2,
            clip_high: 0.2,
            kl_coef: 0.02,
            advantage: AdvantageEstimator::Grpo { scale_by_std: true },
            aggregation: Aggregation::SequenceMean,
            optim: OptimConfig::default().with_batch_and_lr(16, 1e-4),
            cot: None,
            lora: None,
        }
    }
}

impl GrpoSettings {
    /// Reads the settings, each defaulting to [`GrpoSettings::default`]'s but `max_new_tokens`, which
    /// defaults to `default_max_new_tokens` (the world's longest completion).
    pub fn read(r: &mut dyn SettingsReader, default_max_new_tokens: usize) -> Self {
        let d = Self::default();
        let cot = match (r.string("cot_open"), r.string("cot_close")) {
            (None, None) => None,
            (Some(open), Some(close)) if !open.is_empty() && !close.is_empty() => Some(CotFormat { open, close }),
            _ => {
                let path = r.path().to_string();
                r.problem(format!("{path}: cot_open and cot_close go together and must not be empty"));
                None
            }
        };
        let advantage = choice(
            r,
            "advantage",
            &[
                ("grpo", AdvantageEstimator::Grpo { scale_by_std: true }),
                ("dr_grpo", AdvantageEstimator::Grpo { scale_by_std: false }),
                ("rloo", AdvantageEstimator::Rloo),
            ],
            d.advantage,
        );
        let aggregation = choice(r, "aggregation", &Aggregation::NAMES, d.aggregation);
        let group_size = r.count_max("group_size", Some(d.group_size), 1024);
        if group_size < 2 {
            let at = r.at("group_size");
            r.problem(format!(
                "{at}: expected at least 2 (advantages compare samples within a group), found {group_size}"
            ));
        }
        let max_new_tokens = r.count_max("max_new_tokens", Some(default_max_new_tokens), MAX_SEQUENCE);
        let temperature =
            r.number_where("temperature", d.temperature, "a number in (0, 10]", &|x| x > 0.0 && x <= 10.0);
        let top_p = r.opt_number("top_p");
        if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            let at = r.at("top_p");
            r.problem(format!("{at}: expected a number in (0, 1], found {p}"));
        }
        let top_k = r.opt_count("top_k");
        let inner_epochs = r.count_max("inner_epochs", Some(d.inner_epochs), 100);
        let clip_low = r.number_where("clip_low", d.clip_low, "a number in [0, 1)", &|x| (0.0..1.0).contains(&x));
        let clip_high = r.number_where("clip_high", d.clip_high, "a number in [0, 10]", &|x| (0.0..=10.0).contains(&x));
        let kl_coef = r.number_where("kl_coef", d.kl_coef, "a number in [0, 100]", &|x| (0.0..=100.0).contains(&x));
        let optim = OptimConfig::read(r, &d.optim);
        let lora = crate::settings::read_lora(r);
        GrpoSettings {
            group_size,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            inner_epochs,
            clip_low,
            clip_high,
            kl_coef,
            advantage,
            aggregation,
            optim,
            cot,
            lora,
        }
    }

    /// The clipped objective these settings define.
    pub fn clip(&self) -> ClipConfig {
        ClipConfig {
            eps_low: self.clip_low,
            eps_high: self.clip_high,
            kl_coef: self.kl_coef,
            aggregation: self.aggregation.to_loss(self.max_new_tokens),
        }
    }
}

/// A GRPO stage as it runs: its settings, and what the model and world add to them.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoConfig {
    pub settings: GrpoSettings,
    /// Tokens that end a completion (kept in it).
    pub stop_tokens: Vec<u32>,
    /// The think block's delimiters (the settings' own, else the world's or the default).
    pub cot: CotFormat,
}

/// Prompts with their rewards, drawn in a given proportion of each batch.
pub struct PromptSet {
    pub name: String,
    pub prompts: Vec<RlPrompt>,
    /// Share of each batch's prompts from this set (proportions are normalised over the sets at each
    /// step; a schedule changes it over the stage's steps).
    pub proportion: ValueSchedule,
    pub rewards: Vec<WeightedReward>,
}

/// How many prompts each set contributes to a batch of `n`: carried fractional quotas make the
/// long-run shares match the proportions exactly, with no randomness.
#[derive(Debug, Clone)]
pub struct SetAllocator {
    shares: Vec<f64>,
    /// Fractional quotas carried to the next batch (saved with step checkpoints).
    pub carry: Vec<f64>,
}

impl SetAllocator {
    /// An allocator for the given proportions.
    pub fn new(proportions: &[f64]) -> Result<Self> {
        let total: f64 = proportions.iter().sum();
        if proportions.is_empty() || proportions.iter().any(|p| p.is_nan() || *p < 0.0) || total <= 0.0 {
            return Err(TrainError::Config(format!(
                "prompt-set proportions must be >= 0 and not all 0, got {proportions:?}"
            )));
        }
        Ok(SetAllocator {
            shares: proportions.iter().map(|p| p / total).collect(),
            carry: vec![0.0; proportions.len()],
        })
    }

    /// New proportions for the batches from now on (the carried quotas stay).
    pub fn set_proportions(&mut self, proportions: &[f64]) -> Result<()> {
        self.shares = SetAllocator::new(proportions)?.shares;
        Ok(())
    }

    /// Counts per set for the next batch of `n` prompts.
    pub fn next(&mut self, n: usize) -> Vec<usize> {
        let want: Vec<f64> = self.shares.iter().zip(&self.carry).map(|(s, c)| s * n as f64 + c).collect();
        let mut counts: Vec<usize> = want.iter().map(|w| w.floor().max(0.0) as usize).collect();
        while counts.iter().sum::<usize>() < n {
            // Give the remaining slots to the largest fractional remainders (first on ties), among the
            // sets whose share is above 0 (a set a schedule switched off gets no prompt).
            let i = (0..want.len())
                .filter(|&i| self.shares[i] > 0.0)
                .max_by(|&a, &b| (want[a] - counts[a] as f64).total_cmp(&(want[b] - counts[b] as f64)).then(b.cmp(&a)))
                .expect("at least one set");
            counts[i] += 1;
        }
        for i in 0..want.len() {
            self.carry[i] = want[i] - counts[i] as f64;
        }
        counts
    }
}

/// How many of a completion's tokens belong to its think block: those up to and including the one
/// that completes the closing delimiter `close` (all of them when it never closes). The decoded
/// prefixes grow with the token count, so the first prefix that holds `close` is found by bisection.
pub fn cot_token_count(tokenizer: &TextTokenizer, completion: &[u32], close: &str) -> Result<usize> {
    let holds = |n: usize| -> Result<bool> { Ok(tokenizer.decode(&completion[..n], true)?.contains(close)) };
    if close.is_empty() || !holds(completion.len())? {
        return Ok(completion.len());
    }
    let (mut lo, mut hi) = (0, completion.len());
    // Invariant: the first `lo` tokens do not hold `close`, the first `hi` do.
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if holds(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// Per-token advantages `[rows, width]` laid out as [`Batch`]'s targets (`width` = padded length - 1):
/// row `r` is `rows[r]` = (prompt tokens, completion tokens, think-block tokens of the completion), and
/// its completion token `k` is predicted at position `prompt + k - 1` (a sequence's first token is
/// never a target). Elsewhere 0.
pub fn token_advantages(
    by_target: &[(RewardTarget, Vec<f64>)],
    rows: &[(usize, usize, usize)],
    width: usize,
) -> Vec<f32> {
    let mut per_token = vec![0f32; rows.len() * width];
    for (r, &(prompt, completion, cot_tokens)) in rows.iter().enumerate() {
        for k in 0..completion {
            if let Some(at) = (prompt + k).checked_sub(1) {
                per_token[r * width + at] = target_advantage(by_target, r, k < cot_tokens) as f32;
            }
        }
    }
    per_token
}

/// The advantage of completion `row`'s token, a think-block token (`cot`) or an output token: the
/// sum of the advantages of the targets that update it.
pub fn target_advantage(by_target: &[(RewardTarget, Vec<f64>)], row: usize, cot: bool) -> f64 {
    by_target
        .iter()
        .filter(|(t, _)| match t {
            RewardTarget::All => true,
            RewardTarget::Output => !cot,
            RewardTarget::Cot => cot,
        })
        .map(|(_, a)| a[row])
        .sum()
}

/// Mixes a seed and a step into a sampling seed.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Trains `policy` with GRPO on `sets`; `reference` anchors the KL term (also reported when its
/// coefficient is 0).
#[allow(clippy::too_many_arguments)]
pub fn train_grpo(
    policy: &mut Policy,
    reference: &Policy,
    sets: &[PromptSet],
    tokenizer: &TextTokenizer,
    cfg: &GrpoConfig,
    seed: u64,
    pad: u32,
    logger: &mut StepLogger,
    mut ckpt: Option<&mut Checkpointing>,
) -> Result<Optimizer> {
    let (s, clip) = (&cfg.settings, cfg.settings.clip());
    s.optim.validate()?;
    if s.group_size < 2 {
        return Err(TrainError::Config("group_size must be at least 2 (advantages are relative to the group)".into()));
    }
    if s.inner_epochs == 0 {
        return Err(TrainError::Config("inner_epochs (mu) must be at least 1".into()));
    }
    if let Some(s) = sets.iter().find(|s| s.prompts.is_empty()) {
        return Err(TrainError::Config(format!("prompt set `{}` is empty", s.name)));
    }
    let device = policy.device();
    let mut optim_cfg = s.optim.clone();
    optim_cfg.steps = s.optim.steps * s.inner_epochs;
    let steps = s.optim.steps;
    let proportions = |step: usize| -> Vec<f64> { sets.iter().map(|s| s.proportion.at(step, steps)).collect() };
    // Every step's proportions are checked before the first one trains (between breakpoints each is
    // constant or linear, so checking the breakpoints checks every step).
    let mut breakpoints: Vec<usize> = sets.iter().flat_map(|s| s.proportion.breakpoints(steps)).collect();
    breakpoints.sort_unstable();
    breakpoints.dedup();
    for step in breakpoints {
        SetAllocator::new(&proportions(step))
            .map_err(|e| TrainError::Config(format!("at step {step} of {steps}: {e}")))?;
    }
    let scheduled = sets.iter().any(|s| !s.proportion.is_constant());
    let mut alloc = SetAllocator::new(&proportions(0))?;
    let fresh: Vec<DataOrder> =
        sets.iter().enumerate().map(|(i, s)| DataOrder::new(s.prompts.len(), seed.wrapping_add(i as u64))).collect();
    let (mut opt, mut orders, carry, start) = start_state(&optim_cfg, fresh, &mut ckpt, logger)?;
    if !carry.is_empty() {
        alloc.carry = carry;
    }
    let g = s.group_size;

    for step in start..s.optim.steps {
        policy.params.set_lora_dropout_seed(crate::batch::lora_dropout_seed(seed, step));
        let started = Instant::now();
        // 1. Prompts from each set, in this step's proportions, each repeated G times (groups are contiguous).
        if scheduled {
            alloc.set_proportions(&proportions(step))?;
        }
        let counts = alloc.next(s.optim.batch_size);
        let mut chosen: Vec<(usize, &RlPrompt)> = Vec::new();
        for (si, n) in counts.iter().enumerate() {
            for i in orders[si].take(*n) {
                chosen.push((si, &sets[si].prompts[i]));
            }
        }
        let prompt_ids: Vec<Vec<u32>> =
            chosen.iter().flat_map(|(_, p)| std::iter::repeat_n(p.ids.clone(), g)).collect();

        // 2. Sample completions with the current policy.
        let params = SamplingParams {
            max_new_tokens: s.max_new_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            stop_tokens: cfg.stop_tokens.clone(),
            seed: step_seed(seed, step),
        };
        let completions = sampler::generate(&policy.inference_decoder()?, &prompt_ids, &params)?;
        let sampled = started.elapsed().as_secs_f64();
        let texts: Vec<String> =
            completions.iter().map(|c| tokenizer.decode(c, true)).collect::<ordo_model::Result<Vec<_>>>()?;

        // 3. Rewards, set by set, each source shown what its sees_cot allows.
        let mut rewards = vec![0.0; completions.len()];
        let mut targeted: BTreeMap<RewardTarget, Vec<f64>> = BTreeMap::new();
        let mut metrics = Map::new();
        for (si, set) in sets.iter().enumerate() {
            // Scheduled settings at this step, also for a set that has no prompts in it.
            for r in set.rewards.iter().filter(|r| !r.weight.is_constant()) {
                metrics.insert(format!("weight/{}/{}", set.name, r.source.name()), json!(r.weight.at(step, steps)));
            }
            if scheduled {
                metrics.insert(format!("proportion/{}", set.name), json!(set.proportion.at(step, steps)));
            }
            let rows: Vec<usize> =
                (0..chosen.len()).filter(|&k| chosen[k].0 == si).flat_map(|k| k * g..(k + 1) * g).collect();
            if rows.is_empty() {
                continue;
            }
            let prompts: Vec<&RlPrompt> = rows.iter().map(|&r| chosen[r / g].1).collect();
            let comps: Vec<String> = rows.iter().map(|&r| texts[r].clone()).collect();
            let scores = score_all(&set.rewards, &cfg.cot, &prompts, &comps, (step, steps))?;
            for (j, &r) in rows.iter().enumerate() {
                rewards[r] = scores.total[j];
            }
            for (target, s) in &scores.by_target {
                let all = targeted.entry(*target).or_insert_with(|| vec![0.0; completions.len()]);
                for (j, &r) in rows.iter().enumerate() {
                    all[r] = s[j];
                }
            }
            for (name, s) in &scores.by_source {
                metrics.insert(format!("reward/{}/{name}", set.name), json!(s.iter().sum::<f64>() / s.len() as f64));
            }
            for (name, v) in &scores.diagnostics {
                metrics.insert(format!("diagnostic/{}/{name}", set.name), json!(v));
            }
            metrics.insert(format!("prompts/{}", set.name), json!(rows.len() / g));
        }

        // 4. Group-relative advantages.
        let adv = group_advantages(&rewards, g, s.advantage);

        // 5. Sequences (prompt + completion, completion tokens as targets); old and reference log-probs.
        let seqs: Vec<(Vec<u32>, Vec<u8>)> = prompt_ids
            .iter()
            .zip(&completions)
            .map(|(p, c)| {
                let mut ids = p.clone();
                ids.extend(c);
                let mut mask = vec![0u8; p.len()];
                mask.extend(vec![1u8; c.len()]);
                (ids, mask)
            })
            .collect();
        let rows: Vec<(&[u32], &[u8])> = seqs.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        let batch = Batch::new(&rows, pad, &device)?;
        // One advantage per sequence, or with targeted rewards one per completion token: each
        // target's rewards get their own group-relative advantage, added at the tokens it targets.
        let adv_t = if targeted.keys().all(|t| *t == RewardTarget::All) {
            Tensor::from_vec(adv.iter().map(|&a| a as f32).collect::<Vec<_>>(), adv.len(), &device)?
        } else {
            let by_target: Vec<(RewardTarget, Vec<f64>)> =
                targeted.iter().map(|(t, r)| (*t, group_advantages(r, g, s.advantage))).collect();
            let width = batch.targets.dim(1)?;
            let rows: Vec<(usize, usize, usize)> = prompt_ids
                .iter()
                .zip(&completions)
                .map(|(p, c)| Ok((p.len(), c.len(), cot_token_count(tokenizer, c, &cfg.cot.close)?)))
                .collect::<Result<_>>()?;
            let per_token = token_advantages(&by_target, &rows, width);
            Tensor::from_vec(per_token, (completions.len(), width), &device)?
        };
        // With one inner epoch the sampling policy is the policy being trained: its log-probs are the
        // training forward's own values (detached), so that forward pass is not run twice.
        let mut old_logps = match s.inner_epochs {
            1 => None,
            _ => Some(next_token_logps(&policy.inference_decoder()?, &batch, OpPath::Inference)?.0),
        };
        let before_reference = started.elapsed().as_secs_f64();
        // A decoder per step, so that the reference's copy of the weights is freed before the update.
        let (ref_logps, _) = next_token_logps(&reference.inference_decoder()?, &batch, OpPath::Inference)?;
        let referenced = started.elapsed().as_secs_f64();

        // 6. mu optimiser steps on the clipped objective.
        let (mut loss_v, mut kl, mut clip_frac, mut entropy, mut grad_norm, mut lr) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for epoch in 0..s.inner_epochs {
            let (logps, pred, pass) = train_logps(&policy.decoder()?, &batch)?;
            if epoch == 0 {
                entropy = mean_entropy(&pred, &batch)?;
            }
            let old_logps = old_logps.get_or_insert_with(|| logps.detach());
            let out = clipped_policy_loss(&logps, old_logps, Some(&ref_logps), &adv_t, &batch.targets, &clip)?;
            loss_v = scalar(&out.loss)?;
            kl = out.kl;
            clip_frac = out.clip_fraction;
            let grads = Gradients::from_loss(&policy.params, &pass, &out.loss)?;
            (grad_norm, lr) = opt.step(&policy.params, grads, loss_v)?;
        }
        let secs = started.elapsed().as_secs_f64();
        let mean_reward = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let new_tokens: usize = completions.iter().map(Vec::len).sum();
        for (k, v) in [
            ("loss", loss_v),
            ("reward", mean_reward),
            ("kl", kl),
            ("entropy", entropy),
            ("clip_fraction", clip_frac),
            ("lr", lr),
            ("grad_norm", grad_norm),
            ("completion_length", new_tokens as f64 / completions.len() as f64),
            ("tokens_per_s", new_tokens as f64 / secs),
            ("seconds/sampling", sampled),
            ("seconds/reference", referenced - before_reference),
            ("seconds/update", secs - referenced),
        ] {
            metrics.insert(k.into(), Value::from(v));
        }
        end_step(
            logger,
            &mut ckpt,
            &policy.params,
            &opt,
            &orders,
            &alloc.carry,
            (step, s.optim.steps),
            metrics,
            &format!("reward {mean_reward:.3} kl {kl:.4}"),
        )?;
    }
    logger.finish();
    Ok(opt)
}
