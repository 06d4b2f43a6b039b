//! Which computation a padded batch's positions really need: one state per distinct real-token
//! prefix, shared by every row that starts with it.
//!
//! A decoder's state at a position depends only on the real tokens up to and including it (attention
//! is causal and masks padding, and positions count real tokens only). Rows that begin with the same
//! tokens (a GRPO group's eight completions of one prompt, a DPO pair that differs in its last word)
//! therefore hold the same states along that prefix, and padding holds none that matter. The
//! hand-written CPU pass ([`crate::cpu_train`]) runs its per-token work (projections, norms, the MLP)
//! once per distinct prefix, in a compact token-major layout, and only attention sees the padded
//! `[rows, seq]` grid: this module maps between the two. Sharing is exact: the backward pass adds
//! the gradients that the rows sharing a state send it, which is the chain rule for a value used
//! several times.

use rayon::prelude::*;
use std::collections::HashMap;

/// Marks a padding slot in [`TokenLayout::token_of_slot`].
const PADDING: u32 = u32::MAX;

/// The distinct real-token prefixes of a padded batch and where each `(row, position)` slot reads its state.
pub(crate) struct TokenLayout {
    /// `rows * seq` slots, row-major: the compact token each slot reads, or [`PADDING`].
    token_of_slot: Vec<u32>,
    /// The slots of compact token `c` are `slots[slot_start[c]..slot_start[c + 1]]`, ascending (the
    /// first is its owner: the slot whose attention output the token takes).
    slot_start: Vec<usize>,
    slots: Vec<u32>,
    /// Per compact token, in order of first appearance: its id and its position (real tokens before it).
    pub ids: Vec<u32>,
    pub positions: Vec<usize>,
    pub rows: usize,
    pub seq: usize,
}

impl TokenLayout {
    /// The layout of equal-length `ids` rows with `valid` marking real tokens (0 = padding, anywhere).
    pub fn new(ids: &[Vec<u32>], valid: &[Vec<u8>]) -> Self {
        let (rows, seq) = (ids.len(), ids.first().map_or(0, Vec::len));
        let mut token_of_slot = Vec::with_capacity(rows * seq);
        // A compact token is a node of the trie of real-token sequences: (parent, id) -> token.
        let mut children: HashMap<(u32, u32), u32> = HashMap::new();
        let (mut tok_ids, mut positions) = (Vec::new(), Vec::new());
        for (row, mask) in ids.iter().zip(valid) {
            let (mut parent, mut depth) = (PADDING, 0);
            for (&id, &v) in row.iter().zip(mask) {
                if v == 0 {
                    token_of_slot.push(PADDING);
                    continue;
                }
                let next = tok_ids.len() as u32;
                let tok = *children.entry((parent, id)).or_insert(next);
                if tok == next {
                    tok_ids.push(id);
                    positions.push(depth);
                }
                token_of_slot.push(tok);
                (parent, depth) = (tok, depth + 1);
            }
        }
        let mut counts = vec![0usize; tok_ids.len() + 1];
        for &t in token_of_slot.iter().filter(|&&t| t != PADDING) {
            counts[t as usize + 1] += 1;
        }
        let slot_start: Vec<usize> = counts
            .iter()
            .scan(0, |acc, &c| {
                *acc += c;
                Some(*acc)
            })
            .collect();
        let mut fill = slot_start.clone();
        let mut slots = vec![0u32; slot_start[tok_ids.len()]];
        for (slot, &t) in token_of_slot.iter().enumerate().filter(|(_, &t)| t != PADDING) {
            slots[fill[t as usize]] = slot as u32;
            fill[t as usize] += 1;
        }
        TokenLayout { token_of_slot, slot_start, slots, ids: tok_ids, positions, rows, seq }
    }

    /// The number of compact tokens (distinct real-token prefixes).
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// The slots that read compact token `c` (its owner first).
    fn slots_of(&self, c: usize) -> &[u32] {
        &self.slots[self.slot_start[c]..self.slot_start[c + 1]]
    }

    /// Compact token-major rows (`width` wide) spread over every slot: `[rows * seq * width]`, zeros at padding.
    pub fn scatter(&self, compact: &[f32], width: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.seq * width];
        out.par_chunks_mut(width).zip(self.token_of_slot.par_iter()).with_min_len(64).for_each(|(o, &t)| {
            if t != PADDING {
                o.copy_from_slice(&compact[t as usize * width..(t as usize + 1) * width]);
            }
        });
        out
    }

    /// The transpose of [`TokenLayout::scatter`]: per compact token, the sum of its slots' rows.
    pub fn gather_sum(&self, per_slot: &[f32], width: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.tokens() * width];
        out.par_chunks_mut(width).enumerate().with_min_len(64).for_each(|(c, o)| {
            for &s in self.slots_of(c) {
                for (a, b) in o.iter_mut().zip(&per_slot[s as usize * width..(s as usize + 1) * width]) {
                    *a += b;
                }
            }
        });
        out
    }

    /// A head-major `[rows, heads, seq, d]` copy of the `heads * d` columns from `at` of compact
    /// token-major rows `row_width` wide: every slot of a token gets its values (`owners_only`: only
    /// its owner slot, the others zeros), padding slots zeros.
    pub fn to_heads(
        &self,
        compact: &[f32],
        row_width: usize,
        at: usize,
        heads: usize,
        d: usize,
        owners_only: bool,
    ) -> Vec<f32> {
        let t = self.seq;
        let mut head_major = vec![0f32; self.rows * heads * t * d];
        head_major.par_chunks_mut(t * d).enumerate().for_each(|(bh, hm)| {
            let (row, head) = (bh / heads, bh % heads);
            for (i, dst) in hm.chunks_exact_mut(d).enumerate() {
                let slot = row * t + i;
                let tok = self.token_of_slot[slot];
                if tok == PADDING || (owners_only && self.slots_of(tok as usize)[0] as usize != slot) {
                    continue;
                }
                let src = tok as usize * row_width + at + head * d;
                dst.copy_from_slice(&compact[src..src + d]);
            }
        });
        head_major
    }

    /// Writes head-major `[rows, heads, seq, d]` values into the `heads * d` columns from `at` of compact
    /// token-major rows: each token takes its owner slot's values, or with `sum` the sum over its slots
    /// (a backward pass's gradients).
    #[allow(clippy::too_many_arguments)]
    pub fn heads_to_tokens(
        &self,
        head_major: &[f32],
        heads: usize,
        d: usize,
        compact: &mut [f32],
        row_width: usize,
        at: usize,
        sum: bool,
    ) {
        let t = self.seq;
        compact.par_chunks_mut(row_width).enumerate().with_min_len(16).for_each(|(c, r)| {
            let slots = self.slots_of(c);
            let used = if sum { slots } else { &slots[..1] };
            for head in 0..heads {
                let dst = &mut r[at + head * d..at + (head + 1) * d];
                for (n, &slot) in used.iter().enumerate() {
                    let (row, i) = (slot as usize / t, slot as usize % t);
                    let src = &head_major[((row * heads + head) * t + i) * d..][..d];
                    if n == 0 {
                        dst.copy_from_slice(src);
                    } else {
                        dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_common_real_token_prefixes_and_skips_padding() {
        // Rows 0 and 1 share "5 6"; row 2 is row 0 left-padded (same real tokens, same states);
        // row 3 has a padded hole and then diverges.
        let ids = vec![vec![5, 6, 7, 0], vec![5, 6, 8, 9], vec![0, 5, 6, 7], vec![5, 0, 6, 9]];
        let valid = vec![vec![1, 1, 1, 0], vec![1, 1, 1, 1], vec![0, 1, 1, 1], vec![1, 0, 1, 1]];
        let layout = TokenLayout::new(&ids, &valid);
        assert_eq!(layout.ids, vec![5, 6, 7, 8, 9, 9]);
        assert_eq!(layout.positions, vec![0, 1, 2, 2, 3, 2]);
        let p = PADDING;
        assert_eq!(layout.token_of_slot, vec![0, 1, 2, p, 0, 1, 3, 4, p, 0, 1, 2, 0, p, 1, 5]);
        assert_eq!(layout.slots_of(0), &[0, 4, 9, 12]);
        assert_eq!(layout.slots_of(2), &[2, 11]);
        // Scatter then gather-sum multiplies each token by its number of slots.
        let compact: Vec<f32> = (0..6).map(|c| c as f32).collect();
        let spread = layout.scatter(&compact, 1);
        assert_eq!(spread, vec![0., 1., 2., 0., 0., 1., 3., 4., 0., 0., 1., 2., 0., 0., 1., 5.]);
        assert_eq!(layout.gather_sum(&spread, 1), vec![0., 4., 4., 3., 4., 5.]);
    }

    #[test]
    fn heads_round_trip_through_owner_slots_and_sum_over_all() {
        let ids = vec![vec![1, 2, 3], vec![1, 2, 4]];
        let valid = vec![vec![1, 1, 1], vec![1, 1, 1]];
        let layout = TokenLayout::new(&ids, &valid);
        assert_eq!(layout.tokens(), 4);
        // Two heads of width 1 at column 1 of rows 3 wide.
        let compact: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let hm = layout.to_heads(&compact, 3, 1, 2, 1, false);
        // [row, head, seq]: row 0 reads tokens 0,1,2; row 1 reads 0,1,3.
        assert_eq!(hm, vec![1., 4., 7., 2., 5., 8., 1., 4., 10., 2., 5., 11.]);
        let owners = layout.to_heads(&compact, 3, 1, 2, 1, true);
        assert_eq!(owners, vec![1., 4., 7., 2., 5., 8., 0., 0., 10., 0., 0., 11.]);
        let mut back = vec![0f32; 12];
        layout.heads_to_tokens(&hm, 2, 1, &mut back, 3, 1, false);
        assert_eq!(back, vec![0., 1., 2., 0., 4., 5., 0., 7., 8., 0., 10., 11.]);
        layout.heads_to_tokens(&hm, 2, 1, &mut back, 3, 1, true);
        assert_eq!(back, vec![0., 2., 4., 0., 8., 10., 0., 7., 8., 0., 10., 11.]);
    }
}
