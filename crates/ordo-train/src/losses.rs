//! The objectives of the stages as tensor functions: DPO family, Bradley-Terry, GRPO family, k3 KL.
//!
//! Each follows its paper and TRL's implementation; where they differ, the doc comment says which.

use candle_core::{Result, Tensor, D};

/// `log(sigmoid(x))`, computed stably as `min(x, 0) - log(1 + exp(-|x|))`.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let neg_abs = x.abs()?.neg()?;
    x.minimum(0.0)? - (neg_abs.exp()? + 1.0)?.log()?
}

/// The preference objectives of the DPO family.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreferenceLoss {
    /// Rafailov et al. 2023: `-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`.
    Dpo,
    /// Azar et al. 2023: `((pi_c - ref_c) - (pi_r - ref_r) - 1 / (2 beta))^2`, on per-token mean
    /// log-probs as in TRL.
    Ipo,
    /// Meng et al. 2024: reference-free, `-log sigmoid(beta * (avg_c - avg_r) - gamma)` on per-token
    /// mean log-probs.
    Simpo,
}

/// Inputs of a preference loss, one entry per pair: summed log-probs of each response under the
/// policy and the reference, and the response lengths in tokens.
pub struct PreferenceBatch<'a> {
    pub policy_chosen: &'a Tensor,
    pub policy_rejected: &'a Tensor,
    pub ref_chosen: &'a Tensor,
    pub ref_rejected: &'a Tensor,
    pub chosen_len: &'a Tensor,
    pub rejected_len: &'a Tensor,
}

/// Settings of a preference loss.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PreferenceLossConfig {
    /// DPO's sigmoid loss, IPO's squared loss or SimPO's reference-free margin loss.
    pub loss: PreferenceLoss,
    /// Strength of the implicit KL constraint (DPO, SimPO) or the inverse target margin (IPO).
    pub beta: f64,
    /// SimPO's target margin gamma.
    pub simpo_gamma: f64,
    /// Divide log-probs by response length (Tulu 3's length-normalised DPO). Implied for IPO and SimPO.
    pub length_normalize: bool,
}

/// Loss and per-pair diagnostics of a preference batch.
pub struct PreferenceOutput {
    /// Mean loss over pairs (differentiable).
    pub loss: Tensor,
    /// Implicit rewards `beta * (pi - ref)` (SimPO: `beta * avg pi`) of chosen and rejected responses.
    pub chosen_rewards: Tensor,
    pub rejected_rewards: Tensor,
}

impl PreferenceOutput {
    /// Mean of chosen minus rejected reward.
    pub fn margin(&self) -> Result<f64> {
        (&self.chosen_rewards - &self.rejected_rewards)?.mean_all()?.to_scalar::<f32>().map(f64::from)
    }
    /// Share of pairs whose chosen reward exceeds the rejected one.
    pub fn accuracy(&self) -> Result<f64> {
        let wins = self.chosen_rewards.gt(&self.rejected_rewards)?.to_dtype(candle_core::DType::F32)?;
        wins.mean_all()?.to_scalar::<f32>().map(f64::from)
    }
}

/// The DPO-family loss of a batch of pairs.
pub fn preference_loss(b: &PreferenceBatch, cfg: &PreferenceLossConfig) -> Result<PreferenceOutput> {
    let normalize = cfg.length_normalize || cfg.loss != PreferenceLoss::Dpo;
    let scale = |x: &Tensor, len: &Tensor| if normalize { x / len } else { Ok(x.clone()) };
    let (pc, pr) = (scale(b.policy_chosen, b.chosen_len)?, scale(b.policy_rejected, b.rejected_len)?);
    let (rc, rr) = (scale(b.ref_chosen, b.chosen_len)?, scale(b.ref_rejected, b.rejected_len)?);
    let beta = cfg.beta;
    let (loss, chosen_rewards, rejected_rewards) = match cfg.loss {
        PreferenceLoss::Dpo => {
            let logits = ((&pc - &rc)? - (&pr - &rr)?)?;
            (log_sigmoid(&(logits * beta)?)?.neg()?, ((&pc - &rc)? * beta)?, ((&pr - &rr)? * beta)?)
        }
        PreferenceLoss::Ipo => {
            let logits = ((&pc - &rc)? - (&pr - &rr)?)?;
            ((logits - 1.0 / (2.0 * beta))?.sqr()?, ((&pc - &rc)? * beta)?, ((&pr - &rr)? * beta)?)
        }
        PreferenceLoss::Simpo => {
            let logits = (((&pc - &pr)? * beta)? - cfg.simpo_gamma)?;
            (log_sigmoid(&logits)?.neg()?, (pc.detach() * beta)?, (pr.detach() * beta)?)
        }
    };
    Ok(PreferenceOutput {
        loss: loss.mean_all()?,
        chosen_rewards: chosen_rewards.detach(),
        rejected_rewards: rejected_rewards.detach(),
    })
}

/// Bradley-Terry loss of a reward model, `-log sigmoid(r_chosen - r_rejected)` averaged over pairs.
pub fn bradley_terry_loss(r_chosen: &Tensor, r_rejected: &Tensor) -> Result<Tensor> {
    log_sigmoid(&(r_chosen - r_rejected)?)?.neg()?.mean_all()
}

/// How GRPO-family stages turn a group's rewards into advantages.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// GRPO (Shao et al. 2024): `(r - mean) / (std + 1e-4)` within the group, std with Bessel's
    /// correction as TRL computes it; `scale_by_std = false` gives Dr.GRPO (Liu et al. 2025).
    Grpo { scale_by_std: bool },
    /// RLOO (Ahmadian et al. 2024): `r - mean of the other G - 1 rewards` of the group.
    Rloo,
}

/// Advantages of `rewards` laid out as consecutive groups of `group_size` samples of one prompt.
pub fn group_advantages(rewards: &[f64], group_size: usize, estimator: AdvantageEstimator) -> Vec<f64> {
    assert!(group_size > 0 && rewards.len().is_multiple_of(group_size), "rewards must form whole groups");
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let g = group.len() as f64;
        let mean = group.iter().sum::<f64>() / g;
        match estimator {
            AdvantageEstimator::Grpo { scale_by_std } => {
                let std = if group.len() > 1 {
                    (group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (g - 1.0)).sqrt()
                } else {
                    0.0
                };
                out.extend(group.iter().map(|r| if scale_by_std { (r - mean) / (std + 1e-4) } else { r - mean }));
            }
            AdvantageEstimator::Rloo => {
                let sum: f64 = group.iter().sum();
                out.extend(group.iter().map(|r| if group.len() > 1 { r - (sum - r) / (g - 1.0) } else { 0.0 }));
            }
        }
    }
    out
}

/// The k3 estimator of KL(policy || reference) per token (Schulman 2020):
/// `exp(ref - logp) - (ref - logp) - 1`, non-negative and unbiased for samples from the policy.
pub fn k3_kl(logp: &Tensor, ref_logp: &Tensor) -> Result<Tensor> {
    let d = (ref_logp - logp)?;
    (d.exp()? - d)? - 1.0
}

/// How per-token losses are averaged into the batch loss.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over each sequence's tokens, then over sequences (the original GRPO).
    SequenceMean,
    /// Sum over all tokens divided by the number of tokens in the batch (DAPO's token-level loss).
    TokenMean,
    /// Sum over all tokens divided by batch size x maximum completion length (Dr.GRPO).
    ConstantNormalizer { max_completion_len: usize },
}

/// Settings of the clipped policy-gradient objective.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Lower clip range: the ratio is clipped below at `1 - eps_low`.
    pub eps_low: f64,
    /// Upper clip range: the ratio is clipped above at `1 + eps_high` (DAPO's clip-higher when > eps_low).
    pub eps_high: f64,
    /// Coefficient of the k3 KL penalty to the reference (0 disables it).
    pub kl_coef: f64,
    pub aggregation: LossAggregation,
}

/// The clipped objective's loss and diagnostics.
pub struct PolicyLossOutput {
    pub loss: Tensor,
    /// Mean k3 KL per completion token.
    pub kl: f64,
    /// Share of completion tokens whose ratio was clipped (the min picked the clipped term).
    pub clip_fraction: f64,
}

/// PPO-style clipped objective with group advantages, as GRPO uses it.
///
/// Per token: `-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + kl_coef * k3`, where
/// `ratio = exp(logp - old_logp)`. `logp`, `old_logp`, `ref_logp`, `mask`: [batch, len] (mask 1 on
/// completion tokens); `advantages`: [batch] (one per sequence) or [batch, len] (one per token).
pub fn clipped_policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    advantages: &Tensor,
    mask: &Tensor,
    cfg: &ClipConfig,
) -> Result<PolicyLossOutput> {
    // One advantage per sequence [batch], or one per token [batch, len - 1].
    let adv = if advantages.rank() == 1 { advantages.unsqueeze(1)? } else { advantages.clone() };
    let ratio = (logp - old_logp.detach())?.exp()?;
    let unclipped = ratio.broadcast_mul(&adv)?;
    let clipped = ratio.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)?.broadcast_mul(&adv)?;
    let mut per_token = unclipped.minimum(&clipped)?.neg()?;
    let n_tokens = mask.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?.max(1.0);
    let mut kl = 0.0;
    if let Some(r) = ref_logp {
        let k3 = k3_kl(logp, &r.detach())?;
        kl = (&k3 * mask)?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / n_tokens;
        if cfg.kl_coef != 0.0 {
            per_token = (per_token + (k3 * cfg.kl_coef)?)?;
        }
    }
    let was_clipped = clipped.lt(&unclipped)?.to_dtype(mask.dtype())?;
    let clip_fraction =
        (was_clipped * mask)?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? / n_tokens;
    let masked = (per_token * mask)?;
    let loss = match cfg.aggregation {
        LossAggregation::SequenceMean => {
            let per_seq = masked.sum(D::Minus1)?.div(&mask.sum(D::Minus1)?.clamp(1.0, f64::INFINITY)?)?;
            per_seq.mean_all()?
        }
        LossAggregation::TokenMean => (masked.sum_all()? / n_tokens)?,
        LossAggregation::ConstantNormalizer { max_completion_len } => {
            (masked.sum_all()? / (mask.dim(0)? * max_completion_len) as f64)?
        }
    };
    Ok(PolicyLossOutput { loss, kl, clip_fraction })
}
