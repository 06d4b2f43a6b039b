//! AdamW with decoupled weight decay and global-norm gradient clipping, over a [`ParamStore`].

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use ordo_model::ParamStore;
use std::collections::BTreeMap;

/// AdamW hyper-parameters (the learning rate comes with each step, from a schedule).
#[derive(Debug, Clone, PartialEq)]
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

    /// Updates every trainable parameter that has a gradient in `grads`.
    pub fn step(&mut self, params: &ParamStore, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (name, var) in params.trainable() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let theta = var.as_tensor().detach();
            let (m, v) = match self.moments.get(name) {
                Some((m, v)) => {
                    (((m * c.beta1)? + (g * (1.0 - c.beta1))?)?, ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?)
                }
                None => ((g * (1.0 - c.beta1))?, (g.sqr()? * (1.0 - c.beta2))?),
            };
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let decayed = if decays(name) { (&theta * (1.0 - lr * c.weight_decay))? } else { theta };
            var.set(&(decayed - (update * lr)?)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }
}

/// Global L2 norm of the gradients of the trainable parameters.
pub fn grad_norm(params: &ParamStore, grads: &GradStore) -> Result<f64> {
    let mut sq = 0f64;
    for (_, var) in params.trainable() {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    Ok(sq.sqrt())
}

/// Scales all gradients so their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(params: &ParamStore, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let norm = grad_norm(params, grads)?;
    if norm > max_norm && norm > 0.0 {
        let scale = max_norm / (norm + 1e-6);
        for (_, var) in params.trainable() {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
