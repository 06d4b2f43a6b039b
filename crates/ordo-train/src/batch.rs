//! Batches of token sequences and the per-token log-probabilities every stage is built on.

use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use ordo_model::cpu_train::TrainPass;
use ordo_model::{ops, Decoder, ModelConfig, OpPath, ParamStore};

/// A model being trained or used as a reference: its configuration and parameters.
#[derive(Debug, Clone)]
pub struct Policy {
    pub config: ModelConfig,
    pub params: ParamStore,
}

impl Policy {
    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.params.iter().next().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu)
    }

    /// A decoder tracked by autograd (trainable parameters only).
    pub fn decoder(&self) -> Result<Decoder> {
        Ok(Decoder::new(&self.config, &self.params)?)
    }

    /// A decoder that autograd does not track.
    pub fn inference_decoder(&self) -> Result<Decoder> {
        Ok(Decoder::new_inference(&self.config, &self.params)?)
    }

    /// A trainable deep copy (new storage).
    pub fn clone_deep(&self) -> Result<Policy> {
        Ok(Policy { config: self.config.clone(), params: self.params.deep_clone()? })
    }

    /// A frozen copy, e.g. the reference model of DPO or GRPO: with LoRA adapters, the base model
    /// itself (adapters off; the base is frozen, so it is shared, not copied), else a deep copy.
    pub fn frozen_copy(&self) -> Result<Policy> {
        let mut params = if self.params.lora().is_some() { self.params.base() } else { self.params.deep_clone()? };
        params.freeze_where(|_| true);
        Ok(Policy { config: self.config.clone(), params })
    }

    /// The parameters a checkpoint of this model holds: the merged weights when it has LoRA adapters.
    pub fn checkpoint_params(&self) -> Result<ParamStore> {
        Ok(if self.params.lora().is_some() { self.params.merged(&self.config)? } else { self.params.clone() })
    }
}

/// The seed of step `step`'s LoRA dropout in a stage seeded with `seed`.
pub fn lora_dropout_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64).wrapping_add(0x632B_E59B_D9B4_E019)
}

/// Right-padded rows: `ids` [batch, len] (u32), `attention` [batch, len] (1 = token) and
/// `targets` [batch, len - 1] (f32): 1 where token t + 1 is a training target.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Tensor,
    pub attention: Tensor,
    pub targets: Tensor,
    /// Number of target tokens in the batch.
    pub n_targets: usize,
}

impl Batch {
    /// Pads `rows` (ids, and 0/1 target flags per token) on the right with `pad`.
    pub fn new(rows: &[(&[u32], &[u8])], pad: u32, device: &Device) -> Result<Self> {
        let width = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0).max(2);
        let b = rows.len();
        let mut ids = vec![pad; b * width];
        let mut attention = vec![0u32; b * width];
        let mut targets = vec![0f32; b * (width - 1)];
        let mut n_targets = 0;
        for (r, (row_ids, flags)) in rows.iter().enumerate() {
            ids[r * width..r * width + row_ids.len()].copy_from_slice(row_ids);
            attention[r * width..r * width + row_ids.len()].fill(1);
            for t in 1..row_ids.len() {
                if flags[t] != 0 {
                    targets[r * (width - 1) + t - 1] = 1.0;
                    n_targets += 1;
                }
            }
        }
        Ok(Batch {
            ids: Tensor::from_vec(ids, (b, width), device)?,
            attention: Tensor::from_vec(attention, (b, width), device)?,
            targets: Tensor::from_vec(targets, (b, width - 1), device)?,
            n_targets,
        })
    }
}

/// Log-probability of each next token, [batch, len - 1] (entry t scores token t + 1), and the
/// logits they came from.
pub fn next_token_logps(dec: &Decoder, batch: &Batch, path: OpPath) -> Result<(Tensor, Tensor)> {
    let logits = dec.forward(&batch.ids, Some(&batch.attention), path)?;
    logps_from_logits(&logits, batch)
}

/// [`next_token_logps`] of a training forward pass ([`Decoder::forward_train`]), with the pass that
/// turns a loss over them into the parameters' gradients (`Gradients::from_loss`).
pub fn train_logps(dec: &Decoder, batch: &Batch) -> Result<(Tensor, Tensor, TrainPass)> {
    let pass = dec.forward_train(&batch.ids, Some(&batch.attention))?;
    let (logps, pred) = logps_from_logits(&pass.logits, batch)?;
    Ok((logps, pred, pass))
}

/// [`next_token_logps`] from logits already computed over the batch, [batch, len, vocab].
pub fn logps_from_logits(logits: &Tensor, batch: &Batch) -> Result<(Tensor, Tensor)> {
    let t = logits.dim(1)?;
    let pred = logits.narrow(1, 0, t - 1)?;
    let next = batch.ids.narrow(1, 1, t - 1)?;
    let logps = ops::token_logprobs(&pred, &next)?;
    Ok((logps, pred))
}

/// Sum of target log-probs per row, [batch].
pub fn sequence_logps(token_logps: &Tensor, batch: &Batch) -> Result<Tensor> {
    Ok((token_logps * &batch.targets)?.sum(1)?)
}

/// Number of target tokens per row, [batch] (f32).
pub fn target_counts(batch: &Batch) -> Result<Tensor> {
    Ok(batch.targets.sum(1)?)
}

/// Mean entropy (nats) of the next-token distributions at target positions.
pub fn mean_entropy(pred_logits: &Tensor, batch: &Batch) -> Result<f64> {
    let logp = ops::log_softmax(&pred_logits.detach())?;
    let ent = (logp.exp()? * &logp)?.sum(candle_core::D::Minus1)?.neg()?;
    let total = (ent * &batch.targets)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(total / batch.n_targets.max(1) as f64)
}

/// A scalar tensor as f64.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}
