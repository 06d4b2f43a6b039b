//! AdamW with decoupled weight decay, global-norm clipping and gradient accumulation over a [`ParamStore`].

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};
use ordo_model::cpu_train::TrainPass;
use ordo_model::ParamStore;
use std::collections::BTreeMap;

/// Gradients of the trainable parameters by name; summed across micro-batches for accumulation.
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    pub by_name: BTreeMap<String, Tensor>,
}

impl Gradients {
    /// The gradients of `params`' trainable parameters from a backward pass.
    pub fn from_backward(params: &ParamStore, grads: &GradStore) -> Self {
        let by_name = params
            .trainable()
            .into_iter()
            .filter_map(|(n, v)| grads.get(v.as_tensor()).map(|g| (n.clone(), g.clone())))
            .collect();
        Gradients { by_name }
    }

    /// The gradients of `params`' trainable parameters from `loss`, a function of `pass`'s logits:
    /// the loss's backward pass, then (on the hand-written CPU path) the decoder's own.
    pub fn from_loss(params: &ParamStore, pass: &TrainPass, loss: &Tensor) -> ordo_model::Result<Self> {
        let store = loss.backward()?;
        let mut grads = Self::from_backward(params, &store);
        for (name, g) in pass.parameter_gradients(&store)? {
            if params.var(&name).is_some() && !params.is_frozen(&name) {
                grads.by_name.insert(name, g);
            }
        }
        Ok(grads)
    }

    /// Adds another micro-batch's gradients.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        for (name, g) in other.by_name {
            let sum = match self.by_name.remove(&name) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            self.by_name.insert(name, sum);
        }
        Ok(())
    }

    /// Global L2 norm.
    pub fn norm(&self) -> Result<f64> {
        let mut sq = 0f64;
        for g in self.by_name.values() {
            sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        Ok(sq.sqrt())
    }

    /// Scales the gradients so their global norm is at most `max_norm`; returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.norm()?;
        if norm > max_norm && norm > 0.0 {
            let scale = max_norm / (norm + 1e-6);
            for g in self.by_name.values_mut() {
                *g = (&*g * scale)?;
            }
        }
        Ok(norm)
    }
}

/// AdamW hyper-parameters (the learning rate comes with each step, from a schedule).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults (betas 0.9/0.999, eps 1e-8) with weight decay 0.01.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Whether a parameter gets weight decay: matrices do; biases and norm weights do not (as in TRL/HF).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.ends_with("norm.weight"))
}

/// AdamW (Loshchilov & Hutter 2019): moments per parameter name, bias-corrected, decoupled decay.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Number of steps taken.
    pub step: u64,
    /// First and second moment estimates by parameter name.
    pub moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW { config, step: 0, moments: BTreeMap::new() }
    }

    /// Updates every trainable parameter that has a gradient.
    pub fn step(&mut self, params: &ParamStore, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (name, var) in params.trainable() {
            let Some(g) = grads.by_name.get(name) else { continue };
            let (m, v) = match self.moments.get(name) {
                Some((m, v)) => {
                    (((m * c.beta1)? + (g * (1.0 - c.beta1))?)?, ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?)
                }
                None => ((g * (1.0 - c.beta1))?, (g.sqr()? * (1.0 - c.beta2))?),
            };
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor().detach();
            let decayed = if decays(name) { (&theta * (1.0 - lr * c.weight_decay))? } else { theta };
            var.set(&(decayed - (update * lr)?)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }
}
