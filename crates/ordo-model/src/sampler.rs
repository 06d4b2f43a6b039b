//! Batched, seeded sampling with a KV cache: greedy, temperature, top-k, top-p, stop tokens.

use crate::decoder::{DecodeCache, Decoder};
use crate::error::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How to pick each new token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Upper bound on new tokens per row.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (None: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (None: all).
    pub top_p: Option<f64>,
    /// A row stops after producing one of these (it is kept in the output).
    pub stop_tokens: Vec<u32>,
    /// Seed of the per-row random streams.
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams { max_new_tokens, temperature: 0.0, top_k: None, top_p: None, stop_tokens: vec![], seed: 0 }
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::Input(format!("temperature must be >= 0, got {}", self.temperature)));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ModelError::Input(format!("top_p must be in (0, 1], got {p}")));
            }
        }
        if self.top_k == Some(0) {
            return Err(ModelError::Input("top_k must be at least 1".into()));
        }
        Ok(())
    }
}

/// Generates a continuation for every prompt; returns the new tokens of each row.
///
/// Prompts of different lengths are left-padded; each row's positions count its own tokens,
/// so a row's output does not depend on the other rows. Row `i` draws from its own random
/// stream (seed, i), so results are reproducible.
pub fn generate(model: &Decoder, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Vec<u32>>> {
    params.validate()?;
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Input(format!("prompt {i} is empty; every prompt needs at least one token")));
    }
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().expect("non-empty batch");
    let mut ids = vec![vec![0u32; width]; b];
    let mut valid = vec![vec![0u8; width]; b];
    for (r, p) in prompts.iter().enumerate() {
        let pad = width - p.len();
        ids[r][pad..].copy_from_slice(p);
        valid[r][pad..].fill(1);
    }
    let mut cache = DecodeCache::new(model.config(), b, width + params.max_new_tokens);
    let mut rngs: Vec<ChaCha8Rng> = (0..b)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            rng.set_stream(r as u64);
            rng
        })
        .collect();
    let mut out = vec![Vec::with_capacity(params.max_new_tokens); b];
    let mut done = vec![false; b];
    if params.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut logits = model.decode(&ids, &valid, &mut cache)?;
    for step in 0..params.max_new_tokens {
        let rows = logits.to_vec2::<f32>()?;
        let mut next = vec![vec![0u32]; b];
        let mut next_valid = vec![vec![0u8]; b];
        for r in 0..b {
            if done[r] {
                continue;
            }
            let tok = sample_row(&rows[r], params, &mut rngs[r]);
            out[r].push(tok);
            next[r][0] = tok;
            next_valid[r][0] = 1;
            if params.stop_tokens.contains(&tok) {
                done[r] = true;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == params.max_new_tokens {
            break;
        }
        logits = model.decode(&next, &next_valid, &mut cache)?;
    }
    Ok(out)
}

/// Picks one token from a row of logits.
pub fn sample_row(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> u32 {
    if params.temperature == 0.0 {
        return argmax(logits);
    }
    let inv_t = 1.0 / params.temperature;
    let mut cand: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l as f64 * inv_t)).collect();
    let by_logit_desc = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if let Some(k) = params.top_k.filter(|&k| k < cand.len()) {
        cand.select_nth_unstable_by(k - 1, by_logit_desc);
        cand.truncate(k);
    }
    cand.sort_unstable_by(by_logit_desc);
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|(_, l)| (l - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(p) = params.top_p {
        let mut cum = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                cum += q;
                cum >= p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, q) in probs.iter().enumerate() {
        if u < *q {
            return cand[i].0;
        }
        u -= q;
    }
    cand[probs.len() - 1].0
}

/// Index of the largest value (the first one on ties, as torch's argmax).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}
