//! The language-modelling stages: `pretrain` (packed text, every token a target) and `sft`
//! (prompt tokens masked out of the loss). Both minimise the mean next-token cross-entropy over
//! the step's target tokens.

use crate::batch::{scalar, train_logps, Batch, Policy};
use crate::data::TokenizedSequence;
use crate::error::{Result, TrainError};
use crate::optim::Gradients;
use crate::settings::{SettingsReader, MAX_SEQUENCE};
use crate::trainer::{end_step, metrics, start_state, Checkpointing, DataOrder, OptimConfig, Optimizer, StepLogger};
use candle_core::Tensor;
use serde::Serialize;
use std::time::Instant;

/// Settings of a `pretrain` stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainSettings {
    /// Tokens per packed training sequence (documents joined by EOS, then cut).
    pub seq_len: usize,
    pub optim: OptimConfig,
}

impl Default for PretrainSettings {
    /// 128-token sequences, batch 128, lr 2e-3, AdamW beta2 0.98.
    fn default() -> Self {
        let mut optim = OptimConfig::default().with_batch_and_lr(128, 2e-3);
        optim.adamw.beta2 = 0.98;
        PretrainSettings { seq_len: 128, optim }
    }
}

impl PretrainSettings {
    /// Reads the settings, each defaulting to [`PretrainSettings::default`]'s.
    pub fn read(r: &mut dyn SettingsReader) -> Self {
        let d = Self::default();
        let seq_len = r.count_max("seq_len", Some(d.seq_len), MAX_SEQUENCE);
        PretrainSettings { seq_len, optim: OptimConfig::read(r, &d.optim) }
    }
}

/// Settings of an `sft` stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftSettings {
    /// Longest example in tokens (prompt and completion); longer ones are cut at the end.
    pub max_len: usize,
    pub optim: OptimConfig,
    /// LoRA adapters to train instead of the whole model (None: full fine-tuning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<ordo_model::lora::LoraConfig>,
}

impl Default for SftSettings {
    /// 256 tokens, batch 16, lr 1e-4.
    fn default() -> Self {
        SftSettings { max_len: 256, optim: OptimConfig::default().with_batch_and_lr(16, 1e-4), lora: None }
    }
}

impl SftSettings {
    /// Reads the settings, each defaulting to [`SftSettings::default`]'s.
    pub fn read(r: &mut dyn SettingsReader) -> Self {
        let d = Self::default();
        let max_len = r.count_max("max_len", Some(d.max_len), MAX_SEQUENCE);
        SftSettings { max_len, optim: OptimConfig::read(r, &d.optim), lora: crate::settings::read_lora(r) }
    }
}

/// Number of target tokens of a sequence (the first token is never a target).
fn n_targets(s: &TokenizedSequence) -> usize {
    s.loss_mask.iter().skip(1).filter(|&&m| m != 0).count()
}

/// Summed negative log-likelihood of the batch's target tokens divided by `total`; non-target
/// positions (prompt, padding) contribute nothing.
pub fn target_nll(logps: &Tensor, batch: &Batch, total: usize) -> Result<Tensor> {
    Ok(((logps * &batch.targets)?.sum_all()?.neg()? / total as f64)?)
}

/// Gradients and loss of one optimiser step over examples `idx`, computed in micro-batches of
/// `micro` examples. The loss is the step's summed target NLL over its number of target tokens, so
/// any micro-batch size gives the same gradient.
pub fn lm_gradients(
    policy: &Policy,
    data: &[TokenizedSequence],
    idx: &[usize],
    micro: usize,
    pad: u32,
) -> Result<(Gradients, f64)> {
    let device = policy.device();
    let total = idx.iter().map(|&i| n_targets(&data[i])).sum::<usize>().max(1);
    let mut grads = Gradients::default();
    let mut loss_sum = 0.0;
    let dec = policy.decoder()?;
    for chunk in idx.chunks(micro.max(1)) {
        let rows: Vec<(&[u32], &[u8])> = chunk.iter().map(|&i| (&data[i].ids[..], &data[i].loss_mask[..])).collect();
        let batch = Batch::new(&rows, pad, &device)?;
        let (logps, _, pass) = train_logps(&dec, &batch)?;
        let loss = target_nll(&logps, &batch, total)?;
        loss_sum += scalar(&loss)?;
        grads.accumulate(Gradients::from_loss(&policy.params, &pass, &loss)?)?;
    }
    Ok((grads, loss_sum))
}

/// Trains `policy` on `data` for `cfg.steps` optimiser steps; the order of examples is drawn from `seed`.
///
/// Each step's loss is the sum of the target tokens' negative log-likelihoods divided by the number
/// of target tokens in the whole step, so accumulating micro-batches gives the big-batch gradient.
pub fn train_lm(
    policy: &mut Policy,
    data: &[TokenizedSequence],
    cfg: &OptimConfig,
    seed: u64,
    pad: u32,
    logger: &mut StepLogger,
    mut ckpt: Option<&mut Checkpointing>,
) -> Result<Optimizer> {
    cfg.validate()?;
    if data.iter().all(|s| n_targets(s) == 0) {
        return Err(TrainError::Config(
            "the data has no target tokens (every completion is empty or truncated away)".into(),
        ));
    }
    let (mut opt, mut orders, _, start) = start_state(cfg, vec![DataOrder::new(data.len(), seed)], &mut ckpt, logger)?;
    for step in start..cfg.steps {
        policy.params.set_lora_dropout_seed(crate::batch::lora_dropout_seed(seed, step));
        let started = Instant::now();
        let idx = orders[0].take(cfg.batch_size);
        let (grads, loss_sum) = lm_gradients(policy, data, &idx, cfg.micro_batch_size, pad)?;
        let (grad_norm, lr) = opt.step(&policy.params, grads, loss_sum)?;
        let secs = started.elapsed().as_secs_f64();
        let tokens: usize = idx.iter().map(|&i| data[i].ids.len()).sum();
        end_step(
            logger,
            &mut ckpt,
            &policy.params,
            &opt,
            &orders,
            &[],
            (step, cfg.steps),
            metrics(&[
                ("loss", loss_sum),
                ("lr", lr),
                ("grad_norm", grad_norm),
                ("tokens_per_s", tokens as f64 / secs),
            ]),
            &format!("loss {loss_sum:.4}"),
        )?;
    }
    logger.finish();
    Ok(opt)
}
