//! The decoder's training pass on the CPU in f32: the forward pass over full sequences that keeps
//! what its backward pass needs, and that backward pass.
//!
//! Through candle a training step is a graph of a few hundred tensor ops, and its backward pass
//! allocates a zeroed gradient for every node and adds into it; on the small models ordo trains that
//! memory traffic and dispatch took more of a step than the matrix products. Here the forward pass
//! runs the CPU block forward ([`CpuDecoder::block`]) with attention over the padded grid and keeps
//! each layer's activations in plain vectors; the backward pass walks the layers in reverse: matrix
//! products on `gemm` (q/k/v and gate/up stacked), the norm ([`crate::norm`]), RoPE, attention
//! ([`crate::attention`]) and SwiGLU. Per-token work runs once per distinct real-token prefix of the
//! batch, none on padding ([`crate::token_layout`]); only attention works on the padded
//! `[rows, seq]` grid. The loss stays in candle: `Decoder::forward_train` hands the logits out as a
//! leaf tensor and starts this backward pass from the gradient the loss gives them. The tests
//! compare every parameter's gradient with the composed candle path and with transformers.

use crate::attention::{AttnDims, GridAttention, Mask};
use crate::config::ModelConfig;
use crate::cpu::{
    swiglu_backward_into, Attend, BlockActivations, BlockBuffers, CpuDecoder, CpuLayer, Dims, Dropout, Keep, Products,
    Weight,
};
use crate::error::{ModelError, Result};
use crate::kernels::{product, rotate_half_in_place, Operand};
use crate::lora::{peft_key, Columns, Factor};
use crate::norm::{CpuNorm, NormGradients};
use crate::tensors::{self, Slot};
use crate::token_layout::TokenLayout;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use std::sync::Arc;

/// What the backward pass needs of one layer's forward pass: the block's activations (compact
/// token-major, one row per distinct real-token prefix ([`TokenLayout`])) and attention's inputs.
struct LayerActivations {
    block: BlockActivations,
    /// Head-major `[rows, heads, seq, head_dim]` q and `[rows, kv_heads, seq, head_dim]` k and v,
    /// after the per-head norm and the rotary embedding.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Attention over the padded grid of a batch of full sequences: the block's compact token-major
/// q/k/v spread to every slot ([`TokenLayout`]), [`GridAttention`], and the owners' outputs back.
/// With `keep`, each layer's head-major q, k and v are kept for the backward pass.
struct BatchAttention<'a> {
    layout: &'a TokenLayout,
    attention: &'a GridAttention,
    dims: Dims,
    keep: bool,
    kept: Vec<[Vec<f32>; 3]>,
}

impl Attend for BatchAttention<'_> {
    fn attend(&mut self, _layer: usize, mask: Mask, qkv: &[f32], out: &mut [f32]) {
        let (d, lay) = (self.dims, self.layout);
        let (w, hd) = (d.qkv_width(), d.head_dim);
        let q = lay.to_heads(qkv, w, 0, d.heads, hd, false);
        let k = lay.to_heads(qkv, w, d.q_width(), d.kv_heads, hd, false);
        let v = lay.to_heads(qkv, w, d.q_width() + d.kv_width(), d.kv_heads, hd, false);
        let dims = AttnDims { b: lay.rows, heads: d.heads, kv_heads: d.kv_heads, t: lay.seq, d: hd };
        let heads_out = self.attention.forward(dims, mask, &q, &k, &v);
        lay.heads_to_tokens(&heads_out, d.heads, hd, out, d.q_width(), 0, false);
        if self.keep {
            self.kept.push([q, k, v]);
        }
    }
}

/// A training forward pass's activations, for [`TrainTape::backward`].
pub struct TrainTape {
    layout: TokenLayout,
    attention: GridAttention,
    layers: Vec<LayerActivations>,
    /// The residual stream after the last layer, and after the final norm.
    x_final: Vec<f32>,
    normed: Vec<f32>,
    /// The pass's LoRA dropout (its backward pass draws the same masks).
    dropout: Option<Dropout>,
}

/// Gradients of one layer's weights, in [`CpuLayer`]'s stacked layout.
pub(crate) struct LayerGradients {
    pub input_norm: NormGradients,
    pub qkv: Vec<f32>,
    pub qkv_bias: Option<Vec<f32>>,
    pub q_norm: Option<NormGradients>,
    pub k_norm: Option<NormGradients>,
    pub o: Vec<f32>,
    pub o_bias: Option<Vec<f32>>,
    pub post_norm: NormGradients,
    pub gate_up: Vec<f32>,
    pub down: Vec<f32>,
    /// Each LoRA adapter's gradients: the slot it adapts, its rank, `A`'s and `B`'s.
    pub lora: Vec<(Slot, usize, Vec<f32>, Vec<f32>)>,
}

/// A base weight's gradient `a · b`, or nothing when only adapters train (nothing reads it then).
fn base_gradient(dec: &CpuDecoder, a: Operand<'_>, b: Operand<'_>) -> Vec<f32> {
    if dec.base_gradients {
        product(a, b)
    } else {
        Vec::new()
    }
}

/// The backward passes of `weight`'s adapters, whose input was `x` (`m` rows) and whose output's
/// gradient is `dy`: their gradients, each path's part of the input's gradient added into `dx`.
fn adapters_backward(
    weight: &Weight,
    x: &[f32],
    m: usize,
    dy: &[f32],
    dx: &mut [f32],
    dropout: Option<(Dropout, usize)>,
) -> Vec<(Slot, usize, Vec<f32>, Vec<f32>)> {
    weight
        .adapters
        .iter()
        .map(|ad| {
            let mask = dropout.and_then(|(d, layer)| d.mask(layer, ad.slot, x.len()));
            let tape = ad.low_rank.tape(x, m, mask);
            let cols = Columns { stride: weight.out(), at: ad.at };
            let (da, db) = ad.low_rank.backward(x, m, &tape, dy, cols, dx);
            (ad.slot, ad.low_rank.rank, da, db)
        })
        .collect()
}

/// Gradients of every weight of a [`CpuDecoder`] (the embedding and the head kept apart, also when tied).
pub(crate) struct DecoderGradients {
    pub embed: Vec<f32>,
    pub layers: Vec<LayerGradients>,
    pub norm: NormGradients,
    pub lm_head: Vec<f32>,
}

/// Sum over rows of a row-major `[rows, width]` matrix (a bias's gradient).
fn column_sums(x: &[f32], width: usize) -> Vec<f32> {
    let mut out = vec![0f32; width];
    for row in x.chunks_exact(width) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// `a + b`, elementwise.
fn sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

impl CpuDecoder {
    /// Logits `[rows * seq * vocab]` of full sequences (`ids` equal-length rows; `valid` 0 marks
    /// padding, left or right; padding's logits are 0) and the activations their backward pass needs.
    /// Rows that share a prefix of real tokens share its computation ([`TokenLayout`]).
    pub fn forward_train(&self, ids: &[Vec<u32>], valid: &[Vec<u8>]) -> Result<(Vec<f32>, TrainTape)> {
        self.forward_full(ids, valid, true)
    }

    /// The logits of [`CpuDecoder::forward_train`] without keeping activations (each layer's are
    /// dropped once the next layer has its input): for reference models and evaluation.
    pub fn forward_logits(&self, ids: &[Vec<u32>], valid: &[Vec<u8>]) -> Result<Vec<f32>> {
        Ok(self.forward_full(ids, valid, false)?.0)
    }

    /// The forward pass; `keep` keeps every layer's activations in the tape (else its `layers` is empty).
    fn forward_full(&self, ids: &[Vec<u32>], valid: &[Vec<u8>], keep: bool) -> Result<(Vec<f32>, TrainTape)> {
        let d = self.dims;
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        if b == 0
            || t == 0
            || ids.iter().any(|r| r.len() != t)
            || valid.len() != b
            || valid.iter().any(|r| r.len() != t)
        {
            return Err(ModelError::Input("expected a non-empty batch of equal-length rows and masks".into()));
        }
        let vocab_in = self.vocab_in();
        if let Some(&bad) = ids.iter().flatten().find(|&&i| i as usize >= vocab_in) {
            return Err(ModelError::Input(format!("token id {bad} is out of the vocabulary (size {vocab_in})")));
        }
        // Positions count real tokens only, so a left-padded row sees the same positions as unpadded.
        if let Some(real) = valid.iter().map(|r| r.iter().filter(|&&v| v != 0).count()).find(|&n| n > self.max_position)
        {
            return Err(ModelError::Input(format!(
                "a row holds {real} tokens; the model has {} positions (max_position_embeddings)",
                self.max_position
            )));
        }
        // The per-token work runs once per distinct real-token prefix; padding gets none.
        let layout = TokenLayout::new(ids, valid);
        let n = layout.tokens();
        let mut x = self.embed(&layout.ids);
        let flags = Arc::new(valid.iter().flatten().copied().collect());
        let attention = GridAttention::new(flags, t, 1.0 / (d.head_dim as f32).sqrt());
        let mut batch = BatchAttention { layout: &layout, attention: &attention, dims: d, keep, kept: Vec::new() };
        let mut blocks = Vec::with_capacity(if keep { self.layers.len() } else { 0 });
        let mut scratch = BlockBuffers::default();
        // A training pass draws its own LoRA dropout masks; the tape keeps which, for the backward pass.
        let dropout = if keep { self.dropout.map(|d| d.for_pass(self.passes.next())) } else { None };
        let pass = if keep { Keep::Training(dropout) } else { Keep::Nothing };
        for l in 0..self.layers.len() {
            blocks.extend(self.block(l, &mut x, &layout.positions, &mut batch, Products::Packed, &mut scratch, pass));
        }
        let layers =
            blocks.into_iter().zip(batch.kept).map(|(block, [q, k, v])| LayerActivations { block, q, k, v }).collect();
        let mut normed = vec![0f32; x.len()];
        self.norm.rows(&x, &mut normed);
        let logits = layout.scatter(&self.lm_head.product(&normed, n, Products::Packed), d.vocab);
        let tape = TrainTape { layout, attention, layers, x_final: x, normed, dropout };
        Ok((logits, tape))
    }
}

impl TrainTape {
    /// Gradients of every weight of `dec` (the decoder the forward pass ran on) from the logits'
    /// gradient `dlogits` (`[rows * seq * vocab]`).
    pub(crate) fn backward(&self, dec: &CpuDecoder, dlogits: &[f32]) -> Result<DecoderGradients> {
        let d = dec.dims;
        let slots = self.layout.rows * self.layout.seq;
        if dlogits.len() != slots * d.vocab {
            return Err(ModelError::Input(format!(
                "{} logit gradients for {slots} positions x {} logits",
                dlogits.len(),
                d.vocab
            )));
        }
        // A shared state's logits feed every slot that reads it: their gradients add up.
        let dlogits = &self.layout.gather_sum(dlogits, d.vocab)[..];
        let n = self.layout.tokens();
        let d_normed = product(Operand::plain(dlogits, n, d.vocab), Operand::plain(&dec.lm_head, d.vocab, d.hidden));
        let lm_head = if dec.head_gradient {
            product(Operand::t(dlogits, n, d.vocab), Operand::plain(&self.normed, n, d.hidden))
        } else {
            base_gradient(dec, Operand::t(dlogits, n, d.vocab), Operand::plain(&self.normed, n, d.hidden))
        };
        let (mut dx, norm) = dec.norm.rows_backward(&self.x_final, &d_normed);
        let mut layers = Vec::with_capacity(dec.layers.len());
        for (l, (layer, acts)) in dec.layers.iter().zip(&self.layers).enumerate().rev() {
            let (dx_in, grads) = self.layer_backward(dec, (l, layer), acts, dx);
            dx = dx_in;
            layers.push(grads);
        }
        layers.reverse();
        // The embedding's gradient: each token's row gathers its input's gradient (none when only
        // adapters train).
        let mut embed = Vec::new();
        if dec.base_gradients {
            embed = vec![0f32; dec.embed.len()];
            for (g, &id) in dx.chunks_exact(d.hidden).zip(&self.layout.ids) {
                for (e, v) in embed[id as usize * d.hidden..(id as usize + 1) * d.hidden].iter_mut().zip(g) {
                    *e += v;
                }
            }
        }
        Ok(DecoderGradients { embed, layers, norm, lm_head })
    }

    /// One layer's backward pass: the gradient of the residual stream entering the layer, and its
    /// weights' gradients, from `dx`, the gradient of the stream leaving it.
    fn layer_backward(
        &self,
        dec: &CpuDecoder,
        (l, layer): (usize, &CpuLayer),
        a: &LayerActivations,
        dx: Vec<f32>,
    ) -> (Vec<f32>, LayerGradients) {
        let (d, b) = (&dec.dims, &a.block);
        let n = self.layout.tokens();
        let (hid, inter) = (d.hidden, d.inter);
        let dropout = self.dropout.map(|p| (p, l));
        // MLP: x_out = x_mid + down(silu(gate) * up).
        let mut d_act = product(Operand::plain(&dx, n, hid), Operand::plain(&layer.down, hid, inter));
        let mut lora = adapters_backward(&layer.down, &b.act, n, &dx, &mut d_act, dropout);
        let base = |a: Operand<'_>, b: Operand<'_>| base_gradient(dec, a, b);
        let down = base(Operand::t(&dx, n, hid), Operand::plain(&b.act, n, inter));
        let mut d_gate_up = vec![0f32; n * 2 * inter];
        d_gate_up
            .par_chunks_mut(2 * inter)
            .zip(b.gate_up.par_chunks(2 * inter).zip(d_act.par_chunks(inter)))
            .with_min_len(16)
            .for_each(|(dgu, (gu, da))| {
                let (g, u) = gu.split_at(inter);
                let (dg, du) = dgu.split_at_mut(inter);
                swiglu_backward_into(g, u, da, dg, du);
            });
        let gate_up = base(Operand::t(&d_gate_up, n, 2 * inter), Operand::plain(&b.h_mlp, n, hid));
        let mut d_h_mlp =
            product(Operand::plain(&d_gate_up, n, 2 * inter), Operand::plain(&layer.gate_up, 2 * inter, hid));
        lora.extend(adapters_backward(&layer.gate_up, &b.h_mlp, n, &d_gate_up, &mut d_h_mlp, dropout));
        let (d_mid_norm, post_norm) = layer.post_norm.rows_backward(&b.x_mid, &d_h_mlp);
        let d_mid = sum(&dx, &d_mid_norm);
        drop((dx, d_mid_norm, d_h_mlp, d_gate_up, d_act));

        // Attention: x_mid = x_in + o(attention(rope(norm(q)), rope(norm(k)), v)) (+ o bias).
        let o_bias = layer.o_bias.as_ref().map(|_| column_sums(&d_mid, hid));
        let o = base(Operand::t(&d_mid, n, hid), Operand::plain(&b.attn, n, d.q_width()));
        let mut d_attn = product(Operand::plain(&d_mid, n, hid), Operand::plain(&layer.o, hid, d.q_width()));
        lora.extend(adapters_backward(&layer.o, &b.attn, n, &d_mid, &mut d_attn, dropout));
        // A shared token's output gradient enters attention once (at its owner slot); the gradients of
        // its q, k and v add up over every slot that reads it.
        let (lay, w, hd) = (&self.layout, d.qkv_width(), d.head_dim);
        let d_out = lay.to_heads(&d_attn, d.q_width(), 0, d.heads, hd, true);
        let dims = AttnDims { b: lay.rows, heads: d.heads, kv_heads: d.kv_heads, t: lay.seq, d: hd };
        let [dq, dk, dv] = self.attention.backward(dims, layer.mask, (&a.q, &a.k, &a.v), &d_out);
        let mut d_qkv = vec![0f32; n * w];
        lay.heads_to_tokens(&dq, d.heads, hd, &mut d_qkv, w, 0, true);
        lay.heads_to_tokens(&dk, d.kv_heads, hd, &mut d_qkv, w, d.q_width(), true);
        lay.heads_to_tokens(&dv, d.kv_heads, hd, &mut d_qkv, w, d.q_width() + d.kv_width(), true);
        let (q_norm, k_norm) = self.unrotate_and_unnorm(dec, layer, a, &mut d_qkv);
        let qkv_bias = layer.qkv_bias.as_ref().map(|_| column_sums(&d_qkv, d.qkv_width()));
        let qkv = base(Operand::t(&d_qkv, n, d.qkv_width()), Operand::plain(&b.h_attn, n, hid));
        let mut d_h_attn =
            product(Operand::plain(&d_qkv, n, d.qkv_width()), Operand::plain(&layer.qkv, d.qkv_width(), hid));
        lora.extend(adapters_backward(&layer.qkv, &b.h_attn, n, &d_qkv, &mut d_h_attn, dropout));
        let (d_in_norm, input_norm) = layer.input_norm.rows_backward(&b.x_in, &d_h_attn);
        let d_in = sum(&d_mid, &d_in_norm);
        (d_in, LayerGradients { input_norm, qkv, qkv_bias, q_norm, k_norm, o, o_bias, post_norm, gate_up, down, lora })
    }

    /// The backward pass of the rotary embedding and the per-head q/k norm, in place on the
    /// token-major q/k/v gradient; returns the q and k norm weights' gradients.
    fn unrotate_and_unnorm(
        &self,
        dec: &CpuDecoder,
        layer: &CpuLayer,
        a: &LayerActivations,
        d_qkv: &mut [f32],
    ) -> (Option<NormGradients>, Option<NormGradients>) {
        let d = dec.dims;
        let (hd, half, w) = (d.head_dim, d.head_dim / 2, d.qkv_width());
        // The rotation's backward pass is the inverse rotation.
        d_qkv.par_chunks_mut(w).zip(self.layout.positions.par_iter()).with_min_len(16).for_each(|(row, &pos)| {
            let (c, s) = (&dec.cos[pos * half..(pos + 1) * half], &dec.sin[pos * half..(pos + 1) * half]);
            for head in 0..d.heads + d.kv_heads {
                rotate_half_in_place(&mut row[head * hd..(head + 1) * hd], c, s, -1.0);
            }
        });
        let Some(raw) = &a.block.qkv_raw else { return (None, None) };
        // The per-head norm over the q columns, then the k columns: gathered as rows of head_dim.
        let mut unnorm = |at: usize, width: usize, norm: &Option<CpuNorm>| -> Option<NormGradients> {
            let norm = norm.as_ref()?;
            let gather =
                |m: &[f32]| -> Vec<f32> { m.chunks_exact(w).flat_map(|r| r[at..at + width].iter().copied()).collect() };
            let (dx, dw) = norm.rows_backward(&gather(raw), &gather(d_qkv));
            for (row, g) in d_qkv.chunks_exact_mut(w).zip(dx.chunks_exact(width)) {
                row[at..at + width].copy_from_slice(g);
            }
            Some(dw)
        };
        let q_norm = unnorm(0, d.q_width(), &layer.q_norm);
        let k_norm = unnorm(d.q_width(), d.kv_width(), &layer.k_norm);
        (q_norm, k_norm)
    }
}

/// A training forward pass: the logits, and what turns their gradient into the parameters' gradients.
///
/// On the hand-written CPU path the logits are a leaf variable and [`TrainPass::parameter_gradients`]
/// runs this module's backward pass from their gradient; elsewhere they are in candle's graph and
/// the parameters' gradients are in the loss's `GradStore` already.
pub struct TrainPass {
    /// `[batch, seq, vocab]` logits (a classifier: `[batch, seq, labels]`).
    pub logits: Tensor,
    tape: Option<(Arc<CpuDecoder>, TrainTape, ModelConfig)>,
}

impl TrainPass {
    /// A pass whose logits are in candle's graph.
    pub(crate) fn in_graph(logits: Tensor) -> Self {
        TrainPass { logits, tape: None }
    }

    /// A pass on the hand-written path: `logits` `[rows * seq * vocab]` from `dec.forward_train`.
    pub(crate) fn on_tape(
        cfg: &ModelConfig,
        dec: Arc<CpuDecoder>,
        logits: Vec<f32>,
        tape: TrainTape,
        device: &Device,
    ) -> Result<Self> {
        let shape = (tape.layout.rows, tape.layout.seq, dec.dims.vocab);
        let logits = Var::from_vec(logits, shape, device)?.as_tensor().clone();
        Ok(TrainPass { logits, tape: Some((dec, tape, cfg.clone())) })
    }

    /// The gradients by HF parameter name that the hand-written backward pass computes from the
    /// logits' gradient in `grads` (the loss's backward pass); empty for a pass in candle's graph
    /// (read those from `grads`) and when the loss does not depend on the logits.
    pub fn parameter_gradients(&self, grads: &GradStore) -> Result<Vec<(String, Tensor)>> {
        let (Some((dec, tape, cfg)), Some(g)) = (&self.tape, grads.get(&self.logits)) else { return Ok(Vec::new()) };
        let dlogits = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let grads = tape.backward(dec, &dlogits)?;
        let d = dec.dims;
        let device = self.logits.device();
        let mut out: Vec<(String, Tensor)> = Vec::new();
        // `rows` None: a vector (norm weights, biases); Some(r): an `[r, len / r]` matrix.
        let mut put = |name: String, v: &[f32], rows: Option<usize>| -> Result<()> {
            let t = match rows {
                None => Tensor::new(v, device)?,
                Some(r) => Tensor::from_slice(v, (r, v.len() / r.max(1)), device)?,
            };
            out.push((name, t));
            Ok(())
        };
        let (qw, kvw, hid) = (d.q_width(), d.kv_width(), d.hidden);
        for (l, g) in grads.layers.iter().enumerate() {
            for (slot, rank, da, db) in &g.lora {
                put(peft_key(l, *slot, Factor::A), da, Some(*rank))?;
                put(peft_key(l, *slot, Factor::B), db, Some(db.len() / rank))?;
            }
        }
        if !dec.base_gradients {
            // Only the adapters train, and a reward model's head when it does.
            if dec.head_gradient && cfg.score_labels.is_some() {
                put(tensors::hf(None, Slot::Score), &grads.lm_head, Some(d.vocab))?;
            }
            return Ok(out);
        }
        for (l, g) in grads.layers.iter().enumerate() {
            let n = |slot| tensors::hf(Some(l), slot);
            for (name, v) in g.input_norm.named(Some(l), Slot::InputNorm) {
                put(name, v, None)?;
            }
            let stacked = [(Slot::Q, Slot::QBias, 0, qw), (Slot::K, Slot::KBias, qw, qw + kvw)];
            for (w, b, lo, hi) in stacked.into_iter().chain([(Slot::V, Slot::VBias, qw + kvw, qw + 2 * kvw)]) {
                put(n(w), &g.qkv[lo * hid..hi * hid], Some(hi - lo))?;
                if let Some(bias) = &g.qkv_bias {
                    put(n(b), &bias[lo..hi], None)?;
                }
            }
            let head_norms = [(&g.q_norm, Slot::QNorm), (&g.k_norm, Slot::KNorm)];
            for (name, v) in
                head_norms.into_iter().filter_map(|(g, slot)| Some(g.as_ref()?.named(Some(l), slot))).flatten()
            {
                put(name, v, None)?;
            }
            put(n(Slot::O), &g.o, Some(hid))?;
            if let Some(b) = &g.o_bias {
                put(n(Slot::OBias), b, None)?;
            }
            for (name, v) in g.post_norm.named(Some(l), Slot::PostNorm) {
                put(name, v, None)?;
            }
            put(n(Slot::Gate), &g.gate_up[..d.inter * hid], Some(d.inter))?;
            put(n(Slot::Up), &g.gate_up[d.inter * hid..], Some(d.inter))?;
            put(n(Slot::Down), &g.down, Some(hid))?;
        }
        for (name, v) in grads.norm.named(None, Slot::Norm) {
            put(name, v, None)?;
        }
        let embed_rows = grads.embed.len() / hid;
        let embed = tensors::hf(None, Slot::Embed);
        match (cfg.score_labels.is_some(), cfg.tie_word_embeddings) {
            (true, _) => {
                put(tensors::hf(None, Slot::Score), &grads.lm_head, Some(d.vocab))?;
                put(embed, &grads.embed, Some(embed_rows))?;
            }
            (false, true) => put(embed, &sum(&grads.embed, &grads.lm_head), Some(embed_rows))?,
            (false, false) => {
                put(tensors::hf(None, Slot::LmHead), &grads.lm_head, Some(d.vocab))?;
                put(embed, &grads.embed, Some(embed_rows))?;
            }
        }
        Ok(out)
    }
}
