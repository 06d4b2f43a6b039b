//! Statistics across seeds: means with seed-level 95% t-intervals whose variance is at least the
//! prompt sampling's, and permutation tests of arm-vs-arm differences. The seed is the unit: each
//! seed's figure is a mean over its own finite prompt sample, so its variance across seeds holds both
//! the between-seed variance and the prompt sampling's; with few seeds the sample variance can be 0 by
//! chance (every seed at 1.000), which the prompt-sampling floor keeps from giving a zero-width interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Random relabellings of a permutation test when exact enumeration would take more.
pub const PERMUTATIONS: usize = 10_000;
/// Relabellings enumerated exactly at most (C(20, 10) = 184,756: 10 seeds against 10).
pub const MAX_EXACT: f64 = 200_000.0;

/// A mean over seeds with its 95% interval; `mean` is None when no seed measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: Option<f64>,
    /// The 95% seed-level interval ([`seed_interval`]; None with < 2 values).
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

/// The sample variance (n - 1 in the denominator); 0 for fewer than 2 values. Computed on the values
/// less the first, so that equal values give exactly 0 (not a rounding residue that would pass for a
/// standard error).
pub fn sample_variance(xs: &[f64]) -> f64 {
    let Some(&x0) = xs.first() else { return 0.0 };
    let d: Vec<f64> = xs.iter().map(|x| x - x0).collect();
    match mean(&d) {
        Some(m) if xs.len() > 1 => d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64,
        _ => 0.0,
    }
}

/// The sampling variance of a share measured as `p` on `n` samples, with Agresti and Coull's
/// adjustment (two successes and two failures added) so that a share of 0 or 1 still has one.
pub fn share_variance(p: f64, n: usize) -> f64 {
    let m = n as f64 + 4.0;
    let q = (p * n as f64 + 2.0) / m;
    q * (1.0 - q) / m
}

/// The variance of a mean over seeds and its degrees of freedom: the sample variance over the seed
/// count, at least the mean prompt-sampling variance of one seed over the seed count (`within[i]` is
/// seed i's; empty when the figure is not a share of samples). The sample variance has n - 1 degrees
/// of freedom; where the floor binds the variance rests more on the known sampling variance, and the
/// degrees of freedom grow as (n - 1) (floor / sample variance)² (continuous where the two meet), so a
/// run whose seeds agree is neither given a zero-width interval nor a needlessly wide one.
pub fn variance_of_mean(xs: &[f64], within: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let floor = if within.is_empty() { 0.0 } else { within.iter().sum::<f64>() / within.len() as f64 };
    let s2 = sample_variance(xs);
    let df = (n - 1.0).max(1.0);
    if floor > s2 {
        let ratio = if s2 > 0.0 { floor / s2 } else { f64::INFINITY };
        (floor / n, (df * ratio * ratio).min(1e6))
    } else {
        (s2 / n, df)
    }
}

/// The seed-level interval of the mean at `level`: mean ± t(df) · √variance, from
/// [`variance_of_mean`]. None with fewer than 2 values.
pub fn seed_interval(xs: &[f64], within: &[f64], level: f64) -> Option<(f64, f64)> {
    let m = mean(xs)?;
    if xs.len() < 2 {
        return None;
    }
    let (v, df) = variance_of_mean(xs, within);
    let half = t_quantile(0.5 + level / 2.0, df) * v.sqrt();
    Some((m - half, m + half))
}

/// The estimate of one figure from every seed's value; `counts[i]`, when given (a share of samples),
/// is the number of samples seed i's value rests on (the interval is then also kept within [0, 1]).
pub fn estimate(values: &[Option<f64>], counts: &[usize]) -> Estimate {
    // A value that is not finite is not a measurement.
    let values: Vec<Option<f64>> = values.iter().map(|v| v.filter(|x| x.is_finite())).collect();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let within: Vec<f64> = if counts.len() == values.len() {
        // A value without a count (n = 0) has no sampling variance to floor with.
        values.iter().zip(counts).filter_map(|(v, &n)| v.filter(|_| n > 0).map(|p| share_variance(p, n))).collect()
    } else {
        Vec::new()
    };
    // A share's interval stays within [0, 1].
    let ci = seed_interval(&present, &within, 0.95).map(|(lo, hi)| {
        if counts.is_empty() {
            (lo, hi)
        } else {
            (lo.max(0.0), hi.min(1.0))
        }
    });
    Estimate { mean: mean(&present), lo: ci.map(|c| c.0), hi: ci.map(|c| c.1), n: present.len(), values }
}

/// A figure as the report prints it: `0.412 [0.380, 0.450]`, or `n/m` (not measurable).
pub fn fmt_estimate(e: Option<&Estimate>) -> String {
    match e {
        Some(Estimate { mean: Some(m), lo: Some(lo), hi: Some(hi), .. }) => {
            format!("{} [{}, {}]", fmt3(*m), fmt3(*lo), fmt3(*hi))
        }
        Some(Estimate { mean: Some(m), .. }) => fmt3(*m),
        _ => "n/m".into(),
    }
}

/// Three decimals, without a sign on a value that rounds to zero.
fn fmt3(x: f64) -> String {
    let s = format!("{x:.3}");
    if s == "-0.000" {
        "0.000".into()
    } else {
        s
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s = C[1..].iter().enumerate().fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The continued fraction of the regularised incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = if d.abs() < tiny { tiny } else { d };
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))] {
            d = 1.0 + aa * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = 1.0 + aa / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function I_x(a, b).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom (df > 0, not necessarily whole).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The q-quantile of Student's t with `df` degrees of freedom, by bisection on [`t_cdf`].
pub fn t_quantile(q: f64, df: f64) -> f64 {
    assert!(q > 0.0 && q < 1.0 && df > 0.0, "t_quantile({q}, {df})");
    let (mut lo, mut hi) = (-1e4, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Which relabellings count as at least as extreme as the observed difference of means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alternative {
    /// |difference| at least the observed one.
    TwoSided,
    /// difference at least the observed one (the alternative: mean(a) > mean(b)).
    Greater,
    /// difference at most the observed one (the alternative: mean(a) < mean(b)).
    Less,
}

/// A permutation test of the difference of means between two samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// mean(a) - mean(b).
    pub difference: f64,
    /// Share of relabellings at least as extreme as the observed one (the observed labelling
    /// included, so never 0).
    pub p_value: f64,
    /// Whether every relabelling was enumerated (else PERMUTATIONS random ones were drawn).
    pub exact: bool,
    pub n_a: usize,
    pub n_b: usize,
}

/// C(n, k) as a float.
pub fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The smallest p a permutation test of `n_a` against `n_b` values can give when every relabelling is
/// enumerated: one of C(n_a + n_b, n_a) one-sided; two-sided, two (the observed labelling and its mirror,
/// for sides of equal size).
pub fn smallest_p(n_a: usize, n_b: usize, alternative: Alternative) -> f64 {
    let tails = if alternative == Alternative::TwoSided { 2.0 } else { 1.0 };
    let relabellings = binomial(n_a + n_b, n_a);
    // Drawn relabellings count the observed one among PERMUTATIONS + 1.
    let floor = if relabellings <= MAX_EXACT { 1.0 / relabellings } else { 1.0 / (PERMUTATIONS + 1) as f64 };
    (tails * floor).min(1.0)
}

/// Two-sided permutation test of mean(a) - mean(b); None when either side is empty.
pub fn permutation_test(a: &[f64], b: &[f64], seed: u64) -> Option<Comparison> {
    permutation_test_toward(a, b, Alternative::TwoSided, seed)
}

/// Permutation test of mean(a) - mean(b) against `alternative`: exact over every relabelling when
/// there are at most [`MAX_EXACT`], else [`PERMUTATIONS`] random ones drawn from `seed`. None when
/// either side is empty or a value is not finite.
pub fn permutation_test_toward(a: &[f64], b: &[f64], alternative: Alternative, seed: u64) -> Option<Comparison> {
    let (na, nb) = (a.len(), b.len());
    if na == 0 || nb == 0 || a.iter().chain(b).any(|x| !x.is_finite()) {
        return None;
    }
    let pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    let total: f64 = pooled.iter().sum();
    let diff_of = |sum_a: f64| sum_a / na as f64 - (total - sum_a) / nb as f64;
    let observed = diff_of(a.iter().sum());
    // Relabellings at least as extreme, with a tolerance (on the data's scale) so that differences equal
    // but for floating-point rounding count as ties.
    let scale = pooled.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let tol = 1e-9 * scale;
    let extreme = |d: f64| match alternative {
        Alternative::TwoSided => d.abs() >= observed.abs() - tol,
        Alternative::Greater => d >= observed - tol,
        Alternative::Less => d <= observed + tol,
    };
    let n = na + nb;
    let (hits, count, exact) = if binomial(n, na) <= MAX_EXACT {
        let (mut hits, mut count) = (0usize, 0usize);
        // Every subset of size na, in lexicographic order of its members.
        let mut idx: Vec<usize> = (0..na).collect();
        loop {
            let sum_a: f64 = idx.iter().map(|&i| pooled[i]).sum();
            count += 1;
            hits += extreme(diff_of(sum_a)) as usize;
            // The next combination: the rightmost member that can move does, the rest follow it.
            let Some(i) = (0..na).rev().find(|&i| idx[i] < n - na + i) else { break };
            idx[i] += 1;
            for j in i + 1..na {
                idx[j] = idx[j - 1] + 1;
            }
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

/// Holm's step-down adjustment of a family's p-values, in their given order: the i-th smallest is
/// multiplied by (m - i + 1), then made non-decreasing in that order and capped at 1. None (an
/// untestable member) counts as p = 1 in the family size and stays None.
pub fn holm(ps: &[Option<f64>]) -> Vec<Option<f64>> {
    let m = ps.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| ps[i].unwrap_or(1.0).total_cmp(&ps[j].unwrap_or(1.0)).then(i.cmp(&j)));
    let mut out = vec![None; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let Some(p) = ps[i] else { continue };
        running = running.max(((m - rank) as f64 * p).min(1.0));
        out[i] = Some(running);
    }
    out
}
