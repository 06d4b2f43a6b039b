//! Token log-probabilities as one candle `CustomOp` on the CPU in f32, with its backward pass: the
//! losses' `log_softmax(logits)[target]`.
//!
//! Composed from candle's ops, a log-softmax and a gather write and keep several `[tokens, vocab]`
//! tensors for the backward pass; here the forward and backward are single passes over the logits
//! (rayon across rows). `ops::token_logprobs` uses it on the CPU for f32 and the composed ops
//! elsewhere; the tests check it against the composed ops and by finite differences.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Whether the op can run on these tensors (all f32 on the CPU).
pub(crate) fn applies(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous f32 data a storage and layout describe.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("token log-probs: expected a contiguous f32 input"),
    }
}

/// Runs `f` over the contiguous f32 data of each tensor (made contiguous first where needed).
fn with_data<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (g, l) in &guards {
        match &**g {
            Storage::Cpu(s) => slices.push(data(s, l)?),
            _ => candle_core::bail!("token log-probs: expected CPU tensors"),
        }
    }
    f(&slices)
}

fn tensor(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.shape(), like.device())
}

/// `log_softmax(logits)[target]` per row of `[n, vocab]` logits; targets are u32.
#[derive(Debug, Clone)]
struct TokenLogprobs {
    targets: Arc<Vec<u32>>,
}

fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

impl CustomOp1 for TokenLogprobs {
    fn name(&self) -> &'static str {
        "ordo-token-logprobs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l)?;
        let dims = l.shape().dims();
        let vocab = *dims.last().unwrap_or(&0);
        if vocab == 0 || x.len() / vocab != self.targets.len() {
            candle_core::bail!("token log-probs: {} targets for logits {:?}", self.targets.len(), l.shape());
        }
        if let Some(&bad) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token log-probs: target {bad} is beyond the vocabulary ({vocab})");
        }
        let out: Vec<f32> =
            x.par_chunks(vocab).zip(self.targets.par_iter()).map(|(r, &t)| r[t as usize] - log_sum_exp(r)).collect();
        Ok((CpuStorage::F32(out), Shape::from(&dims[..dims.len() - 1])))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = with_data(&[logits, grad], |s| {
            let (x, g) = (s[0], s[1]);
            let vocab = x.len() / g.len().max(1);
            let mut d = vec![0f32; x.len()];
            // d logits = g (onehot(target) - softmax(logits)).
            d.par_chunks_mut(vocab).enumerate().for_each(|(r, d)| {
                let row = &x[r * vocab..(r + 1) * vocab];
                let lse = log_sum_exp(row);
                for (d, &v) in d.iter_mut().zip(row) {
                    *d = -g[r] * (v - lse).exp();
                }
                d[self.targets[r] as usize] += g[r];
            });
            Ok(d)
        })?;
        Ok(Some(tensor(d, logits)?))
    }
}

/// `log_softmax(logits)[.., target]`: `logits` [.., vocab], `targets` [..] (u32) -> [..].
pub(crate) fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = Arc::new(targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    logits.contiguous()?.apply_op1(TokenLogprobs { targets })
}
