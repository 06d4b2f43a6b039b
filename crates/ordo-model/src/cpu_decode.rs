//! KV-cached decoding on the CPU in f32, with no tensor graph per token: each row's keys and values
//! without padding, a step's tokens through the one CPU block forward ([`CpuDecoder::block`]);
//! rows that finished are simply not fed. The tests check it against the tensor path
//! (`Decoder::forward`) on every model family.

use crate::attention::{cached_attention, CachedDims, Mask};
use crate::cpu::{Attend, BlockBuffers, CpuDecoder, Keep, Products};
use crate::error::{ModelError, Result};

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

/// Attention over a [`CpuCache`]: stores each chunk token's key and value at its slot, then attends
/// over the row's cached keys.
struct CacheAttention<'a> {
    cache: &'a mut CpuCache,
    /// Each token of the chunk: its row and its slot in the row's cache (also its position).
    tokens: &'a [(usize, usize)],
    dims: CachedDims,
}

impl Attend for CacheAttention<'_> {
    fn attend(&mut self, layer: usize, mask: Mask, qkv: &[f32], out: &mut [f32]) {
        let d = self.dims;
        let (kvw, w, capacity) = (d.kv_heads * d.head_dim, d.qkv_width, self.cache.capacity);
        let q_width = d.heads * d.head_dim;
        // Cache the chunk's keys and values first: a token attends to earlier tokens of its own chunk.
        for (t, &(row, slot)) in self.tokens.iter().enumerate() {
            let at = (row * capacity + slot) * kvw;
            let src = &qkv[t * w + q_width..(t + 1) * w];
            self.cache.keys[layer][at..at + kvw].copy_from_slice(&src[..kvw]);
            self.cache.values[layer][at..at + kvw].copy_from_slice(&src[kvw..]);
        }
        let (keys, values) = (&self.cache.keys[layer], &self.cache.values[layer]);
        cached_attention(self.dims, mask, qkv, self.tokens, keys, values, out);
    }
}

impl CpuDecoder {
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
            let vocab = self.vocab_in();
            if let Some(&bad) = new.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::Input(format!("token id {bad} is out of the vocabulary (size {vocab})")));
            }
            tokens.extend((0..new.len()).map(|i| (row, start + i)));
            ids.extend_from_slice(new);
            last.push(tokens.len() - 1);
        }
        let mut x = self.embed(&ids);
        let positions: Vec<usize> = tokens.iter().map(|&(_, slot)| slot).collect();
        let dims = CachedDims {
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
            qkv_width: d.qkv_width(),
            capacity: cache.capacity,
        };
        let mut attention = CacheAttention { cache, tokens: &tokens, dims };
        let mut scratch = BlockBuffers::default();
        for l in 0..self.layers.len() {
            self.block(l, &mut x, &positions, &mut attention, Products::KeptTranspose, &mut scratch, Keep::Nothing);
        }
        for &(row, new) in feed {
            cache.lens[row] += new.len();
        }
        let mut last_x = vec![0f32; last.len() * d.hidden];
        for (k, &t) in last.iter().enumerate() {
            last_x[k * d.hidden..(k + 1) * d.hidden].copy_from_slice(&x[t * d.hidden..(t + 1) * d.hidden]);
        }
        let mut normed = vec![0f32; last_x.len()];
        self.norm.rows(&last_x, &mut normed);
        let mut logits = vec![0f32; last.len() * d.vocab];
        self.lm_head.apply(&normed, last.len(), &mut logits, false, Products::KeptTranspose);
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
}
