//! Fused CPU ops with hand-written backward passes: causal attention, RMSNorm, RoPE, SwiGLU and token log-probs.
//!
//! Composed from candle's elementwise ops, each of these is 5-25 graph nodes whose intermediate
//! tensors are written, kept for the backward pass and read again; on the small models ordo trains,
//! that memory traffic, not the matmuls, dominates a training step. Here each is one candle
//! `CustomOp` whose forward and backward are single passes over contiguous f32 data (rayon across
//! rows). Attention recomputes its probabilities in the backward pass instead of storing them.
//! `ops.rs` uses them on the CPU for f32 and falls back to the composed ops elsewhere; the tests
//! check them against the composed ops (values and gradients) and by finite differences. Their
//! slice kernels (attention, RMSNorm, SwiGLU) are also those of the hand-written training pass
//! ([`crate::cpu_train`]).

use crate::kernels::{dot, exp_in_place, gemm_with, rotate_half_in_place, softmax_in_place, Operand};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Whether the fused ops can run on these tensors (all f32 on the CPU).
pub fn applies(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous f32 data a storage and layout describe.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("fused op: expected a contiguous f32 input"),
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
            _ => candle_core::bail!("fused op: expected CPU tensors"),
        }
    }
    f(&slices)
}

fn tensor(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.shape(), like.device())
}

// ---------------------------------------------------------------------------------------------
// Causal attention

/// `softmax(q kᵀ · scale + mask) v` per (row, head): `q` [b, heads, t, d], `k`/`v` [b, kv_heads, t, d];
/// a key is visible to queries at or after it when its row's `valid` flag is set. A query that sees
/// no key gets zeros.
#[derive(Debug, Clone)]
pub(crate) struct CausalAttention {
    /// `[b, t]`: 1 for a real token, 0 for padding.
    pub valid: Arc<Vec<u8>>,
    pub scale: f32,
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnDims {
    pub b: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub t: usize,
    pub d: usize,
}

impl AttnDims {
    fn of(q: &Shape, k: &Shape) -> Result<Self> {
        let (b, heads, t, d) = q.dims4()?;
        let (kb, kv_heads, kt, kd) = k.dims4()?;
        if kb != b || kt != t || kd != d || kv_heads == 0 || heads % kv_heads != 0 {
            candle_core::bail!("causal attention: q {q:?} and k {k:?} do not fit together");
        }
        Ok(AttnDims { b, heads, kv_heads, t, d })
    }
}

impl CausalAttention {
    /// The probabilities `[t, t]` of one (row, head) into `p`: `softmax(q kᵀ · scale)` with keys after
    /// the query or marked padding masked to 0; a query that sees no key gets a row of zeros.
    fn probs(&self, dims: &AttnDims, row: usize, qh: &[f32], kh: &[f32], p: &mut [f32]) {
        let AttnDims { t, d, .. } = *dims;
        gemm_serial(Operand::plain(qh, t, d), Operand::t(kh, t, d), p);
        let valid = &self.valid[row * t..(row + 1) * t];
        for (i, p_i) in p.chunks_exact_mut(t).enumerate() {
            for (j, s) in p_i[..=i].iter_mut().enumerate() {
                *s = if valid[j] != 0 { *s * self.scale } else { f32::NEG_INFINITY };
            }
            if !softmax_in_place(&mut p_i[..=i]) {
                p_i[..=i].fill(0.0);
            }
            p_i[i + 1..].fill(0.0);
        }
    }

    /// `softmax(q kᵀ · scale + mask) v` for every (row, head), one task each; `q` [b, heads, t, d].
    pub(crate) fn forward(&self, dims: AttnDims, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let AttnDims { heads, kv_heads, t, d, .. } = dims;
        let mut out = vec![0f32; q.len()];
        let group = heads / kv_heads;
        out.par_chunks_mut(t * d).enumerate().for_each(|(bh, o)| {
            let (row, head) = (bh / heads, bh % heads);
            let kv = (row * kv_heads + head / group) * t * d;
            let mut p = vec![0f32; t * t];
            self.probs(&dims, row, &q[bh * t * d..(bh + 1) * t * d], &k[kv..kv + t * d], &mut p);
            gemm_serial(Operand::plain(&p, t, t), Operand::plain(&v[kv..kv + t * d], t, d), o);
        });
        out
    }

    /// Gradients of q, k and v given the output's gradient `g`, recomputing the probabilities:
    /// dP = g vᵀ, dS = P ∘ (dP - rowsum(P ∘ dP)) · scale, dq = dS k, dk = dSᵀ q, dv = Pᵀ g.
    pub(crate) fn backward(&self, dims: AttnDims, q: &[f32], k: &[f32], v: &[f32], g: &[f32]) -> [Vec<f32>; 3] {
        let AttnDims { b, heads, kv_heads, t, d } = dims;
        let group = heads / kv_heads;
        let mut dq = vec![0f32; q.len()];
        let mut dk = vec![0f32; k.len()];
        let mut dv = vec![0f32; v.len()];
        // One task per (row, kv head): it owns that kv head's dk/dv and its group's dq.
        let dq_chunks: Vec<&mut [f32]> = dq.chunks_mut(group * t * d).collect();
        dq_chunks.into_par_iter().zip(dk.par_chunks_mut(t * d)).zip(dv.par_chunks_mut(t * d)).enumerate().for_each(
            |(bk, ((dq, dk), dv))| {
                let row = bk / kv_heads;
                debug_assert!(row < b);
                let (kh, vh) = (&k[bk * t * d..(bk + 1) * t * d], &v[bk * t * d..(bk + 1) * t * d]);
                let (mut p, mut ds) = (vec![0f32; t * t], vec![0f32; t * t]);
                for hg in 0..group {
                    let bh = row * heads + (bk % kv_heads) * group + hg;
                    let (qh, gh) = (&q[bh * t * d..(bh + 1) * t * d], &g[bh * t * d..(bh + 1) * t * d]);
                    self.probs(&dims, row, qh, kh, &mut p);
                    gemm_serial(Operand::plain(gh, t, d), Operand::t(vh, t, d), &mut ds);
                    for (p_i, ds_i) in p.chunks_exact(t).zip(ds.chunks_exact_mut(t)) {
                        let c: f32 = p_i.iter().zip(ds_i.iter()).map(|(p, s)| p * s).sum();
                        for (s, &p) in ds_i.iter_mut().zip(p_i) {
                            *s = p * (*s - c) * self.scale;
                        }
                    }
                    gemm_serial(
                        Operand::plain(&ds, t, t),
                        Operand::plain(kh, t, d),
                        &mut dq[hg * t * d..(hg + 1) * t * d],
                    );
                    gemm_serial_acc(Operand::t(&ds, t, t), Operand::plain(qh, t, d), dk);
                    gemm_serial_acc(Operand::t(&p, t, t), Operand::plain(gh, t, d), dv);
                }
            },
        );
        [dq, dk, dv]
    }
}

/// `out = a · b` on one thread (attention's per-(row, head) products run inside parallel tasks).
fn gemm_serial(a: Operand<'_>, b: Operand<'_>, out: &mut [f32]) {
    gemm_with(a, b, out, false, false);
}

/// `out += a · b` on one thread.
fn gemm_serial_acc(a: Operand<'_>, b: Operand<'_>, out: &mut [f32]) {
    gemm_with(a, b, out, true, false);
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "ordo-causal-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = AttnDims::of(ql.shape(), kl.shape())?;
        if vl.shape() != kl.shape() || self.valid.len() != dims.b * dims.t {
            candle_core::bail!("causal attention: v {:?} or the mask do not fit k {:?}", vl.shape(), kl.shape());
        }
        let out = self.forward(dims, data(qs, ql)?, data(ks, kl)?, data(vs, vl)?);
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = AttnDims::of(q.shape(), k.shape())?;
        let [dq, dk, dv] = with_data(&[q, k, v, grad], |s| Ok(self.backward(dims, s[0], s[1], s[2], s[3])))?;
        Ok((Some(tensor(dq, q)?), Some(tensor(dk, k)?), Some(tensor(dv, v)?)))
    }
}

/// Causal attention with padding (`valid`: `[b][t]` flags) over `q` [b, heads, t, d] and `k`, `v`
/// [b, kv_heads, t, d] (grouped-query attention when kv_heads < heads); output [b, heads, t, d].
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, valid: &[Vec<u8>], scale: f64) -> Result<Tensor> {
    let flags: Vec<u8> = valid.iter().flatten().copied().collect();
    let op = CausalAttention { valid: Arc::new(flags), scale: scale as f32 };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `1 / sqrt(mean(x²) + eps)` of one row.
pub(crate) fn rms_inv(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt()
}

/// Rows per task in row-parallel loops whose per-task partial sums are added in order.
const ROWS_PER_TASK: usize = 64;

/// RMSNorm of each row of `x` (rows as wide as `w`) into `y`, rows in parallel.
pub(crate) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let n = w.len();
    y.par_chunks_mut(n).zip(x.par_chunks(n)).with_min_len(16).for_each(|(y, x)| {
        let inv = rms_inv(x, eps);
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = x * inv * w;
        }
    });
}

/// The backward pass of [`rms_norm_rows`] given the output's gradient `g`: (dx, dw), dw from
/// per-task partial sums added in a fixed order (the same result for any number of threads).
pub(crate) fn rms_norm_rows_backward(x: &[f32], w: &[f32], g: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let n = w.len();
    let mut dx = vec![0f32; x.len()];
    // dx = inv (g w - x̂ mean(g w x̂)); dw = Σ_rows g x̂.
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(n * ROWS_PER_TASK)
        .zip(x.par_chunks(n * ROWS_PER_TASK).zip(g.par_chunks(n * ROWS_PER_TASK)))
        .map(|(dx, (x, g))| {
            let mut dw = vec![0f32; n];
            for ((dx, x), g) in dx.chunks_mut(n).zip(x.chunks(n)).zip(g.chunks(n)) {
                let inv = rms_inv(x, eps);
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
    (dx, dw)
}

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension.
#[derive(Debug, Clone, Copy)]
struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "ordo-rms-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (data(xs, xl)?, data(ws, wl)?);
        let n = w.len();
        if xl.shape().dims().last() != Some(&n) {
            candle_core::bail!("rms norm: weight of {n} for input {:?}", xl.shape());
        }
        let mut y = vec![0f32; x.len()];
        rms_norm_rows(x, w, self.eps, &mut y);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = with_data(&[x, w, grad], |s| Ok(rms_norm_rows_backward(s[0], s[1], s[2], self.eps)))?;
        Ok((Some(tensor(dx, x)?), Some(tensor(dw, w)?)))
    }
}

/// RMSNorm over the last dimension of `x` with weight `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// The rotary embedding ("rotate half" layout) of `x` [b, h, t, d] with tables [b, t, d/2];
/// `inverse` rotates by the negative angle (the backward pass of the forward rotation).
#[derive(Debug, Clone, Copy)]
struct Rope {
    inverse: bool,
}

impl Rope {
    fn apply(&self, x: &[f32], cos: &[f32], sin: &[f32], (b, h, t, d): (usize, usize, usize, usize)) -> Vec<f32> {
        let half = d / 2;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(t * d).zip(x.par_chunks(t * d)).enumerate().for_each(|(bh, (y, x))| {
            let row = bh / h;
            debug_assert!(row < b);
            y.copy_from_slice(x);
            for (i, y) in y.chunks_exact_mut(d).enumerate() {
                let at = (row * t + i) * half;
                rotate_half_in_place(y, &cos[at..at + half], &sin[at..at + half], sign);
            }
        });
        y
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "ordo-rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = xl.shape().dims4()?;
        let (cb, ct, ch) = cl.shape().dims3()?;
        if cb != dims.0 || ct != dims.2 || 2 * ch != dims.3 || sl.shape() != cl.shape() {
            candle_core::bail!("rope: tables {:?} do not fit input {:?}", cl.shape(), xl.shape());
        }
        let y = self.apply(data(xs, xl)?, data(cs, cl)?, data(ss, sl)?, dims);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = Rope { inverse: !self.inverse };
        let dx = grad.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &back)?;
        Ok((Some(dx), None, None))
    }
}

/// RoPE of `x` [b, h, t, d] at per-row positions (`cos`, `sin`: [b, t, d/2]); no gradient to the tables.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { inverse: false })
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `silu(g) * u`, elementwise.
#[derive(Debug, Clone, Copy)]
struct SwiGlu;

/// Elements per block of the SwiGLU loops (their sigmoids are computed a block at a time).
const SWIGLU_BLOCK: usize = 256;

/// `sigmoid(g)` of each element of `g` (at most [`SWIGLU_BLOCK`]) into `out`.
fn sigmoid_into(g: &[f32], out: &mut [f32]) {
    let out = &mut out[..g.len()];
    for (o, &x) in out.iter_mut().zip(g) {
        *o = -x;
    }
    exp_in_place(out);
    for o in out.iter_mut() {
        *o = 1.0 / (1.0 + *o);
    }
}

/// `y = silu(g) * u`, elementwise over equal-length slices.
pub(crate) fn swiglu_into(g: &[f32], u: &[f32], y: &mut [f32]) {
    let mut sg = [0f32; SWIGLU_BLOCK];
    for ((g, u), y) in g.chunks(SWIGLU_BLOCK).zip(u.chunks(SWIGLU_BLOCK)).zip(y.chunks_mut(SWIGLU_BLOCK)) {
        sigmoid_into(g, &mut sg);
        for i in 0..g.len() {
            y[i] = g[i] * sg[i] * u[i];
        }
    }
}

/// The backward pass of [`swiglu_into`]: `dg` and `du` from the output's gradient `dy`.
pub(crate) fn swiglu_backward_into(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    let mut sg = [0f32; SWIGLU_BLOCK];
    for (c, g) in g.chunks(SWIGLU_BLOCK).enumerate() {
        let at = c * SWIGLU_BLOCK;
        sigmoid_into(g, &mut sg);
        for i in 0..g.len() {
            let (x, s, d) = (g[i], sg[i], dy[at + i]);
            du[at + i] = d * x * s;
            dg[at + i] = d * u[at + i] * s * (1.0 + x * (1.0 - s));
        }
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "ordo-swiglu"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, us: &CpuStorage, ul: &Layout) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != ul.shape() {
            candle_core::bail!("swiglu: gate {:?} and up {:?} differ", gl.shape(), ul.shape());
        }
        let (g, u) = (data(gs, gl)?, data(us, ul)?);
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(y, (g, u))| swiglu_into(g, u, y));
        Ok((CpuStorage::F32(y), gl.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_data(&[g, u, grad], |s| {
            let (g, u, dy) = (s[0], s[1], s[2]);
            let mut dg = vec![0f32; g.len()];
            let mut du = vec![0f32; g.len()];
            dg.par_chunks_mut(4096).zip(du.par_chunks_mut(4096)).enumerate().for_each(|(c, (dg, du))| {
                let at = c * 4096;
                let r = at..at + dg.len();
                swiglu_backward_into(&g[r.clone()], &u[r.clone()], &dy[r], dg, du);
            });
            Ok((dg, du))
        })?;
        Ok((Some(tensor(dg, g)?), Some(tensor(du, u)?)))
    }
}

/// `silu(gate) * up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------------------------------------
// Token log-probabilities

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
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = Arc::new(targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    logits.contiguous()?.apply_op1(TokenLogprobs { targets })
}
