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

/// A setting that can change over a stage's steps: a reward's weight, a prompt set's proportion.
/// A constant is written (and hashed into node keys) as the plain number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValueSchedule {
    /// The same value at every step.
    Constant(f64),
    /// `from` at the first step to `to` at the last, linearly.
    Linear { from: f64, to: f64 },
    /// Piecewise constant: each `(step, value)` holds from its step on; the first is at step 0 and
    /// the steps increase.
    Steps { steps: Vec<(usize, f64)> },
}

impl From<f64> for ValueSchedule {
    fn from(v: f64) -> Self {
        ValueSchedule::Constant(v)
    }
}

impl ValueSchedule {
    /// The value at step `step` (0-based) of a stage of `total` steps.
    pub fn at(&self, step: usize, total: usize) -> f64 {
        match self {
            ValueSchedule::Constant(v) => *v,
            ValueSchedule::Linear { from, to } => {
                let last = total.saturating_sub(1);
                if last == 0 {
                    return *from;
                }
                if step >= last {
                    return *to;
                }
                from + (to - from) * (step as f64 / last as f64)
            }
            ValueSchedule::Steps { steps } => {
                steps.iter().take_while(|(s, _)| *s <= step).last().or(steps.first()).map_or(0.0, |(_, v)| *v)
            }
        }
    }

    /// Every value it takes (a linear schedule's two ends), for range checks.
    pub fn values(&self) -> Vec<f64> {
        match self {
            ValueSchedule::Constant(v) => vec![*v],
            ValueSchedule::Linear { from, to } => vec![*from, *to],
            ValueSchedule::Steps { steps } => steps.iter().map(|(_, v)| *v).collect(),
        }
    }

    /// Steps where it can start to take a new value in a stage of `total` steps (the first and last
    /// steps, and a piecewise schedule's steps that fall inside the stage). Between these it is
    /// constant or linear, so where several schedules are at least 0, a step at which all of them
    /// are 0 is among these steps (a linear one with an end above 0 is above 0 strictly inside).
    pub fn breakpoints(&self, total: usize) -> Vec<usize> {
        let last = total.saturating_sub(1);
        let mut points = vec![0, last];
        if let ValueSchedule::Steps { steps } = self {
            points.extend(steps.iter().map(|(s, _)| *s).filter(|s| *s <= last));
        }
        points
    }

    /// Whether it is the same at every step.
    pub fn is_constant(&self) -> bool {
        matches!(self, ValueSchedule::Constant(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_schedules_by_hand() {
        let c = ValueSchedule::Constant(0.7);
        assert_eq!((c.at(0, 10), c.at(9, 10)), (0.7, 0.7));
        let l = ValueSchedule::Linear { from: 1.0, to: 0.0 };
        assert_eq!([l.at(0, 5), l.at(1, 5), l.at(2, 5), l.at(4, 5), l.at(7, 5)], [1.0, 0.75, 0.5, 0.0, 0.0]);
        assert_eq!(l.at(0, 1), 1.0, "a one-step stage takes the start value");
        // The last step is exactly `to` (0.4 + (0.1 - 0.4) * 1 is 0.10000000000000003).
        assert_eq!(ValueSchedule::Linear { from: 0.4, to: 0.1 }.at(9, 10), 0.1);
        let s = ValueSchedule::Steps { steps: vec![(0, 0.0), (3, 2.0), (6, 0.5)] };
        let got: Vec<f64> = (0..8).map(|i| s.at(i, 8)).collect();
        assert_eq!(got, [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.5, 0.5]);
        assert_eq!(c.breakpoints(10), [0, 9]);
        assert_eq!(s.breakpoints(8), [0, 7, 0, 3, 6]);
        assert_eq!(s.breakpoints(5), [0, 4, 0, 3], "steps past the stage's end are not breakpoints");
        // The hashed form: a constant is the plain number, the others tables.
        assert_eq!(serde_json::to_string(&c).unwrap(), "0.7");
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"from":1.0,"to":0.0}"#);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"steps":[[0,0.0],[3,2.0],[6,0.5]]}"#);
    }
}
