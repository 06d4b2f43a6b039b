//! Batched, seeded sampling with a KV cache: greedy, temperature, top-k, top-p, stop tokens.

use crate::decoder::{DecodeCache, Decoder};
use crate::error::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

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
/// Prompts of different lengths are fine; each row's positions count its own tokens, so a row's
/// output does not depend on the other rows. Row `i` draws from its own random stream (seed, i),
/// so results are reproducible. On the CPU (f32) the [`CpuDecoder`](crate::cpu::CpuDecoder) path runs, elsewhere the
/// tensor path with left padding; both compute the same function of the weights.
pub fn generate(model: &Decoder, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Vec<u32>>> {
    generate_on(model, prompts, params, SamplingPath::Auto)
}

/// Which implementation [`generate_on`] decodes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingPath {
    /// The CPU path where it applies (CPU, f32, not a classifier), else the tensor path.
    Auto,
    /// Always the tensor path (candle ops with a KV cache), e.g. as a reference or baseline.
    Tensor,
}

/// [`generate`] on a chosen implementation.
pub fn generate_on(
    model: &Decoder,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    path: SamplingPath,
) -> Result<Vec<Vec<u32>>> {
    params.validate()?;
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Input(format!("prompt {i} is empty; every prompt needs at least one token")));
    }
    if prompts.is_empty() || params.max_new_tokens == 0 {
        return Ok(vec![Vec::new(); prompts.len()]);
    }
    let longest = prompts.iter().map(Vec::len).max().expect("non-empty batch");
    let capacity = longest.saturating_add(params.max_new_tokens);
    let max = model.config().max_position_embeddings;
    if capacity > max {
        return Err(ModelError::Input(format!(
            "a {longest}-token prompt plus {} new tokens exceeds the model's {max} positions \
             (max_position_embeddings); ask for at most {} new tokens",
            params.max_new_tokens,
            max.saturating_sub(longest)
        )));
    }
    let cpu = match path {
        SamplingPath::Auto => model.cpu_decoder()?,
        SamplingPath::Tensor => None,
    };
    match cpu {
        Some(cpu) => {
            let mut cache = cpu.cache(prompts.len(), capacity);
            let mut prefilled = false;
            sample_loop(prompts, params, |feed| match std::mem::replace(&mut prefilled, true) {
                false => cpu.prefill(&mut cache, feed),
                true => cpu.step(&mut cache, feed),
            })
        }
        None => {
            let mut cache = DecodeCache::new(model.config(), prompts.len(), capacity);
            sample_loop(prompts, params, |feed| tensor_step(model, &mut cache, prompts.len(), feed))
        }
    }
}

/// The sampling loop over a step function that appends each fed row's tokens and returns the
/// logits after its last one (`[fed rows * vocab]`); finished rows are not fed again.
fn sample_loop(
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    mut step: impl FnMut(&[(usize, &[u32])]) -> Result<Vec<f32>>,
) -> Result<Vec<Vec<u32>>> {
    let b = prompts.len();
    let mut rngs: Vec<ChaCha8Rng> = (0..b)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            rng.set_stream(r as u64);
            rng
        })
        .collect();
    let mut out = vec![Vec::with_capacity(params.max_new_tokens); b];
    let feed: Vec<(usize, &[u32])> = prompts.iter().enumerate().map(|(r, p)| (r, &p[..])).collect();
    let mut fed: Vec<usize> = (0..b).collect();
    let mut logits = step(&feed)?;
    for new in 0..params.max_new_tokens {
        let vocab = logits.len() / fed.len();
        // Each fed row draws from its own generator, so rows can be sampled on any thread. `fed` is
        // ascending: pick out the fed rows' generators in one pass.
        let mut fed_rows = fed.iter().peekable();
        let mut fed_rngs: Vec<&mut ChaCha8Rng> =
            rngs.iter_mut().enumerate().filter_map(|(r, rng)| fed_rows.next_if_eq(&&r).map(|_| rng)).collect();
        debug_assert_eq!(fed_rngs.len(), fed.len());
        let tokens: Vec<u32> = fed_rngs
            .par_iter_mut()
            .zip(logits.par_chunks(vocab))
            .with_min_len((4096 / vocab).max(1))
            .map(|(rng, row)| sample_row(row, params, *rng))
            .collect();
        let mut next: Vec<(usize, [u32; 1])> = Vec::with_capacity(fed.len());
        for (&r, &tok) in fed.iter().zip(&tokens) {
            out[r].push(tok);
            if !params.stop_tokens.contains(&tok) {
                next.push((r, [tok]));
            }
        }
        if next.is_empty() || new + 1 == params.max_new_tokens {
            break;
        }
        fed = next.iter().map(|(r, _)| *r).collect();
        let feed: Vec<(usize, &[u32])> = next.iter().map(|(r, t)| (*r, &t[..])).collect();
        logits = step(&feed)?;
    }
    Ok(out)
}

/// One step of the tensor path: fed rows' chunks left-padded to a common width, every other row a
/// single padding position (masked, so it changes nothing).
fn tensor_step(model: &Decoder, cache: &mut DecodeCache, rows: usize, feed: &[(usize, &[u32])]) -> Result<Vec<f32>> {
    let width = feed.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    let mut ids = vec![vec![0u32; width]; rows];
    let mut valid = vec![vec![0u8; width]; rows];
    for &(r, chunk) in feed {
        let pad = width - chunk.len();
        ids[r][pad..].copy_from_slice(chunk);
        valid[r][pad..].fill(1);
    }
    let logits = model.decode(&ids, &valid, cache)?.to_vec2::<f32>()?;
    Ok(feed.iter().flat_map(|&(r, _)| logits[r].iter().copied()).collect())
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
