//! Statistics across seeds: means with percentile-bootstrap 95% intervals, and permutation tests
//! of arm-vs-arm differences. Every resampling draw comes from a caller-given seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples drawn for an interval.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// Random relabellings of a permutation test when exact enumeration would take more.
pub const PERMUTATIONS: usize = 10_000;

/// A mean over seeds with its 95% bootstrap interval; `mean` is None when no seed measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: Option<f64>,
    /// 2.5th and 97.5th percentiles of the bootstrap distribution of the mean (None with < 2 values).
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Number of seeds that measured the figure.
    pub n: usize,
    /// Every seed's value, in seed order (None: that seed could not measure it).
    pub values: Vec<Option<f64>>,
}

/// The arithmetic mean, None for no values.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The q-quantile of sorted values with linear interpolation between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < sorted.len() {
        sorted[i] * (1.0 - frac) + sorted[i + 1] * frac
    } else {
        sorted[i]
    }
}

/// Percentile-bootstrap interval of the mean at `level` (e.g. 0.95); None with fewer than 2 values.
pub fn bootstrap_interval(xs: &[f64], level: f64, resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if xs.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..xs.len()).map(|_| xs[rng.random_range(0..xs.len())]).sum::<f64>() / xs.len() as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some((quantile(&means, tail), quantile(&means, 1.0 - tail)))
}

/// The estimate of one figure from every seed's value.
pub fn estimate(values: &[Option<f64>], seed: u64) -> Estimate {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let ci = bootstrap_interval(&present, 0.95, BOOTSTRAP_RESAMPLES, seed);
    Estimate {
        mean: mean(&present),
        lo: ci.map(|c| c.0),
        hi: ci.map(|c| c.1),
        n: present.len(),
        values: values.to_vec(),
    }
}

/// A two-sided permutation test of the difference of means between two samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// mean(a) - mean(b).
    pub difference: f64,
    /// Share of relabellings whose |difference| is at least the observed one (the observed labelling
    /// included, so never 0).
    pub p_value: f64,
    /// Whether every relabelling was enumerated (else PERMUTATIONS random ones were drawn).
    pub exact: bool,
    pub n_a: usize,
    pub n_b: usize,
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Permutation test of mean(a) - mean(b); None when either side is empty.
pub fn permutation_test(a: &[f64], b: &[f64], seed: u64) -> Option<Comparison> {
    let (na, nb) = (a.len(), b.len());
    if na == 0 || nb == 0 {
        return None;
    }
    let pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    let total: f64 = pooled.iter().sum();
    let diff_of = |sum_a: f64| sum_a / na as f64 - (total - sum_a) / nb as f64;
    let observed = diff_of(a.iter().sum());
    // Relabellings at least as extreme, with a tolerance so ties in floating point count as ties.
    let extreme = |d: f64| d.abs() >= observed.abs() - 1e-12 * (1.0 + observed.abs());
    let n = na + nb;
    let (hits, count, exact) = if n <= 20 && binomial(n, na) <= PERMUTATIONS as f64 {
        let (mut hits, mut count) = (0usize, 0usize);
        // Every subset of size na as a bit mask.
        for mask in 0u64..(1u64 << n) {
            if mask.count_ones() as usize != na {
                continue;
            }
            let sum_a: f64 = (0..n).filter(|i| mask >> i & 1 == 1).map(|i| pooled[i]).sum();
            count += 1;
            hits += extreme(diff_of(sum_a)) as usize;
        }
        (hits, count, true)
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut idx: Vec<usize> = (0..n).collect();
        let mut hits = 1; // the observed labelling
        for _ in 0..PERMUTATIONS {
            for i in 0..na {
                let j = rng.random_range(i..n);
                idx.swap(i, j);
            }
            let sum_a: f64 = idx[..na].iter().map(|&i| pooled[i]).sum();
            hits += extreme(diff_of(sum_a)) as usize;
        }
        (hits, PERMUTATIONS + 1, false)
    };
    Some(Comparison { difference: observed, p_value: hits as f64 / count as f64, exact, n_a: na, n_b: nb })
}
