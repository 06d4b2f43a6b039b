//! Tensor ops of the decoder's candle path, each in a differentiable form for training and a fused
//! form for inference, and the losses' token log-probabilities.
//!
//! candle's fused `softmax_last_dim`, `rms_norm` and `rope` have no backward pass: gradients
//! silently stop at them. The differentiable forms are composed from candle's differentiable ops
//! (the reference the CPU passes are tested against, and the training path off the CPU); the
//! inference forms use candle's fused kernels (the tensor sampler, `SamplingPath::Tensor`, and
//! evaluation off the CPU). The decoder's forward passes on the CPU in f32 run [`crate::cpu`]
//! instead; the losses' log-probabilities run here everywhere. The norm's forms are in
//! [`crate::norm`].

use crate::logprobs;
use candle_core::{Result, Tensor, D};

/// Which form of each op a forward pass on the candle path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPath {
    /// Ops composed from candle's differentiable ones: the reference, and training off the CPU.
    Differentiable,
    /// candle's fused kernels, without backward: sampling and evaluation (on the CPU in f32,
    /// `Decoder::forward` runs the CPU pass instead).
    Inference,
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Inference => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
        OpPath::Differentiable => {
            // Subtracting the (detached) maximum changes nothing mathematically; it keeps exp finite.
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// Log-softmax over the last dimension (always differentiable).
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Rotary position embedding in the HF "rotate half" layout.
///
/// `x`: [batch, heads, seq, head_dim]; `cos`, `sin`: [batch, seq, head_dim / 2] (per-row positions).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, path: OpPath) -> Result<Tensor> {
    match path {
        OpPath::Inference => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        OpPath::Differentiable => {
            let half = x.dim(D::Minus1)? / 2;
            let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Tensor::cat(&[&r1, &r2], D::Minus1)
        }
    }
}

/// `x @ w^T (+ b)` for `x` of any leading shape and an HF-layout weight `[out, in]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner;
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("linear input has at least one dimension") = w.dim(0)?;
    y.reshape(out_dims)
}

/// `silu(gate) * up` (the SwiGLU MLP's inner product).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// Log-probability of each target token: `logits` [.., vocab], `targets` [..] (u32) -> [..]
/// (fused with its backward pass on the CPU in f32).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logprobs::applies(&[logits]) {
        return logprobs::token_logprobs(logits, targets);
    }
    token_logprobs_composed(logits, targets)
}

/// [`token_logprobs`] composed from candle's ops (the reference, and the path off the CPU).
pub fn token_logprobs_composed(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = log_softmax(&logits.contiguous()?)?;
    logp.gather(&targets.contiguous()?.unsqueeze(D::Minus1)?, D::Minus1)?.squeeze(D::Minus1)
}

/// Mean next-token cross-entropy of a batch, as transformers computes it with `labels = input_ids`.
///
/// `logits`: [batch, seq, vocab]; `ids`: [batch, seq]; `mask` ([batch, seq], 1 = real token) excludes
/// padding from the targets. Position t predicts token t + 1.
pub fn next_token_loss(logits: &Tensor, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (_b, t, _v) = logits.dims3()?;
    let pred = logits.narrow(1, 0, t - 1)?;
    let targets = ids.narrow(1, 1, t - 1)?;
    let nll = token_logprobs(&pred, &targets)?.neg()?;
    match mask {
        None => nll.mean_all(),
        Some(m) => {
            let m = m.narrow(1, 1, t - 1)?.to_dtype(logits.dtype())?;
            let total = m.sum_all()?;
            (nll * &m)?.sum_all()?.broadcast_div(&total)
        }
    }
}
