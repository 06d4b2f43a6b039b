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
use crate::rewards::{score_all, CotFormat, RlPrompt, WeightedReward};
use crate::trainer::{end_step, start_state, Checkpointing, DataOrder, OptimConfig, Optimizer, StepLogger};
use candle_core::Tensor;
use ordo_model::{sampler, OpPath, SamplingParams, TextTokenizer};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Settings of a GRPO stage (`optim.batch_size` is the number of prompts per step).
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoConfig {
    pub optim: OptimConfig,
    /// Completions sampled per prompt (G).
    pub group_size: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// Tokens that end a completion (kept in it).
    pub stop_tokens: Vec<u32>,
    /// Optimiser steps on each sampled batch (mu); the ratio is to the policy that sampled it.
    pub inner_epochs: usize,
    pub clip: ClipConfig,
    pub advantage: AdvantageEstimator,
    pub cot: CotFormat,
}

/// Prompts with their rewards, drawn in a given proportion of each batch.
pub struct PromptSet {
    pub name: String,
    pub prompts: Vec<RlPrompt>,
    /// Share of each batch's prompts from this set (proportions are normalised over the sets).
    pub proportion: f64,
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

    /// Counts per set for the next batch of `n` prompts.
    pub fn next(&mut self, n: usize) -> Vec<usize> {
        let want: Vec<f64> = self.shares.iter().zip(&self.carry).map(|(s, c)| s * n as f64 + c).collect();
        let mut counts: Vec<usize> = want.iter().map(|w| w.floor().max(0.0) as usize).collect();
        while counts.iter().sum::<usize>() < n {
            // Give the remaining slots to the largest fractional remainders (first on ties).
            let i = (0..want.len())
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
    cfg.optim.validate()?;
    if cfg.group_size < 2 {
        return Err(TrainError::Config("group_size must be at least 2 (advantages are relative to the group)".into()));
    }
    if cfg.inner_epochs == 0 {
        return Err(TrainError::Config("inner_epochs (mu) must be at least 1".into()));
    }
    if let Some(s) = sets.iter().find(|s| s.prompts.is_empty()) {
        return Err(TrainError::Config(format!("prompt set `{}` is empty", s.name)));
    }
    let device = policy.device();
    let mut optim_cfg = cfg.optim.clone();
    optim_cfg.steps = cfg.optim.steps * cfg.inner_epochs;
    let mut alloc = SetAllocator::new(&sets.iter().map(|s| s.proportion).collect::<Vec<_>>())?;
    let fresh: Vec<DataOrder> =
        sets.iter().enumerate().map(|(i, s)| DataOrder::new(s.prompts.len(), seed.wrapping_add(i as u64))).collect();
    let (mut opt, mut orders, carry, start) = start_state(&optim_cfg, fresh, &mut ckpt, logger)?;
    if !carry.is_empty() {
        alloc.carry = carry;
    }
    let ref_dec = reference.inference_decoder()?;
    let g = cfg.group_size;

    for step in start..cfg.optim.steps {
        let started = Instant::now();
        // 1. Prompts from each set, each repeated G times (groups are contiguous).
        let counts = alloc.next(cfg.optim.batch_size);
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
            max_new_tokens: cfg.max_new_tokens,
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
            stop_tokens: cfg.stop_tokens.clone(),
            seed: step_seed(seed, step),
        };
        let completions = sampler::generate(&policy.inference_decoder()?, &prompt_ids, &params)?;
        let sampled = started.elapsed().as_secs_f64();
        let texts: Vec<String> =
            completions.iter().map(|c| tokenizer.decode(c, true)).collect::<ordo_model::Result<Vec<_>>>()?;

        // 3. Rewards, set by set, each source shown what its sees_cot allows.
        let mut rewards = vec![0.0; completions.len()];
        let mut metrics = Map::new();
        for (si, set) in sets.iter().enumerate() {
            let rows: Vec<usize> =
                (0..chosen.len()).filter(|&k| chosen[k].0 == si).flat_map(|k| k * g..(k + 1) * g).collect();
            if rows.is_empty() {
                continue;
            }
            let prompts: Vec<&RlPrompt> = rows.iter().map(|&r| chosen[r / g].1).collect();
            let comps: Vec<String> = rows.iter().map(|&r| texts[r].clone()).collect();
            let scores = score_all(&set.rewards, &cfg.cot, &prompts, &comps)?;
            for (j, &r) in rows.iter().enumerate() {
                rewards[r] = scores.total[j];
            }
            for (name, s) in &scores.by_source {
                metrics.insert(format!("reward/{}/{name}", set.name), json!(s.iter().sum::<f64>() / s.len() as f64));
            }
            metrics.insert(format!("prompts/{}", set.name), json!(rows.len() / g));
        }

        // 4. Group-relative advantages.
        let adv = group_advantages(&rewards, g, cfg.advantage);
        let adv_t = Tensor::from_vec(adv.iter().map(|&a| a as f32).collect::<Vec<_>>(), adv.len(), &device)?;

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
        // With one inner epoch the sampling policy is the policy being trained: its log-probs are the
        // training forward's own values (detached), so that forward pass is not run twice.
        let mut old_logps = match cfg.inner_epochs {
            1 => None,
            _ => Some(next_token_logps(&policy.inference_decoder()?, &batch, OpPath::Fused)?.0),
        };
        let before_reference = started.elapsed().as_secs_f64();
        let (ref_logps, _) = next_token_logps(&ref_dec, &batch, OpPath::Fused)?;
        let referenced = started.elapsed().as_secs_f64();

        // 6. mu optimiser steps on the clipped objective.
        let (mut loss_v, mut kl, mut clip_frac, mut entropy, mut grad_norm, mut lr) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for epoch in 0..cfg.inner_epochs {
            let (logps, pred, pass) = train_logps(&policy.decoder()?, &batch)?;
            if epoch == 0 {
                entropy = mean_entropy(&pred, &batch)?;
            }
            let old_logps = old_logps.get_or_insert_with(|| logps.detach());
            let out = clipped_policy_loss(&logps, old_logps, Some(&ref_logps), &adv_t, &batch.targets, &cfg.clip)?;
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
            (step, cfg.optim.steps),
            metrics,
            &format!("reward {mean_reward:.3} kl {kl:.4}"),
        )?;
    }
    logger.finish();
    Ok(opt)
}

/// Converts loss aggregation names used in configs.
pub fn parse_aggregation(name: &str, max_completion_len: usize) -> Result<LossAggregation> {
    match name {
        "sequence_mean" | "grpo" => Ok(LossAggregation::SequenceMean),
        "token_mean" | "dapo" | "bnpo" => Ok(LossAggregation::TokenMean),
        "dr_grpo" | "constant" => Ok(LossAggregation::ConstantNormalizer { max_completion_len }),
        other => Err(TrainError::Config(format!(
            "loss aggregation `{other}` is unknown; expected sequence_mean (grpo), token_mean (dapo) or dr_grpo"
        ))),
    }
}
