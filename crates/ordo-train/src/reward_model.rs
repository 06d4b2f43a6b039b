//! The `reward_model` stage: a scalar head on the last token trained with the Bradley-Terry loss,
//! saved as an HF `XForSequenceClassification` checkpoint and usable as a reward source in RL.

use crate::batch::{scalar, Batch, Policy};
use crate::data::TokenizedPair;
use crate::error::Result;
use crate::losses::bradley_terry_loss;
use crate::optim::Gradients;
use crate::settings::SettingsReader;
use crate::trainer::{end_step, metrics, start_state, Checkpointing, DataOrder, OptimConfig, Optimizer, StepLogger};
use candle_core::{DType, Tensor};
use ordo_model::{Decoder, OpPath, ParamStore};
use serde::Serialize;
use std::time::Instant;

/// Settings of a `reward_model` stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardModelSettings {
    /// Standard deviation of the fresh scalar head's initial weights.
    pub init_std: f64,
    pub optim: OptimConfig,
    /// LoRA adapters on the backbone, the head trained whole (PEFT's `modules_to_save`); None: every
    /// weight trains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<ordo_model::lora::LoraConfig>,
}

impl Default for RewardModelSettings {
    /// Head std 0.02, batch 16, lr 1e-4.
    fn default() -> Self {
        RewardModelSettings { init_std: 0.02, optim: OptimConfig::default().with_batch_and_lr(16, 1e-4), lora: None }
    }
}

impl RewardModelSettings {
    /// Reads the settings, each defaulting to [`RewardModelSettings::default`]'s.
    pub fn read(r: &mut dyn SettingsReader) -> Self {
        let d = Self::default();
        let init_std = r.number_where("init_std", d.init_std, "a number in (0, 1]", &|x| x > 0.0 && x <= 1.0);
        RewardModelSettings { init_std, optim: OptimConfig::read(r, &d.optim), lora: crate::settings::read_lora(r) }
    }
}

/// A reward model initialised from a causal LM: its decoder weights, and a fresh `score` head
/// [1, hidden] drawn N(0, std²) from `seed` (the LM head is dropped).
pub fn reward_model_from(policy: &Policy, std: f64, seed: u64) -> Result<Policy> {
    let mut config = policy.config.clone();
    config.score_labels = Some(1);
    config.tie_word_embeddings = false;
    let mut params = ParamStore::new();
    for (name, var) in policy.params.iter() {
        if name != "lm_head.weight" {
            params.insert(name.clone(), var.as_tensor().copy()?)?;
        }
    }
    // The head is drawn as a 1-layer model's embedding would be, from its own seed.
    let head_cfg = ordo_model::ModelConfig { vocab_size: 1, num_hidden_layers: 1, ..policy.config.clone() };
    let fresh = ParamStore::init(&head_cfg, std, seed, &policy.device())?;
    params.insert(
        "score.weight",
        fresh.var("model.embed_tokens.weight").expect("init makes embeddings").as_tensor().clone(),
    )?;
    params.check_against(&config, "reward model")?;
    Ok(Policy { config, params })
}

/// The score of each row at its last real token, [batch].
pub fn scores(dec: &Decoder, batch: &Batch, path: OpPath) -> Result<Tensor> {
    scores_of(&dec.forward(&batch.ids, Some(&batch.attention), path)?, batch)
}

/// [`scores`] from the classifier's outputs over the batch, [b, t, 1].
fn scores_of(out: &Tensor, batch: &Batch) -> Result<Tensor> {
    let last = (batch.attention.to_dtype(DType::F32)?.sum(1)? - 1.0)?.to_dtype(DType::U32)?;
    let idx = last.reshape((out.dim(0)?, 1, 1))?;
    Ok(out.contiguous()?.gather(&idx, 1)?.flatten_all()?)
}

/// Rows of prompt + response for a list of (prompt, response) token lists.
fn rows_of<'a>(items: impl Iterator<Item = (&'a [u32], &'a [u32])>) -> Vec<(Vec<u32>, Vec<u8>)> {
    items
        .map(|(p, r)| {
            let mut ids = p.to_vec();
            ids.extend(r);
            let n = ids.len();
            (ids, vec![1u8; n])
        })
        .collect()
}

/// The rows of `pairs`' chosen responses, then of their rejected ones.
fn pair_batch(pairs: &[&TokenizedPair], pad: u32, device: &candle_core::Device) -> Result<Batch> {
    let mut rows = rows_of(pairs.iter().map(|p| (&p.prompt[..], &p.chosen[..])));
    rows.extend(rows_of(pairs.iter().map(|p| (&p.prompt[..], &p.rejected[..]))));
    let refs: Vec<(&[u32], &[u8])> = rows.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    Batch::new(&refs, pad, device)
}

/// The chosen and rejected halves of a [`pair_batch`]'s scores.
fn halves(s: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = s.dim(0)? / 2;
    Ok((s.narrow(0, 0, n)?, s.narrow(0, n, n)?))
}

/// Puts LoRA adapters (drawn from `seed`) on a reward model's backbone and keeps its head trainable:
/// the adapters and the head are what trains (PEFT's LoRA with `modules_to_save = ["score"]`).
pub fn add_lora(rm: &mut Policy, lora: &ordo_model::lora::LoraConfig, seed: u64) -> Result<()> {
    let config = rm.config.clone();
    rm.params.add_lora(&config, lora, seed)?;
    rm.params.unfreeze("score.weight");
    Ok(())
}

/// Trains a reward model on preference pairs with the Bradley-Terry loss.
pub fn train_reward_model(
    rm: &mut Policy,
    data: &[TokenizedPair],
    optim: &OptimConfig,
    seed: u64,
    pad: u32,
    logger: &mut StepLogger,
    mut ckpt: Option<&mut Checkpointing>,
) -> Result<Optimizer> {
    optim.validate()?;
    let (mut opt, mut orders, _, start) =
        start_state(optim, vec![DataOrder::new(data.len(), seed)], &mut ckpt, logger)?;
    for step in start..optim.steps {
        let started = Instant::now();
        let idx = orders[0].take(optim.batch_size);
        rm.params.set_lora_dropout_seed(crate::batch::lora_dropout_seed(seed, step));
        let dec = rm.decoder()?;
        let mut grads = Gradients::default();
        let (mut loss_sum, mut acc) = (0.0, 0.0);
        for chunk in idx.chunks(optim.micro_batch_size) {
            let pairs: Vec<&TokenizedPair> = chunk.iter().map(|&i| &data[i]).collect();
            let batch = pair_batch(&pairs, pad, dec.device())?;
            let pass = dec.forward_train(&batch.ids, Some(&batch.attention))?;
            let (c, r) = halves(&scores_of(&pass.logits, &batch)?)?;
            let share = pairs.len() as f64 / idx.len() as f64;
            let loss = (bradley_terry_loss(&c, &r)? * share)?;
            loss_sum += scalar(&loss)?;
            acc += scalar(&c.gt(&r)?.to_dtype(DType::F32)?.mean_all()?)? * share;
            grads.accumulate(Gradients::from_loss(&rm.params, &pass, &loss)?)?;
        }
        drop(dec);
        let (grad_norm, lr) = opt.step(&rm.params, grads, loss_sum)?;
        end_step(
            logger,
            &mut ckpt,
            &rm.params,
            &opt,
            &orders,
            &[],
            (step, optim.steps),
            metrics(&[
                ("loss", loss_sum),
                ("accuracy", acc),
                ("lr", lr),
                ("grad_norm", grad_norm),
                ("steps_per_s", 1.0 / started.elapsed().as_secs_f64()),
            ]),
            &format!("loss {loss_sum:.4} acc {acc:.2}"),
        )?;
    }
    logger.finish();
    Ok(opt)
}

/// Share of pairs whose chosen response the reward model scores higher.
pub fn pairwise_accuracy(rm: &Policy, pairs: &[TokenizedPair], pad: u32) -> Result<f64> {
    let dec = rm.inference_decoder()?;
    let refs: Vec<&TokenizedPair> = pairs.iter().collect();
    let batch = pair_batch(&refs, pad, dec.device())?;
    let (c, r) = halves(&scores(&dec, &batch, OpPath::Inference)?)?;
    scalar(&c.gt(&r)?.to_dtype(DType::F32)?.mean_all()?)
}

/// Scores of (prompt, response) token lists, [n] as f64, for use as an RL reward.
pub fn score_texts(dec: &Decoder, items: &[(&[u32], &[u32])], pad: u32) -> Result<Vec<f64>> {
    let rows = rows_of(items.iter().copied());
    let refs: Vec<(&[u32], &[u8])> = rows.iter().map(|(a, b)| (&a[..], &b[..])).collect();
    let device = dec.device().clone();
    let s = scores(dec, &Batch::new(&refs, pad, &device)?, OpPath::Inference)?;
    Ok(s.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
