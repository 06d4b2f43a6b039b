//! The decoder on the CPU in f32: its weights as plain vectors and the one block forward that
//! training, evaluation ([`crate::cpu_train`]) and KV-cached decoding ([`crate::cpu_decode`]) run.
//!
//! Through candle every small op of a block builds a tensor, allocates and dispatches to a thread
//! pool, which dominates at the sizes ordo trains (the organism's layers are 128 wide). Here the
//! weights are f32 vectors (q/k/v and gate/up stacked into one projection each) and a block is one
//! gemm per projection plus the norm, rotary and SwiGLU loops over token-major rows. The passes differ
//! only in their attention ([`Attend`]): over a padded grid of full sequences, or over a KV cache.

use crate::attention::Mask;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kernels::{exp_in_place, gemm_into, matmul_t, matmul_t_new, rotate_half_in_place, Operand, SMALL_ROWS};
use crate::lora::{Columns, LowRank};
use crate::norm::{CpuNorm, NormTensors};
use crate::tensors::Slot;
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rayon::prelude::*;
use std::sync::OnceLock;

/// A weight matrix in HF's row-major `[out, in]` layout and, made on its first many-row product
/// where asked for, its transpose `[in, out]`. gemm reads a transpose whose columns are contiguous
/// without packing it, where it would pack `[out, in]` again for every decoding step; the products
/// are the same, bit for bit (the packing only copies). The transpose's rows are padded off
/// multiples of 4 KiB, whose stride makes every step of gemm's inner loop hit the same cache sets.
#[derive(Debug, Clone)]
pub(crate) struct Weight {
    w: Vec<f32>,
    out: usize,
    transposed: OnceLock<(Vec<f32>, usize)>,
    /// LoRA adapters on this weight's rows (a stacked projection may have one per part).
    pub(crate) adapters: Vec<Adapted>,
}

/// A LoRA adapter on part of a (stacked) weight: the HF slot it adapts and the first output column
/// it adds to.
#[derive(Debug, Clone)]
pub(crate) struct Adapted {
    pub(crate) slot: Slot,
    pub(crate) at: usize,
    pub(crate) low_rank: LowRank,
}

/// The LoRA dropout of a training pass: its probability and the pass's seed; each adapter's mask is
/// drawn from the seed, its layer and its slot, so the backward pass draws it again rather than
/// keeping it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dropout {
    pub(crate) p: f64,
    pub(crate) seed: u64,
}

impl Dropout {
    /// The dropout of the `pass`-th training pass with this step's seed: each pass of a step (a
    /// micro-batch) draws its own masks, as independent dropout would.
    pub(crate) fn for_pass(self, pass: u64) -> Dropout {
        Dropout { seed: self.seed ^ pass.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03), ..self }
    }

    /// The multipliers of adapter `slot` in layer `layer` over `len` inputs.
    pub(crate) fn mask(&self, layer: usize, slot: Slot, len: usize) -> Option<Vec<f32>> {
        let slot_index = crate::lora::TARGETS.iter().position(|(_, s)| *s == slot).unwrap_or(usize::MAX) as u64;
        let stream = self.seed ^ ((layer as u64) << 32 | slot_index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        crate::lora::dropout_mask(self.p, len, &mut rand_chacha::ChaCha8Rng::seed_from_u64(stream))
    }
}

/// How a pass multiplies by its weights: every way gives the same values, bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Products {
    /// gemm packs `[out, in]` per call (a training step multiplies by each weight a few times).
    Packed,
    /// Many-row products read a transpose kept with the weight (decoding multiplies by each weight
    /// once per token).
    KeptTranspose,
}

impl Weight {
    /// `w` holds `out` rows.
    pub(crate) fn new(w: Vec<f32>, out: usize) -> Self {
        Weight { w, out, transposed: OnceLock::new(), adapters: Vec::new() }
    }

    /// Rows of the (stacked) weight: the width of its products.
    pub(crate) fn out(&self) -> usize {
        self.out
    }

    fn inner(&self) -> usize {
        self.w.len() / self.out.max(1)
    }

    /// `y[m, out] (+)= x[m, in] · Wᵀ` (`accumulate` adds to `y`) plus each adapter's low-rank path,
    /// without dropout: [`matmul_t`], or with [`Products::KeptTranspose`] gemm on the kept transpose
    /// from [`SMALL_ROWS`] rows.
    pub(crate) fn apply(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool, products: Products) {
        self.apply_with(x, m, y, accumulate, products, None);
    }

    /// [`Weight::apply`] with the adapters' inputs dropped out as `dropout` draws for layer `layer`.
    pub(crate) fn apply_with(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        accumulate: bool,
        products: Products,
        dropout: Option<(Dropout, usize)>,
    ) {
        self.apply_base(x, m, y, accumulate, products);
        for ad in &self.adapters {
            let mask = dropout.and_then(|(d, layer)| d.mask(layer, ad.slot, x.len()));
            ad.low_rank.forward_add(x, m, mask, y, Columns { stride: self.out, at: ad.at });
        }
    }

    /// The base weight's product alone.
    fn apply_base(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool, products: Products) {
        let inner = self.inner();
        if m < SMALL_ROWS || products == Products::Packed {
            return matmul_t(x, m, inner, &self.w, self.out, y, accumulate);
        }
        let (t, stride) = self.transposed.get_or_init(|| {
            let stride = if (self.out * 4).is_multiple_of(4096) { self.out + 16 } else { self.out };
            let mut t = vec![0f32; inner * stride];
            for (j, row) in self.w.chunks_exact(inner).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    t[i * stride + j] = v;
                }
            }
            (t, stride)
        });
        gemm_into(Operand::plain(x, m, inner), Operand::padded(t, inner, self.out, *stride), y, accumulate);
    }

    /// `y = x[m, in] · Wᵀ` (with the adapters, as [`Weight::apply_with`]) in `y`'s storage when it is
    /// `m * out` long, else into a new vector.
    pub(crate) fn product_into(
        &self,
        x: &[f32],
        m: usize,
        y: &mut Vec<f32>,
        products: Products,
        dropout: Option<(Dropout, usize)>,
    ) {
        if y.len() != m * self.out {
            *y = vec![0f32; m * self.out];
        }
        self.apply_with(x, m, y, false, products, dropout);
    }

    /// `x[m, in] · Wᵀ` (with the adapters, no dropout) into a new vector.
    pub(crate) fn product(&self, x: &[f32], m: usize, products: Products) -> Vec<f32> {
        if products == Products::Packed && self.adapters.is_empty() {
            return matmul_t_new(x, m, self.inner(), &self.w, self.out);
        }
        let mut y = vec![0f32; m * self.out];
        self.apply(x, m, &mut y, false, products);
        y
    }
}

impl std::ops::Deref for Weight {
    type Target = [f32];
    /// The `[out, in]` values.
    fn deref(&self) -> &[f32] {
        &self.w
    }
}

/// The weights of one decoder layer, as row-major f32 matrices in HF's `[out, in]` layout.
#[derive(Debug, Clone)]
pub(crate) struct CpuLayer {
    pub(crate) input_norm: CpuNorm,
    /// q, k and v projections stacked: `[(heads + 2 kv_heads) * head_dim, hidden]`.
    pub(crate) qkv: Weight,
    pub(crate) qkv_bias: Option<Vec<f32>>,
    pub(crate) q_norm: Option<CpuNorm>,
    pub(crate) k_norm: Option<CpuNorm>,
    pub(crate) o: Weight,
    pub(crate) o_bias: Option<Vec<f32>>,
    pub(crate) post_norm: CpuNorm,
    /// gate and up projections stacked: `[2 * intermediate, hidden]`.
    pub(crate) gate_up: Weight,
    pub(crate) down: Weight,
    /// Which keys this layer's attention sees.
    pub(crate) mask: Mask,
}

/// Sizes the passes need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) inter: usize,
    pub(crate) vocab: usize,
}

impl Dims {
    pub(crate) fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    pub(crate) fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    pub(crate) fn qkv_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }
}

/// The decoder's weights copied out of their tensors, for the CPU passes.
#[derive(Debug, Clone)]
pub struct CpuDecoder {
    pub(crate) dims: Dims,
    pub(crate) embed: Vec<f32>,
    pub(crate) layers: Vec<CpuLayer>,
    pub(crate) norm: CpuNorm,
    pub(crate) lm_head: Weight,
    /// Rotary tables `[max_position, head_dim / 2]`.
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
    pub(crate) max_position: usize,
    /// The LoRA dropout of training passes (None: none).
    pub(crate) dropout: Option<Dropout>,
    /// Whether the backward pass computes the base weights' gradients (not when only adapters train).
    pub(crate) base_gradients: bool,
    /// Whether it computes the output head's gradient without the base weights' (a reward model's
    /// head trained beside its adapters).
    pub(crate) head_gradient: bool,
    /// Training passes so far (their LoRA dropout masks differ).
    pub(crate) passes: PassCounter,
}

/// The tensors one layer is built from, as the tensor decoder holds them.
pub(crate) struct LayerTensors<'a> {
    pub input_norm: &'a NormTensors,
    pub q: (&'a Tensor, Option<&'a Tensor>),
    pub k: (&'a Tensor, Option<&'a Tensor>),
    pub v: (&'a Tensor, Option<&'a Tensor>),
    pub o: (&'a Tensor, Option<&'a Tensor>),
    pub q_norm: Option<&'a NormTensors>,
    pub k_norm: Option<&'a NormTensors>,
    pub post_norm: &'a NormTensors,
    pub gate: &'a Tensor,
    pub up: &'a Tensor,
    pub down: &'a Tensor,
    /// The layer's LoRA adapters by the slot they adapt.
    pub lora: Vec<(Slot, LowRank)>,
}

/// The tensor's values as a flat f32 vector.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The stacked rows of several `[out, in]` matrices (or the concatenation of bias vectors).
fn stack(parts: &[&Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for p in parts {
        out.extend(flat(p)?);
    }
    Ok(out)
}

/// The attention of one block: from the chunk's token-major q/k/v rows (after the per-head norm and
/// the rotary embedding) to its token-major attention output `[tokens, heads * head_dim]`.
pub(crate) trait Attend {
    fn attend(&mut self, layer: usize, mask: Mask, qkv: &[f32], out: &mut [f32]);
}

/// What a block pass keeps: nothing (evaluation, decoding), or a training pass's activations, with
/// that pass's LoRA dropout.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keep {
    Nothing,
    Training(Option<Dropout>),
}

/// Counts a decoder's training passes (each draws its own LoRA dropout masks); a clone continues
/// from the same count.
#[derive(Debug, Default)]
pub(crate) struct PassCounter(std::sync::atomic::AtomicU64);

impl PassCounter {
    /// The next pass's number.
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for PassCounter {
    fn clone(&self) -> Self {
        PassCounter(std::sync::atomic::AtomicU64::new(self.0.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// A block's working buffers (see [`BlockActivations`] for what each holds), reused from block to
/// block by passes that keep no activations.
#[derive(Default)]
pub(crate) struct BlockBuffers {
    h_attn: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    h_mlp: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

/// `buf` as `len` values: kept as it is when it has that length (every pass overwrites it), else zeros.
fn sized(buf: &mut Vec<f32>, len: usize) {
    if buf.len() != len {
        *buf = vec![0f32; len];
    }
}

/// What the backward pass needs of one block's forward pass (token-major `[tokens, width]`).
pub(crate) struct BlockActivations {
    /// The residual stream entering the block.
    pub x_in: Vec<f32>,
    /// `x_in` after the input norm.
    pub h_attn: Vec<f32>,
    /// q/k/v after the projection (and bias), before the per-head norm: kept for models with q/k norm.
    pub qkv_raw: Option<Vec<f32>>,
    /// The attention output before the o projection.
    pub attn: Vec<f32>,
    /// The residual stream after attention.
    pub x_mid: Vec<f32>,
    /// `x_mid` after the post-attention norm.
    pub h_mlp: Vec<f32>,
    /// gate and up projections, stacked per token.
    pub gate_up: Vec<f32>,
    /// `silu(gate) * up`.
    pub act: Vec<f32>,
}

impl CpuDecoder {
    /// Copies the weights; `cos`/`sin` are the rotary tables `[max_position, head_dim / 2]`.
    pub(crate) fn new(
        cfg: &ModelConfig,
        embed: &Tensor,
        layers: &[LayerTensors<'_>],
        norm: &NormTensors,
        lm_head: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
    ) -> Result<Self> {
        let layers = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let qkv_bias = match (l.q.1, l.k.1, l.v.1) {
                    (Some(q), Some(k), Some(v)) => Some(stack(&[q, k, v])?),
                    _ => None,
                };
                let mut layer = CpuLayer {
                    input_norm: l.input_norm.to_cpu()?,
                    qkv: Weight::new(stack(&[l.q.0, l.k.0, l.v.0])?, l.q.0.dim(0)? + l.k.0.dim(0)? + l.v.0.dim(0)?),
                    qkv_bias,
                    q_norm: l.q_norm.map(NormTensors::to_cpu).transpose()?,
                    k_norm: l.k_norm.map(NormTensors::to_cpu).transpose()?,
                    o: Weight::new(flat(l.o.0)?, l.o.0.dim(0)?),
                    o_bias: l.o.1.map(flat).transpose()?,
                    post_norm: l.post_norm.to_cpu()?,
                    gate_up: Weight::new(stack(&[l.gate, l.up])?, l.gate.dim(0)? + l.up.dim(0)?),
                    down: Weight::new(flat(l.down)?, l.down.dim(0)?),
                    mask: Mask::of(cfg, i),
                };
                let (qw, kvw) = (l.q.0.dim(0)?, l.k.0.dim(0)?);
                for (slot, low_rank) in &l.lora {
                    let (weight, at) = match slot {
                        Slot::Q => (&mut layer.qkv, 0),
                        Slot::K => (&mut layer.qkv, qw),
                        Slot::V => (&mut layer.qkv, qw + kvw),
                        Slot::O => (&mut layer.o, 0),
                        Slot::Gate => (&mut layer.gate_up, 0),
                        Slot::Up => (&mut layer.gate_up, l.gate.dim(0)?),
                        Slot::Down => (&mut layer.down, 0),
                        other => return Err(crate::error::ModelError::Input(format!("LoRA cannot adapt {other:?}"))),
                    };
                    weight.adapters.push(Adapted { slot: *slot, at, low_rank: low_rank.clone() });
                }
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuDecoder {
            dims: Dims {
                hidden: cfg.hidden_size,
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
                inter: cfg.intermediate_size,
                vocab: lm_head.dim(0)?,
            },
            embed: flat(embed)?,
            layers,
            norm: norm.to_cpu()?,
            lm_head: Weight::new(flat(lm_head)?, lm_head.dim(0)?),
            cos: flat(cos)?,
            sin: flat(sin)?,
            max_position: cos.dim(0)?,
            dropout: None,
            base_gradients: true,
            head_gradient: false,
            passes: PassCounter::default(),
        })
    }

    /// Width of the logits.
    pub fn vocab(&self) -> usize {
        self.dims.vocab
    }

    /// Rows of the embedding table (ids at or above it are out of the vocabulary).
    pub(crate) fn vocab_in(&self) -> usize {
        self.embed.len() / self.dims.hidden
    }

    /// The residual stream `[tokens, hidden]` entering the first block: each token's embedding row.
    pub(crate) fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let h = self.dims.hidden;
        let mut x = vec![0f32; ids.len() * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            row.copy_from_slice(&self.embed[id as usize * h..(id as usize + 1) * h]);
        }
        x
    }

    /// Block `l` over the residual stream `x` (`[tokens, hidden]`, token `i` at `positions[i]`), in
    /// place: norm, q/k/v, per-head norm and rotary embedding, `attend`, o, norm, SwiGLU MLP, in the
    /// working buffers `scratch`. With `keep`, returns what the backward pass needs (the buffers move
    /// into it); without, the buffers stay in `scratch` for the next block.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block(
        &self,
        l: usize,
        x: &mut [f32],
        positions: &[usize],
        attend: &mut dyn Attend,
        products: Products,
        scratch: &mut BlockBuffers,
        pass: Keep,
    ) -> Option<BlockActivations> {
        let (keep, dropout) = match pass {
            Keep::Nothing => (false, None),
            Keep::Training(d) => (true, d.map(|d| (d, l))),
        };
        let d = self.dims;
        let layer = &self.layers[l];
        let n = positions.len();
        let s = scratch;
        let x_in = keep.then(|| x.to_vec());
        sized(&mut s.h_attn, x.len());
        layer.input_norm.rows(x, &mut s.h_attn);
        layer.qkv.product_into(&s.h_attn, n, &mut s.qkv, products, dropout);
        if let Some(bias) = &layer.qkv_bias {
            add_bias_rows(&mut s.qkv, bias);
        }
        let qkv_raw = (keep && (layer.q_norm.is_some() || layer.k_norm.is_some())).then(|| s.qkv.clone());
        s.qkv
            .par_chunks_mut(d.qkv_width())
            .zip(positions.par_iter())
            .with_min_len(16)
            .for_each(|(row, &pos)| self.normalise_and_rotate_token(layer, row, pos));
        sized(&mut s.attn, n * d.q_width());
        attend.attend(l, layer.mask, &s.qkv, &mut s.attn);
        // x += attn Wo^T (+ b)
        layer.o.apply_with(&s.attn, n, x, true, products, dropout);
        if let Some(bias) = &layer.o_bias {
            add_bias_rows(x, bias);
        }
        let x_mid = keep.then(|| x.to_vec());
        sized(&mut s.h_mlp, x.len());
        layer.post_norm.rows(x, &mut s.h_mlp);
        layer.gate_up.product_into(&s.h_mlp, n, &mut s.gate_up, products, dropout);
        sized(&mut s.act, n * d.inter);
        s.act.par_chunks_mut(d.inter).zip(s.gate_up.par_chunks(2 * d.inter)).with_min_len(16).for_each(|(a, gu)| {
            let (g, u) = gu.split_at(d.inter);
            swiglu_into(g, u, a);
        });
        layer.down.apply_with(&s.act, n, x, true, products, dropout);
        let (x_in, x_mid) = (x_in?, x_mid?);
        let take = std::mem::take;
        Some(BlockActivations {
            x_in,
            h_attn: take(&mut s.h_attn),
            qkv_raw,
            attn: take(&mut s.attn),
            x_mid,
            h_mlp: take(&mut s.h_mlp),
            gate_up: take(&mut s.gate_up),
            act: take(&mut s.act),
        })
    }

    /// One token's q/k/v row (`qkv_width` wide) at position `pos`: per-head norm of its q and k
    /// heads (models with q/k norm) and the rotary embedding, in place; v is left as it is.
    fn normalise_and_rotate_token(&self, layer: &CpuLayer, row: &mut [f32], pos: usize) {
        let d = self.dims;
        let (hd, half) = (d.head_dim, d.head_dim / 2);
        let (cos, sin) = (&self.cos[pos * half..(pos + 1) * half], &self.sin[pos * half..(pos + 1) * half]);
        for head in 0..d.heads + d.kv_heads {
            let x = &mut row[head * hd..(head + 1) * hd];
            if let Some(norm) = if head < d.heads { &layer.q_norm } else { &layer.k_norm } {
                norm.in_place(x);
            }
            rotate_half_in_place(x, cos, sin, 1.0);
        }
    }
}

/// Adds `b` to every row of `x` (rows as wide as `b`).
fn add_bias_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        for (v, &c) in row.iter_mut().zip(b) {
            *v += c;
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-0.5, 0.5).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    #[test]
    fn weight_products_are_matmul_t_bit_for_bit() {
        // Output widths with and without the transpose's padding (1024 and 2048 floats are 4 KiB multiples),
        // row counts below and above SMALL_ROWS, an inner width above gemm's usual blocking.
        for (out, inner) in [(24, 16), (1024, 32), (2048, 8), (40, 1100)] {
            let w = Weight::new(values(out * inner, 1), out);
            for m in [1, SMALL_ROWS - 1, SMALL_ROWS, 130] {
                let x = values(m * inner, 2);
                for accumulate in [false, true] {
                    let start = values(m * out, 3);
                    let mut want = start.clone();
                    matmul_t(&x, m, inner, &w, out, &mut want, accumulate);
                    for products in [Products::Packed, Products::KeptTranspose] {
                        let mut got = start.clone();
                        w.apply(&x, m, &mut got, accumulate, products);
                        assert!(
                            want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "out {out}, inner {inner}, {m} rows, accumulate {accumulate}, {products:?}"
                        );
                    }
                }
                let mut want = vec![0f32; m * out];
                matmul_t(&x, m, inner, &w, out, &mut want, false);
                for products in [Products::Packed, Products::KeptTranspose] {
                    let got = w.product(&x, m, products);
                    assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "product, {products:?}");
                }
            }
            assert_eq!(
                w.transposed.get().map(|(_, stride)| *stride),
                Some(if out % 1024 == 0 { out + 16 } else { out })
            );
        }
    }
}
