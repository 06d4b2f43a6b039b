//! The decoder's normalisation (RMSNorm), in one place: its parameters, its candle forms (the
//! composed reference and candle's inference kernel) and its CPU forms (rows forward and backward).
//!
//! Every norm of the decoder (before attention, before the MLP, per head on q and k, the final one)
//! is a [`NormTensors`] on the candle path and a [`CpuNorm`] on the CPU path; the decoder and the
//! CPU passes call only these types (GGUF reads the epsilon's key from here), so a different
//! normalisation changes this file, its switch and epsilon in `config.rs` and, for extra parameters (a
//! bias), their rows in `tensors.rs`.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::kernels::dot;
use crate::ops::OpPath;
use crate::params::ParamStore;
use crate::tensors::{self, Slot};
use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

/// The normalisation's name, as `ordo model info` prints it.
pub(crate) const NAME: &str = "RMSNorm";

/// The GGUF metadata key (after `{arch}.`) of the norms' epsilon.
pub(crate) const GGUF_EPSILON_KEY: &str = "attention.layer_norm_rms_epsilon";

/// One norm's parameters as tensors, for the candle path: `x / sqrt(mean(x²) + eps) * weight` over
/// the last dimension.
#[derive(Debug, Clone)]
pub(crate) struct NormTensors {
    weight: Tensor,
    eps: f64,
}

impl NormTensors {
    /// The norm whose weight is slot `slot` (of `layer`, or a model-level tensor).
    pub(crate) fn load(p: &ParamStore, cfg: &ModelConfig, layer: Option<usize>, slot: Slot) -> Result<Self> {
        Ok(NormTensors { weight: p.tensor(&tensors::hf(layer, slot))?, eps: cfg.rms_norm_eps })
    }

    /// The norm over the last dimension of `x`: candle's fused kernel (no backward) on
    /// [`OpPath::Inference`], ops composed from candle's differentiable ones on [`OpPath::Differentiable`].
    pub(crate) fn forward(&self, x: &Tensor, path: OpPath) -> Result<Tensor> {
        let w = &self.weight;
        Ok(match path {
            OpPath::Inference => candle_nn::ops::rms_norm(&x.contiguous()?, w, self.eps as f32)?,
            OpPath::Differentiable => {
                let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
                x.broadcast_mul(&inv)?.broadcast_mul(w)?
            }
        })
    }

    /// The CPU form, its values copied out of the tensors.
    pub(crate) fn to_cpu(&self) -> Result<CpuNorm> {
        let weight = self.weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(CpuNorm { weight, eps: self.eps as f32 })
    }
}

/// One norm's parameters as f32 vectors, for the CPU passes. Rows are as wide as the weight.
#[derive(Debug, Clone)]
pub(crate) struct CpuNorm {
    weight: Vec<f32>,
    eps: f32,
}

/// The gradients of one norm's parameters.
pub(crate) struct NormGradients {
    weight: Vec<f32>,
}

/// Rows per task in row-parallel loops whose per-task partial sums are added in order.
const ROWS_PER_TASK: usize = 64;

impl CpuNorm {
    /// `1 / sqrt(mean(x²) + eps)` of one row.
    #[inline]
    fn inv(&self, x: &[f32]) -> f32 {
        1.0 / (dot(x, x) / x.len() as f32 + self.eps).sqrt()
    }

    /// The norm of one row, in place.
    #[inline]
    pub(crate) fn in_place(&self, x: &mut [f32]) {
        let inv = self.inv(x);
        for (v, &g) in x.iter_mut().zip(&self.weight) {
            *v = *v * inv * g;
        }
    }

    /// The norm of each row of `x` into `y`, rows in parallel.
    pub(crate) fn rows(&self, x: &[f32], y: &mut [f32]) {
        let n = self.weight.len();
        y.par_chunks_mut(n).zip(x.par_chunks(n)).with_min_len(16).for_each(|(y, x)| {
            let inv = self.inv(x);
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(&self.weight) {
                *y = x * inv * w;
            }
        });
    }

    /// The backward pass of [`CpuNorm::rows`] given the output's gradient `g`: the input's gradient
    /// and the parameters', the latter from per-task partial sums added in a fixed order (the same
    /// result for any number of threads).
    pub(crate) fn rows_backward(&self, x: &[f32], g: &[f32]) -> (Vec<f32>, NormGradients) {
        let (w, n) = (&self.weight, self.weight.len());
        let mut dx = vec![0f32; x.len()];
        // dx = inv (g w - x̂ mean(g w x̂)); dw = Σ_rows g x̂.
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK).zip(g.par_chunks(n * ROWS_PER_TASK)))
            .map(|(dx, (x, g))| {
                let mut dw = vec![0f32; n];
                for ((dx, x), g) in dx.chunks_mut(n).zip(x.chunks(n)).zip(g.chunks(n)) {
                    let inv = self.inv(x);
                    let mut m = 0.0;
                    for i in 0..n {
                        let xh = x[i] * inv;
                        m += g[i] * w[i] * xh;
                        dw[i] += g[i] * xh;
                    }
                    m /= n as f32;
                    for i in 0..n {
                        dx[i] = inv * (g[i] * w[i] - x[i] * inv * m);
                    }
                }
                dw
            })
            .collect();
        let mut dw = vec![0f32; n];
        for p in &partial {
            for (a, b) in dw.iter_mut().zip(p) {
                *a += b;
            }
        }
        (dx, NormGradients { weight: dw })
    }
}

impl NormGradients {
    /// Each gradient beside the HF name of its parameter, for the norm whose weight is `slot`.
    pub(crate) fn named(&self, layer: Option<usize>, slot: Slot) -> Vec<(String, &[f32])> {
        vec![(tensors::hf(layer, slot), &self.weight)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_backward_matches_finite_differences() {
        // 70 rows of 5: more than one task of ROWS_PER_TASK rows, so the partial sums are added.
        let (rows, n) = (70, 5);
        let val = |i: usize, s: usize| ((i * 7919 + s * 104729) % 1000) as f32 / 500.0 - 1.0;
        let x: Vec<f32> = (0..rows * n).map(|i| val(i, 1)).collect();
        let g: Vec<f32> = (0..rows * n).map(|i| val(i, 2)).collect();
        let weight: Vec<f32> = (0..n).map(|i| 0.5 + val(i, 3)).collect();
        let norm = CpuNorm { weight: weight.clone(), eps: 1e-5 };
        let loss = |norm: &CpuNorm, x: &[f32]| -> f64 {
            let mut y = vec![0f32; x.len()];
            norm.rows(x, &mut y);
            y.iter().zip(&g).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
        };
        let (dx, dw) = norm.rows_backward(&x, &g);
        let h = 1e-2f32;
        for at in 0..x.len() {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[at] += h;
            down[at] -= h;
            let fd = ((loss(&norm, &up) - loss(&norm, &down)) / (2.0 * h as f64)) as f32;
            assert!((fd - dx[at]).abs() < 2e-3 * (1.0 + fd.abs()), "dx[{at}]: {} vs {fd}", dx[at]);
        }
        for at in 0..n {
            let shifted = |d: f32| {
                let mut w = weight.clone();
                w[at] += d;
                CpuNorm { weight: w, eps: 1e-5 }
            };
            let fd = ((loss(&shifted(h), &x) - loss(&shifted(-h), &x)) / (2.0 * h as f64)) as f32;
            assert!((fd - dw.weight[at]).abs() < 2e-3 * (1.0 + fd.abs()), "dw[{at}]: {} vs {fd}", dw.weight[at]);
        }
        let mut one = x[..n].to_vec();
        norm.in_place(&mut one);
        let mut rows_out = vec![0f32; n];
        norm.rows(&x[..n], &mut rows_out);
        assert_eq!(one, rows_out, "in_place and rows give the same values");
    }
}
