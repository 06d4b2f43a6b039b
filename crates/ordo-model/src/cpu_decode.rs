//! A KV-cached f32 decoder for sampling on the CPU: the decoder's math on plain slices, with no tensor graph per token.
//!
//! Sampling one token for a batch runs a few dozen small ops per layer. Through candle each of them
//! builds a tensor, allocates and dispatches to a thread pool, which dominates at the sizes ordo
//! trains (the organism's layers are 128 wide). This path keeps the weights as f32 vectors (q/k/v
//! and gate/up fused into one projection each), keeps every row's keys and values without padding,
//! and runs a step as one gemm per projection plus hand-written RMSNorm, RoPE, attention and SwiGLU
//! loops; rows that finished are simply not fed. The tests check it against the tensor path
//! (`Decoder::forward`) on every model family.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fused::{rms_inv, rms_norm_rows, swiglu_into};
use crate::kernels::{
    dot_strided, gemm_into, matmul_t, rotate_half_in_place, softmax_in_place, weighted_rows_sum, Operand, SMALL_ROWS,
};
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use std::sync::OnceLock;

/// A weight matrix in HF's row-major `[out, in]` layout and, made on its first many-row product, its
/// transpose `[in, out]`. gemm reads a transpose whose columns are contiguous without packing it,
/// where it would pack `[out, in]` again for every decoding step; the products are the same, bit
/// for bit (the packing only copies). The transpose's rows are padded off multiples of 4 KiB, whose
/// stride makes every step of gemm's inner loop hit the same cache sets.
#[derive(Debug, Clone)]
pub(crate) struct Weight {
    w: Vec<f32>,
    out: usize,
    transposed: OnceLock<(Vec<f32>, usize)>,
}

impl Weight {
    /// `w` holds `out` rows.
    pub(crate) fn new(w: Vec<f32>, out: usize) -> Self {
        Weight { w, out, transposed: OnceLock::new() }
    }

    /// `y[m, out] (+)= x[m, in] · Wᵀ` (`accumulate` adds to `y`): [`matmul_t`]'s few-rows kernel on
    /// `[out, in]` below [`SMALL_ROWS`] rows, as `matmul_t` would; gemm on the transpose above.
    pub(crate) fn apply(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool) {
        let inner = self.w.len() / self.out.max(1);
        if m < SMALL_ROWS {
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
    pub(crate) input_norm: Vec<f32>,
    /// q, k and v projections stacked: `[(heads + 2 kv_heads) * head_dim, hidden]`.
    pub(crate) qkv: Weight,
    pub(crate) qkv_bias: Option<Vec<f32>>,
    pub(crate) q_norm: Option<Vec<f32>>,
    pub(crate) k_norm: Option<Vec<f32>>,
    pub(crate) o: Weight,
    pub(crate) o_bias: Option<Vec<f32>>,
    pub(crate) post_norm: Vec<f32>,
    /// gate and up projections stacked: `[2 * intermediate, hidden]`.
    pub(crate) gate_up: Weight,
    pub(crate) down: Weight,
}

/// Sizes the step loops need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) inter: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f32,
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

/// The decoder's weights copied out of their tensors, for [`CpuDecoder::step`].
#[derive(Debug, Clone)]
pub struct CpuDecoder {
    pub(crate) dims: Dims,
    pub(crate) embed: Vec<f32>,
    pub(crate) layers: Vec<CpuLayer>,
    pub(crate) norm: Vec<f32>,
    pub(crate) lm_head: Weight,
    /// Rotary tables `[max_position, head_dim / 2]`.
    pub(crate) cos: Vec<f32>,
    pub(crate) sin: Vec<f32>,
    pub(crate) max_position: usize,
}

/// Keys and values of every row's earlier tokens (no padding: each row has its own length).
#[derive(Debug, Clone)]
pub struct CpuCache {
    capacity: usize,
    /// Per layer: keys and values `[rows, capacity, kv_heads * head_dim]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Tokens cached per row; also the position id of the row's next token.
    lens: Vec<usize>,
}

impl CpuCache {
    /// Copies `from`'s first `len` cached tokens to row `to` (whose cache is empty).
    fn copy_row(&mut self, from: usize, to: usize, len: usize) {
        let slots = (self.lens.len() * self.capacity).max(1);
        for store in self.keys.iter_mut().chain(self.values.iter_mut()) {
            // [rows, capacity, width]
            let width = store.len() / slots;
            let per_row = self.capacity * width;
            store.copy_within(from * per_row..from * per_row + len * width, to * per_row);
        }
        self.lens[to] = self.lens[from];
    }

    /// Tokens cached for `row`.
    pub fn len(&self, row: usize) -> usize {
        self.lens[row]
    }
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

/// The tensors one layer is built from, as the tensor decoder holds them.
pub(crate) struct LayerTensors<'a> {
    pub input_norm: &'a Tensor,
    pub q: (&'a Tensor, Option<&'a Tensor>),
    pub k: (&'a Tensor, Option<&'a Tensor>),
    pub v: (&'a Tensor, Option<&'a Tensor>),
    pub o: (&'a Tensor, Option<&'a Tensor>),
    pub q_norm: Option<&'a Tensor>,
    pub k_norm: Option<&'a Tensor>,
    pub post_norm: &'a Tensor,
    pub gate: &'a Tensor,
    pub up: &'a Tensor,
    pub down: &'a Tensor,
}

impl CpuDecoder {
    /// Copies the weights; `cos`/`sin` are the rotary tables `[max_position, head_dim / 2]`.
    pub(crate) fn new(
        cfg: &ModelConfig,
        embed: &Tensor,
        layers: &[LayerTensors<'_>],
        norm: &Tensor,
        lm_head: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
    ) -> Result<Self> {
        let layers = layers
            .iter()
            .map(|l| {
                let qkv_bias = match (l.q.1, l.k.1, l.v.1) {
                    (Some(q), Some(k), Some(v)) => Some(stack(&[q, k, v])?),
                    _ => None,
                };
                Ok(CpuLayer {
                    input_norm: flat(l.input_norm)?,
                    qkv: Weight::new(stack(&[l.q.0, l.k.0, l.v.0])?, l.q.0.dim(0)? + l.k.0.dim(0)? + l.v.0.dim(0)?),
                    qkv_bias,
                    q_norm: l.q_norm.map(flat).transpose()?,
                    k_norm: l.k_norm.map(flat).transpose()?,
                    o: Weight::new(flat(l.o.0)?, l.o.0.dim(0)?),
                    o_bias: l.o.1.map(flat).transpose()?,
                    post_norm: flat(l.post_norm)?,
                    gate_up: Weight::new(stack(&[l.gate, l.up])?, l.gate.dim(0)? + l.up.dim(0)?),
                    down: Weight::new(flat(l.down)?, l.down.dim(0)?),
                })
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
                eps: cfg.rms_norm_eps as f32,
            },
            embed: flat(embed)?,
            layers,
            norm: flat(norm)?,
            lm_head: Weight::new(flat(lm_head)?, lm_head.dim(0)?),
            cos: flat(cos)?,
            sin: flat(sin)?,
            max_position: cos.dim(0)?,
        })
    }

    /// Width of the logits.
    pub fn vocab(&self) -> usize {
        self.dims.vocab
    }

    /// An empty cache for `rows` rows of up to `capacity` tokens each.
    pub fn cache(&self, rows: usize, capacity: usize) -> CpuCache {
        let per_layer = rows * capacity * self.dims.kv_width();
        CpuCache {
            capacity,
            keys: self.layers.iter().map(|_| vec![0.0; per_layer]).collect(),
            values: self.layers.iter().map(|_| vec![0.0; per_layer]).collect(),
            lens: vec![0; rows],
        }
    }

    /// Appends each fed row's tokens (`feed`: row index and its new tokens, any lengths) to the
    /// cache and returns the logits after each fed row's last token, `[feed.len() * vocab]`.
    pub fn step(&self, cache: &mut CpuCache, feed: &[(usize, &[u32])]) -> Result<Vec<f32>> {
        let d = self.dims;
        // Every token of the chunk, in feed order: (row, slot in the row's cache).
        let mut tokens: Vec<(usize, usize)> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        let mut last = Vec::with_capacity(feed.len());
        for (k, &(row, new)) in feed.iter().enumerate() {
            if row >= cache.lens.len() {
                return Err(ModelError::Input(format!("row {row} is beyond the cache's {} rows", cache.lens.len())));
            }
            if new.is_empty() || feed[..k].iter().any(|&(r, _)| r == row) {
                return Err(ModelError::Input(format!("row {row} must be fed one non-empty chunk per step")));
            }
            let start = cache.lens[row];
            if start + new.len() > cache.capacity || start + new.len() > self.max_position {
                return Err(ModelError::Input(format!(
                    "row {row} would hold {} tokens; the cache holds {} and the model {} positions \
                     (max_position_embeddings); use shorter prompts or fewer new tokens",
                    start + new.len(),
                    cache.capacity,
                    self.max_position
                )));
            }
            let vocab = self.embed.len() / d.hidden;
            if let Some(&bad) = new.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::Input(format!("token id {bad} is out of the vocabulary (size {vocab})")));
            }
            tokens.extend((0..new.len()).map(|i| (row, start + i)));
            ids.extend_from_slice(new);
            last.push(tokens.len() - 1);
        }
        let n = tokens.len();
        let mut x = vec![0f32; n * d.hidden];
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            x[t * d.hidden..(t + 1) * d.hidden].copy_from_slice(&self.embed[id * d.hidden..(id + 1) * d.hidden]);
        }
        let mut h = vec![0f32; n * d.hidden];
        let mut qkv = vec![0f32; n * d.qkv_width()];
        let mut attn = vec![0f32; n * d.q_width()];
        let mut gate_up = vec![0f32; n * 2 * d.inter];
        let mut act = vec![0f32; n * d.inter];
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&x, &layer.input_norm, d.eps, &mut h);
            layer.qkv.apply(&h, n, &mut qkv, false);
            if let Some(b) = &layer.qkv_bias {
                add_bias_rows(&mut qkv, b);
            }
            self.normalise_and_rotate(layer, &mut qkv, &tokens);
            // Cache the chunk's keys and values first: a token attends to earlier tokens of its own chunk.
            let kvw = d.kv_width();
            for (t, &(row, slot)) in tokens.iter().enumerate() {
                let at = (row * cache.capacity + slot) * kvw;
                let src = &qkv[t * d.qkv_width() + d.q_width()..(t + 1) * d.qkv_width()];
                cache.keys[l][at..at + kvw].copy_from_slice(&src[..kvw]);
                cache.values[l][at..at + kvw].copy_from_slice(&src[kvw..]);
            }
            attention(&d, &qkv, &tokens, &cache.keys[l], &cache.values[l], cache.capacity, &mut attn);
            // x += attn Wo^T (+ b)
            layer.o.apply(&attn, n, &mut x, true);
            if let Some(b) = &layer.o_bias {
                add_bias_rows(&mut x, b);
            }
            rms_norm_rows(&x, &layer.post_norm, d.eps, &mut h);
            layer.gate_up.apply(&h, n, &mut gate_up, false);
            for (a, gu) in act.chunks_exact_mut(d.inter).zip(gate_up.chunks_exact(2 * d.inter)) {
                let (g, u) = gu.split_at(d.inter);
                swiglu_into(g, u, a);
            }
            layer.down.apply(&act, n, &mut x, true);
        }
        for &(row, new) in feed {
            cache.lens[row] += new.len();
        }
        let mut last_x = vec![0f32; last.len() * d.hidden];
        for (k, &t) in last.iter().enumerate() {
            last_x[k * d.hidden..(k + 1) * d.hidden].copy_from_slice(&x[t * d.hidden..(t + 1) * d.hidden]);
        }
        let mut normed = vec![0f32; last_x.len()];
        rms_norm_rows(&last_x, &self.norm, d.eps, &mut normed);
        let mut logits = vec![0f32; last.len() * d.vocab];
        self.lm_head.apply(&normed, last.len(), &mut logits, false);
        Ok(logits)
    }

    /// [`CpuDecoder::step`] for rows whose caches are empty (a prefill): rows fed the same tokens
    /// (a GRPO group's prompt, repeated per sample) are computed once and their cache copied, which
    /// gives the same values, as each row's computation is independent of the others.
    pub fn prefill(&self, cache: &mut CpuCache, feed: &[(usize, &[u32])]) -> Result<Vec<f32>> {
        if let Some(&(row, _)) = feed.iter().find(|&&(r, _)| r < cache.lens.len() && cache.lens[r] != 0) {
            return Err(ModelError::Input(format!("prefill: row {row} already holds tokens")));
        }
        let mut first_of: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
        let mut unique: Vec<(usize, &[u32])> = Vec::new();
        let source: Vec<usize> = feed
            .iter()
            .map(|&(row, chunk)| {
                *first_of.entry(chunk).or_insert_with(|| {
                    unique.push((row, chunk));
                    unique.len() - 1
                })
            })
            .collect();
        let logits = self.step(cache, &unique)?;
        let v = self.dims.vocab;
        let mut out = Vec::with_capacity(feed.len() * v);
        for (&(row, chunk), &u) in feed.iter().zip(&source) {
            let from = unique[u].0;
            if from != row {
                cache.copy_row(from, row, chunk.len());
            }
            out.extend_from_slice(&logits[u * v..(u + 1) * v]);
        }
        Ok(out)
    }

    /// Per-head RMSNorm of q and k (Qwen3) and the rotary embedding at each token's position.
    fn normalise_and_rotate(&self, layer: &CpuLayer, qkv: &mut [f32], tokens: &[(usize, usize)]) {
        for (row, &(_, pos)) in qkv.chunks_exact_mut(self.dims.qkv_width()).zip(tokens) {
            self.normalise_and_rotate_token(layer, row, pos);
        }
    }

    /// One token's q/k/v row (`qkv_width` wide) at position `pos`: per-head RMSNorm of its q and k
    /// heads (models with q/k norm) and the rotary embedding, in place; v is left as it is. The
    /// sampler and the training pass ([`crate::cpu_train`]) both use it.
    pub(crate) fn normalise_and_rotate_token(&self, layer: &CpuLayer, row: &mut [f32], pos: usize) {
        let d = self.dims;
        let (hd, half) = (d.head_dim, d.head_dim / 2);
        let (cos, sin) = (&self.cos[pos * half..(pos + 1) * half], &self.sin[pos * half..(pos + 1) * half]);
        for head in 0..d.heads + d.kv_heads {
            let x = &mut row[head * hd..(head + 1) * hd];
            if let Some(w) = if head < d.heads { &layer.q_norm } else { &layer.k_norm } {
                let inv = rms_inv(x, d.eps);
                for (v, &g) in x.iter_mut().zip(w) {
                    *v = *v * inv * g;
                }
            }
            rotate_half_in_place(x, cos, sin, 1.0);
        }
    }
}

/// Causal attention of each token of the chunk over its row's cached keys up to its own slot.
fn attention(
    d: &Dims,
    qkv: &[f32],
    tokens: &[(usize, usize)],
    keys: &[f32],
    values: &[f32],
    capacity: usize,
    out: &mut [f32],
) {
    let (hd, kvw, groups) = (d.head_dim, d.kv_width(), d.heads / d.kv_heads);
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(d.q_width()).zip(tokens.par_iter()).enumerate().for_each(|(t, (o, &(row, slot)))| {
        let q = &qkv[t * d.qkv_width()..t * d.qkv_width() + d.q_width()];
        let base = row * capacity * kvw;
        let mut scores = vec![0f32; slot + 1];
        for head in 0..d.heads {
            let at = base + (head / groups) * hd;
            dot_strided(&q[head * hd..(head + 1) * hd], &keys[at..], kvw, &mut scores);
            for score in scores.iter_mut() {
                *score *= scale;
            }
            softmax_in_place(&mut scores);
            weighted_rows_sum(&scores, &values[at..], kvw, &mut o[head * hd..(head + 1) * hd]);
        }
    });
}

pub(crate) fn add_bias_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        for (v, &c) in row.iter_mut().zip(b) {
            *v += c;
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
                    let (mut want, mut got) = (start.clone(), start);
                    matmul_t(&x, m, inner, &w, out, &mut want, accumulate);
                    w.apply(&x, m, &mut got, accumulate);
                    assert!(
                        want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "out {out}, inner {inner}, {m} rows, accumulate {accumulate}"
                    );
                }
            }
            assert_eq!(
                w.transposed.get().map(|(_, stride)| *stride),
                Some(if out % 1024 == 0 { out + 16 } else { out })
            );
        }
    }
}
