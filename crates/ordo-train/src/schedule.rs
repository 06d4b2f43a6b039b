//! Learning-rate schedules: linear warmup, then constant, linear or cosine decay.

use serde::{Deserialize, Serialize};

/// The shape of the decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Constant,
    Linear,
    Cosine,
}

/// A learning-rate schedule over `total_steps` optimiser steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: Decay,
    /// The rate decays to `peak_lr * min_ratio` at the last step.
    pub min_ratio: f64,
}

impl LrSchedule {
    /// A constant rate with no warmup.
    pub fn constant(lr: f64) -> Self {
        LrSchedule { peak_lr: lr, warmup_steps: 0, total_steps: 1, decay: Decay::Constant, min_ratio: 1.0 }
    }

    /// The rate of optimiser step `step` (0-based): warmup ramps linearly from `peak / warmup` to `peak`,
    /// then the decay runs from `peak` at the first post-warmup step to `peak * min_ratio` at the last.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).saturating_sub(1).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.peak_lr * self.min_ratio;
        match self.decay {
            Decay::Constant => self.peak_lr,
            Decay::Linear => self.peak_lr + (floor - self.peak_lr) * progress,
            Decay::Cosine => floor + (self.peak_lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}
