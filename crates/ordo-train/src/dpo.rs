//! The `dpo` stage: direct preference optimisation (DPO, IPO, SimPO; optional length normalisation)
//! against a frozen reference model.

use crate::batch::{next_token_logps, scalar, sequence_logps, target_counts, train_logps, Batch, Policy};
use crate::data::TokenizedPair;
use crate::error::Result;
use crate::losses::{preference_loss, PreferenceBatch, PreferenceLoss, PreferenceLossConfig};
use crate::optim::Gradients;
use crate::settings::{choice, SettingsReader};
use crate::trainer::{end_step, metrics, start_state, Checkpointing, DataOrder, OptimConfig, Optimizer, StepLogger};
use candle_core::Tensor;
use ordo_model::OpPath;
use serde::Serialize;
use std::time::Instant;

/// Settings of a `dpo` stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DpoSettings {
    /// The preference loss and its constants (written at this level in the experiment file).
    #[serde(flatten)]
    pub preference: PreferenceLossConfig,
    pub optim: OptimConfig,
    /// LoRA adapters to train instead of the whole model (None: full fine-tuning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<ordo_model::lora::LoraConfig>,
}

impl Default for DpoSettings {
    /// DPO, beta 0.1, SimPO gamma 0.5, no length normalisation, batch 16, lr 1e-4.
    fn default() -> Self {
        DpoSettings {
            preference: PreferenceLossConfig {
                loss: PreferenceLoss::Dpo,
                beta: 0.1,
                simpo_gamma: 0.5,
                length_normalize: false,
            },
            optim: OptimConfig::default().with_batch_and_lr(16, 1e-4),
            lora: None,
        }
    }
}

impl DpoSettings {
    /// Reads the settings, each defaulting to [`DpoSettings::default`]'s.
    pub fn read(r: &mut dyn SettingsReader) -> Self {
        let (d, p) = (Self::default(), Self::default().preference);
        let losses = [("dpo", PreferenceLoss::Dpo), ("ipo", PreferenceLoss::Ipo), ("simpo", PreferenceLoss::Simpo)];
        let loss = choice(r, "loss", &losses, p.loss);
        let beta = r.number_where("beta", p.beta, "a number in (0, 1000]", &|x| x > 0.0 && x <= 1000.0);
        let simpo_gamma =
            r.number_where("simpo_gamma", p.simpo_gamma, "a number in [0, 100]", &|x| (0.0..=100.0).contains(&x));
        let length_normalize = r.boolean("length_normalize", p.length_normalize);
        DpoSettings {
            preference: PreferenceLossConfig { loss, beta, simpo_gamma, length_normalize },
            optim: OptimConfig::read(r, &d.optim),
            lora: crate::settings::read_lora(r),
        }
    }
}

/// Rows of a preference batch: every pair's prompt + chosen, then every pair's prompt + rejected,
/// with the response tokens as targets.
pub fn pair_rows(pairs: &[&TokenizedPair]) -> Vec<(Vec<u32>, Vec<u8>)> {
    let row = |prompt: &[u32], resp: &[u32]| {
        let mut ids = prompt.to_vec();
        ids.extend(resp);
        let mut mask = vec![0u8; prompt.len()];
        mask.extend(vec![1u8; resp.len()]);
        (ids, mask)
    };
    let mut rows: Vec<_> = pairs.iter().map(|p| row(&p.prompt, &p.chosen)).collect();
    rows.extend(pairs.iter().map(|p| row(&p.prompt, &p.rejected)));
    rows
}

/// Summed response log-probs of the chosen and rejected halves of `batch` (token log-probs
/// `logps`), and response lengths.
fn response_logps(logps: &Tensor, batch: &Batch, n: usize) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let seq = sequence_logps(logps, batch)?;
    let len = target_counts(batch)?;
    Ok((seq.narrow(0, 0, n)?, seq.narrow(0, n, n)?, len.narrow(0, 0, n)?, len.narrow(0, n, n)?))
}

/// The preference loss of [policy chosen, policy rejected, reference chosen, reference rejected,
/// chosen lengths, rejected lengths].
fn pair_loss(t: [&Tensor; 6], cfg: &PreferenceLossConfig) -> Result<crate::losses::PreferenceOutput> {
    let b = PreferenceBatch {
        policy_chosen: t[0],
        policy_rejected: t[1],
        ref_chosen: t[2],
        ref_rejected: t[3],
        chosen_len: t[4],
        rejected_len: t[5],
    };
    Ok(preference_loss(&b, cfg)?)
}

/// Trains `policy` on preference pairs against `reference` (unused for SimPO).
#[allow(clippy::too_many_arguments)]
pub fn train_dpo(
    policy: &mut Policy,
    reference: &Policy,
    data: &[TokenizedPair],
    settings: &DpoSettings,
    seed: u64,
    pad: u32,
    logger: &mut StepLogger,
    mut ckpt: Option<&mut Checkpointing>,
) -> Result<Optimizer> {
    let (optim, loss_cfg) = (&settings.optim, &settings.preference);
    optim.validate()?;
    let device = policy.device();
    let (mut opt, mut orders, _, start) =
        start_state(optim, vec![DataOrder::new(data.len(), seed)], &mut ckpt, logger)?;
    for step in start..optim.steps {
        policy.params.set_lora_dropout_seed(crate::batch::lora_dropout_seed(seed, step));
        let started = Instant::now();
        let idx = orders[0].take(optim.batch_size);
        let dec = policy.decoder()?;
        let mut grads = Gradients::default();
        let (mut loss_sum, mut margin, mut acc, mut lp_c, mut lp_r) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut tokens = 0;
        for chunk in idx.chunks(optim.micro_batch_size) {
            let pairs: Vec<&TokenizedPair> = chunk.iter().map(|&i| &data[i]).collect();
            let rows = pair_rows(&pairs);
            tokens += rows.iter().map(|(ids, _)| ids.len()).sum::<usize>();
            let refs: Vec<(&[u32], &[u8])> = rows.iter().map(|(a, b)| (&a[..], &b[..])).collect();
            let batch = Batch::new(&refs, pad, &device)?;
            let n = pairs.len();
            // The reference first, so that its forward pass (and its copy of the weights, dropped
            // with its decoder) runs before the policy's activations exist.
            let reference = match loss_cfg.loss {
                PreferenceLoss::Simpo => None,
                _ => {
                    let ref_dec = reference.inference_decoder()?;
                    Some(response_logps(&next_token_logps(&ref_dec, &batch, OpPath::Inference)?.0, &batch, n)?)
                }
            };
            let (logps, _, pass) = train_logps(&dec, &batch)?;
            let (pc, pr, lc, lr) = response_logps(&logps, &batch, n)?;
            let (rc, rr) = match reference {
                Some((rc, rr, _, _)) => (rc, rr),
                None => (pc.zeros_like()?, pr.zeros_like()?),
            };
            let out = pair_loss([&pc, &pr, &rc, &rr, &lc, &lr], loss_cfg)?;
            let share = n as f64 / idx.len() as f64;
            let loss = (out.loss.clone() * share)?;
            loss_sum += scalar(&loss)?;
            margin += out.margin()? * share;
            acc += out.accuracy()? * share;
            lp_c += scalar(&pc.mean_all()?)? * share;
            lp_r += scalar(&pr.mean_all()?)? * share;
            grads.accumulate(Gradients::from_loss(&policy.params, &pass, &loss)?)?;
        }
        drop(dec);
        let (grad_norm, lr) = opt.step(&policy.params, grads, loss_sum)?;
        let secs = started.elapsed().as_secs_f64();
        end_step(
            logger,
            &mut ckpt,
            &policy.params,
            &opt,
            &orders,
            &[],
            (step, optim.steps),
            metrics(&[
                ("loss", loss_sum),
                ("reward_margin", margin),
                ("accuracy", acc),
                ("logps_chosen", lp_c),
                ("logps_rejected", lp_r),
                ("lr", lr),
                ("grad_norm", grad_norm),
                ("tokens_per_s", tokens as f64 / secs),
            ]),
            &format!("loss {loss_sum:.4} margin {margin:.3} acc {acc:.2}"),
        )?;
    }
    logger.finish();
    Ok(opt)
}

/// Mean implicit-reward margin and pairwise accuracy of `policy` against `reference` on `pairs`
/// (DPO's implicit reward `beta * (log pi - log ref)`), without training.
pub fn evaluate_pairs(
    policy: &Policy,
    reference: &Policy,
    pairs: &[TokenizedPair],
    beta: f64,
    pad: u32,
) -> Result<(f64, f64)> {
    let dec = policy.inference_decoder()?;
    let ref_dec = reference.inference_decoder()?;
    let refs: Vec<&TokenizedPair> = pairs.iter().collect();
    let rows = pair_rows(&refs);
    let rows: Vec<(&[u32], &[u8])> = rows.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    let batch = Batch::new(&rows, pad, &policy.device())?;
    let n = pairs.len();
    let (pc, pr, lc, lr) = response_logps(&next_token_logps(&dec, &batch, OpPath::Inference)?.0, &batch, n)?;
    let (rc, rr, _, _) = response_logps(&next_token_logps(&ref_dec, &batch, OpPath::Inference)?.0, &batch, n)?;
    let cfg = PreferenceLossConfig { loss: PreferenceLoss::Dpo, beta, simpo_gamma: 0.0, length_normalize: false };
    let out = pair_loss([&pc, &pr, &rc, &rr, &lc, &lr], &cfg)?;
    Ok((out.margin()?, out.accuracy()?))
}
