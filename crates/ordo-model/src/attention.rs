//! Attention: which keys each query sees (the mask, in one place) and its CPU kernels, over a padded
//! `[rows, seq]` grid (full sequences, with the backward pass) and over a KV cache (decoding).
//!
//! Every path builds its mask from [`Mask`]: the candle path's additive bias ([`additive_bias`]),
//! the CPU training and evaluation pass ([`GridAttention`]) and CPU decoding ([`cached_attention`]).
//! A key is seen by a query when it is a real token at the query's position or before it (and,
//! with a sliding window, fewer than `window` positions before it). Positions count real tokens only,
//! so padding anywhere in a row changes nothing.

use crate::config::ModelConfig;
use crate::kernels::{dot_strided, gemm_with, softmax_in_place, weighted_rows_sum, Operand};
use rayon::prelude::*;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::Arc;

/// Which keys a query sees: causal, optionally within a sliding window of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mask {
    /// A query at position p sees keys at positions p - window + 1 ..= p (None: every earlier key).
    window: Option<NonZeroUsize>,
}

impl Mask {
    /// The mask of `layer`. Every layer of every supported model is causal over the whole sequence:
    /// `config.rs` refuses sliding-window configurations (`use_sliding_window = true`).
    pub(crate) fn of(_cfg: &ModelConfig, _layer: usize) -> Self {
        Mask { window: None }
    }

    /// A mask that sees at most `window` positions (the query's own included); `None` is causal.
    #[cfg(test)]
    pub(crate) fn window(window: Option<usize>) -> Self {
        Mask { window: window.map(|w| NonZeroUsize::new(w).expect("a window of at least one position")) }
    }

    /// Whether a query at position `query` sees a real key at position `key`.
    #[inline]
    pub(crate) fn sees(&self, query: usize, key: usize) -> bool {
        key <= query && self.window.is_none_or(|w| query - key < w.get())
    }

    /// The positions a query at `query` sees, when every position before it is a real token.
    #[inline]
    pub(crate) fn keys(&self, query: usize) -> Range<usize> {
        let start = self.window.map_or(0, |w| (query + 1).saturating_sub(w.get()));
        start..query + 1
    }
}

/// The candle path's additive bias `[rows, queries, keys]` (row-major; 0 = seen, -1e9 = masked) of a
/// chunk whose first query is cache index `chunk_offset`: query `i` of row `r` is at position
/// `query_positions[r][i]`; key `k` is at `key_positions[r][k]` and is a real token when
/// `key_valid[r][k]` is set.
pub(crate) fn additive_bias(
    mask: Mask,
    query_positions: &[Vec<u32>],
    key_positions: &[Vec<u32>],
    key_valid: &[Vec<u8>],
    chunk_offset: usize,
) -> Vec<f32> {
    let t = query_positions.first().map_or(0, Vec::len);
    let total = key_valid.first().map_or(0, Vec::len);
    let mut bias = vec![0f32; query_positions.len() * t * total];
    for (r, queries) in query_positions.iter().enumerate() {
        for (i, &q) in queries.iter().enumerate() {
            for k in 0..total {
                // Keys after the query's own index are later tokens (or padding), whatever their position:
                // a padding query has the position of the next real token.
                let seen = k <= chunk_offset + i
                    && key_valid[r][k] != 0
                    && mask.sees(q as usize, key_positions[r][k] as usize);
                if !seen {
                    bias[(r * t + i) * total + k] = -1e9;
                }
            }
        }
    }
    bias
}

/// Shapes of one attention call over a padded grid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnDims {
    pub b: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub t: usize,
    pub d: usize,
}

/// `softmax(q kᵀ · scale + mask) v` per (row, head) over a padded grid: `q` [b, heads, t, d], `k`/`v`
/// [b, kv_heads, t, d] (grouped-query attention when kv_heads < heads). A query that sees no key
/// gets zeros. The backward pass recomputes the probabilities instead of storing them.
#[derive(Debug, Clone)]
pub(crate) struct GridAttention {
    /// `[b, t]`: 1 for a real token, 0 for padding.
    valid: Arc<Vec<u8>>,
    /// `[b, t]`: each slot's position (real tokens before it).
    positions: Arc<Vec<usize>>,
    scale: f32,
}

impl GridAttention {
    /// Attention over rows whose real tokens `valid` (`[b * t]`) marks, with this scale.
    pub(crate) fn new(valid: Arc<Vec<u8>>, t: usize, scale: f32) -> Self {
        let mut positions = vec![0usize; valid.len()];
        for (pos, flags) in positions.chunks_mut(t.max(1)).zip(valid.chunks(t.max(1))) {
            let mut next = 0;
            for (p, &v) in pos.iter_mut().zip(flags) {
                *p = next;
                next += (v != 0) as usize;
            }
        }
        GridAttention { valid, positions: Arc::new(positions), scale }
    }

    /// The probabilities `[t, t]` of one (row, head) into `p`: `softmax(q kᵀ · scale)` with the keys
    /// the query does not see masked to 0; a query that sees no key gets a row of zeros.
    fn probs(&self, dims: &AttnDims, mask: Mask, row: usize, qh: &[f32], kh: &[f32], p: &mut [f32]) {
        let AttnDims { t, d, .. } = *dims;
        gemm_serial(Operand::plain(qh, t, d), Operand::t(kh, t, d), p);
        let valid = &self.valid[row * t..(row + 1) * t];
        let positions = &self.positions[row * t..(row + 1) * t];
        for (i, p_i) in p.chunks_exact_mut(t).enumerate() {
            if mask.window.is_none() {
                // Causal: every real key up to the query (the common case, without the window's test).
                for (j, s) in p_i[..=i].iter_mut().enumerate() {
                    *s = if valid[j] != 0 { *s * self.scale } else { f32::NEG_INFINITY };
                }
            } else {
                for (j, s) in p_i[..=i].iter_mut().enumerate() {
                    let seen = valid[j] != 0 && mask.sees(positions[i], positions[j]);
                    *s = if seen { *s * self.scale } else { f32::NEG_INFINITY };
                }
            }
            if !softmax_in_place(&mut p_i[..=i]) {
                p_i[..=i].fill(0.0);
            }
            p_i[i + 1..].fill(0.0);
        }
    }

    /// `softmax(q kᵀ · scale + mask) v` for every (row, head), one task each.
    pub(crate) fn forward(&self, dims: AttnDims, mask: Mask, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let AttnDims { heads, kv_heads, t, d, .. } = dims;
        let mut out = vec![0f32; q.len()];
        let group = heads / kv_heads;
        out.par_chunks_mut(t * d).enumerate().for_each(|(bh, o)| {
            let (row, head) = (bh / heads, bh % heads);
            let kv = (row * kv_heads + head / group) * t * d;
            let mut p = vec![0f32; t * t];
            self.probs(&dims, mask, row, &q[bh * t * d..(bh + 1) * t * d], &k[kv..kv + t * d], &mut p);
            gemm_serial(Operand::plain(&p, t, t), Operand::plain(&v[kv..kv + t * d], t, d), o);
        });
        out
    }

    /// Gradients of q, k and v given the output's gradient `g`, recomputing the probabilities:
    /// dP = g vᵀ, dS = P ∘ (dP - rowsum(P ∘ dP)) · scale, dq = dS k, dk = dSᵀ q, dv = Pᵀ g.
    pub(crate) fn backward(
        &self,
        dims: AttnDims,
        mask: Mask,
        (q, k, v): (&[f32], &[f32], &[f32]),
        g: &[f32],
    ) -> [Vec<f32>; 3] {
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
                    self.probs(&dims, mask, row, qh, kh, &mut p);
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
                    gemm_with(Operand::t(&ds, t, t), Operand::plain(qh, t, d), dk, true, false);
                    gemm_with(Operand::t(&p, t, t), Operand::plain(gh, t, d), dv, true, false);
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

/// Shapes of [`cached_attention`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of a token's stacked q/k/v row.
    pub qkv_width: usize,
    /// Token slots per row of the cache.
    pub capacity: usize,
}

/// Attention of each token of a decoding chunk over its row's cached keys (`tokens`: each token's
/// row and slot, which is also its position: a cache holds no padding). `qkv` holds the chunk's
/// token-major q/k/v rows, `keys`/`values` the cache `[rows, capacity, kv_heads * head_dim]` (the
/// chunk's own keys already in it); `out` gets `[tokens, heads * head_dim]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cached_attention(
    d: CachedDims,
    mask: Mask,
    qkv: &[f32],
    tokens: &[(usize, usize)],
    keys: &[f32],
    values: &[f32],
    out: &mut [f32],
) {
    let (hd, kvw, groups) = (d.head_dim, d.kv_heads * d.head_dim, d.heads / d.kv_heads);
    let q_width = d.heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(q_width).zip(tokens.par_iter()).enumerate().for_each(|(t, (o, &(row, slot)))| {
        let q = &qkv[t * d.qkv_width..t * d.qkv_width + q_width];
        let seen = mask.keys(slot);
        let base = (row * d.capacity + seen.start) * kvw;
        let mut scores = vec![0f32; seen.len()];
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let h = i.wrapping_add(seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(6364136223846793005);
                ((h >> 33) % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// Each slot's position in its row (real tokens before it).
    fn positions(valid: &[u8], t: usize) -> Vec<usize> {
        (0..valid.len()).map(|s| valid[s - s % t..s].iter().filter(|&&x| x != 0).count()).collect()
    }

    /// Attention written out element by element over `[b, heads, t, d]` grids: a query sees the real keys
    /// at or before it within `window` positions (written out here, not through `Mask`), plus `bias`
    /// (`[b, t, t]`, added to the scores) when given. The reference.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        dims: AttnDims,
        valid: &[u8],
        window: Option<usize>,
        bias: Option<&[f32]>,
        scale: f32,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Vec<f32> {
        let AttnDims { b, heads, kv_heads, t, d } = dims;
        let pos = positions(valid, t);
        let mut out = vec![0f32; q.len()];
        for r in 0..b {
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                for i in 0..t {
                    let (pi, qi) = (pos[r * t + i], &q[((r * heads + h) * t + i) * d..][..d]);
                    let seen: Vec<usize> = match bias {
                        Some(_) => (0..t).collect(),
                        None => (0..=i)
                            .filter(|&j| valid[r * t + j] != 0 && window.is_none_or(|w| pi - pos[r * t + j] < w))
                            .collect(),
                    };
                    let s: Vec<f64> = seen
                        .iter()
                        .map(|&j| {
                            let kj = &k[((r * kv_heads + kvh) * t + j) * d..][..d];
                            let dot: f64 = qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum();
                            dot * scale as f64 + bias.map_or(0.0, |bias| bias[(r * t + i) * t + j] as f64)
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                    for (&j, &sj) in seen.iter().zip(&s) {
                        let p = ((sj - max).exp() / z) as f32;
                        let vj = &v[((r * kv_heads + kvh) * t + j) * d..][..d];
                        for (o, &x) in out[((r * heads + h) * t + i) * d..][..d].iter_mut().zip(vj) {
                            *o += p * x;
                        }
                    }
                }
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
    }

    #[test]
    fn masks_see_what_their_window_allows() {
        let causal = Mask::window(None);
        assert!(causal.sees(5, 0) && causal.sees(5, 5) && !causal.sees(5, 6));
        assert_eq!(causal.keys(4), 0..5);
        let w3 = Mask::window(Some(3));
        assert!(w3.sees(5, 3) && !w3.sees(5, 2) && !w3.sees(5, 6));
        assert_eq!(w3.keys(5), 3..6);
        assert_eq!(w3.keys(1), 0..2);
    }

    /// Two rows (one with padding at its start and inside it), grouped heads.
    const DIMS: AttnDims = AttnDims { b: 2, heads: 4, kv_heads: 2, t: 7, d: 4 };
    const VALID: [u8; 14] = [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1];

    #[test]
    fn grid_attention_matches_the_reference_and_finite_differences_under_windows() {
        let dims = DIMS;
        let n = |h| dims.b * h * dims.t * dims.d;
        let (q, k, v) = (values(n(4), 1), values(n(2), 2), values(n(2), 3));
        let g = values(n(4), 4);
        for window in [None, Some(1), Some(3)] {
            let mask = Mask::window(window);
            let att = GridAttention::new(Arc::new(VALID.to_vec()), dims.t, 0.5);
            let got = att.forward(dims, mask, &q, &k, &v);
            let want = naive(dims, &VALID, window, None, 0.5, &q, &k, &v);
            assert!(max_diff(&got, &want) < 1e-5, "window {window:?}: forward differs");
            // Every gradient element against central differences of sum(out * g) on the reference.
            let [dq, dk, dv] = att.backward(dims, mask, (&q, &k, &v), &g);
            let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
                naive(dims, &VALID, window, None, 0.5, q, k, v).iter().zip(&g).map(|(a, b)| (a * b) as f64).sum()
            };
            let h = 1e-2f32;
            for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
                for at in 0..grad.len() {
                    let mut xs = [q.clone(), k.clone(), v.clone()];
                    xs[which][at] += h;
                    let up = loss(&xs[0], &xs[1], &xs[2]);
                    xs[which][at] -= 2.0 * h;
                    let down = loss(&xs[0], &xs[1], &xs[2]);
                    let fd = ((up - down) / (2.0 * h as f64)) as f32;
                    assert!(
                        (fd - grad[at]).abs() < 2e-3,
                        "window {window:?}, input {which}[{at}]: {} vs {fd}",
                        grad[at]
                    );
                }
            }
        }
    }

    #[test]
    fn cached_attention_decoding_token_by_token_equals_grid_attention_under_windows() {
        // Two rows decoded one token per step into a cache with room to spare.
        let (rows, heads, kv_heads, hd, t) = (2, 4, 2, 4, 6);
        let capacity = t + 3;
        let dims = AttnDims { b: rows, heads, kv_heads, t, d: hd };
        let qkv_width = (heads + 2 * kv_heads) * hd;
        let kvw = kv_heads * hd;
        // Token-major q/k/v rows per (row, position).
        let qkv = values(rows * t * qkv_width, 7);
        let at = |r: usize, i: usize| &qkv[(r * t + i) * qkv_width..(r * t + i + 1) * qkv_width];
        let heads_of = |from: usize, count: usize| -> Vec<f32> {
            let mut out = vec![0f32; rows * count * t * hd];
            for r in 0..rows {
                for h in 0..count {
                    for i in 0..t {
                        out[((r * count + h) * t + i) * hd..][..hd].copy_from_slice(&at(r, i)[from + h * hd..][..hd]);
                    }
                }
            }
            out
        };
        let (q, k, v) =
            (heads_of(0, heads), heads_of(heads * hd, kv_heads), heads_of((heads + kv_heads) * hd, kv_heads));
        let cd = CachedDims { heads, kv_heads, head_dim: hd, qkv_width, capacity };
        let scale = 1.0 / (hd as f32).sqrt();
        for window in [None, Some(2), Some(4)] {
            let mask = Mask::window(window);
            let grid = GridAttention::new(Arc::new(vec![1; rows * t]), t, scale).forward(dims, mask, &q, &k, &v);
            let (mut keys, mut vals) = (vec![0f32; rows * capacity * kvw], vec![0f32; rows * capacity * kvw]);
            for i in 0..t {
                let mut chunk = Vec::new();
                for r in 0..rows {
                    let slot = (r * capacity + i) * kvw;
                    keys[slot..slot + kvw].copy_from_slice(&at(r, i)[heads * hd..][..kvw]);
                    vals[slot..slot + kvw].copy_from_slice(&at(r, i)[heads * hd + kvw..][..kvw]);
                    chunk.extend_from_slice(at(r, i));
                }
                let tokens: Vec<(usize, usize)> = (0..rows).map(|r| (r, i)).collect();
                let mut out = vec![0f32; rows * heads * hd];
                cached_attention(cd, mask, &chunk, &tokens, &keys, &vals, &mut out);
                for r in 0..rows {
                    for h in 0..heads {
                        let want = &grid[((r * heads + h) * t + i) * hd..][..hd];
                        let got = &out[(r * heads + h) * hd..][..hd];
                        assert!(max_diff(want, got) < 1e-5, "window {window:?}, row {r}, step {i}, head {h}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_additive_bias_masks_what_the_grid_kernel_masks() {
        // Full sequences with padding at the start of one row and inside it: the bias of the candle path
        // added to the scores gives the grid kernel's outputs at every real query.
        let dims = DIMS;
        let (b, t) = (dims.b, dims.t);
        let pos = positions(&VALID, t);
        // A padding query gets the position of the next real token, as `Decoder::run` gives it.
        let query_positions: Vec<Vec<u32>> =
            (0..b).map(|r| pos[r * t..(r + 1) * t].iter().map(|&p| p as u32).collect()).collect();
        let key_valid: Vec<Vec<u8>> = VALID.chunks(t).map(<[u8]>::to_vec).collect();
        let n = |h| b * h * t * dims.d;
        let (q, k, v) = (values(n(4), 11), values(n(2), 12), values(n(2), 13));
        for window in [None, Some(2), Some(3)] {
            let mask = Mask::window(window);
            let bias = additive_bias(mask, &query_positions, &query_positions, &key_valid, 0);
            let with_bias = naive(dims, &VALID, None, Some(&bias), 0.5, &q, &k, &v);
            let grid = GridAttention::new(Arc::new(VALID.to_vec()), t, 0.5).forward(dims, mask, &q, &k, &v);
            for r in 0..b {
                for h in 0..dims.heads {
                    for i in (0..t).filter(|&i| VALID[r * t + i] != 0) {
                        let at = ((r * dims.heads + h) * t + i) * dims.d;
                        let (a, g) = (&with_bias[at..at + dims.d], &grid[at..at + dims.d]);
                        assert!(max_diff(a, g) < 1e-5, "window {window:?}, row {r}, head {h}, query {i}");
                    }
                }
            }
        }
        // A cached step: the one query (cache index 4, position 3) sees keys by position, never later indices.
        let valid = vec![vec![0u8, 1, 1, 1, 1]];
        let key_positions = vec![vec![0u32, 0, 1, 2, 3]];
        for (window, seen) in [(None, vec![1, 2, 3, 4]), (Some(2), vec![3, 4])] {
            let bias = additive_bias(Mask::window(window), &[vec![3u32]], &key_positions, &valid, 4);
            assert_eq!((0..5).filter(|&k| bias[k] == 0.0).collect::<Vec<_>>(), seen, "window {window:?}");
        }
    }
}
