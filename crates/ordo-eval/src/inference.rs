//! Tests of an experiment's declared hypotheses: for each, the difference of two sides' means over
//! seeds with its Welch interval (each side's variance at least its prompt sampling's), one-sided
//! permutation p-values in the claimed direction and against it (exact up to 200,000 relabellings),
//! Holm's adjustment across the file's hypotheses in each direction, the smallest difference the seeds
//! could detect, and the verdict those numbers give.

use crate::stats::{mean, permutation_test_toward, smallest_p, t_quantile, variance_of_mean, Alternative};
use serde::{Deserialize, Serialize};

/// The family-wise error rate each direction's verdicts hold to: the chance of any false "supported"
/// is at most ALPHA, and of any false "contradicted" at most ALPHA.
pub const ALPHA: f64 = 0.05;
/// The power at which [`HypothesisTest::detectable`] is computed.
pub const POWER: f64 = 0.8;

/// One side of a comparison: a value per seed, and each seed's prompt-sampling variance (empty when the
/// figure is not a share of samples).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side {
    pub values: Vec<f64>,
    pub within: Vec<f64>,
}

/// The direction a hypothesis claims for mean(a) - mean(b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// a > b.
    Greater,
    /// a < b.
    Less,
    /// |a - b| < margin (equivalence, by two one-sided tests).
    Equal { margin: f64 },
    /// The metric rises with the dose (a trend: the mean over seeds of each seed's slope is above 0).
    Increasing,
    /// The metric falls with the dose.
    Decreasing,
}

impl Expect {
    /// As the experiment file writes it: `a > b`, `a < b`, `|a - b| < 0.05`.
    pub fn describe(&self) -> String {
        match self {
            Expect::Greater => "a > b".into(),
            Expect::Less => "a < b".into(),
            Expect::Equal { margin } => format!("|a - b| < {margin}"),
            Expect::Increasing => "increasing with dose".into(),
            Expect::Decreasing => "decreasing with dose".into(),
        }
    }
}

/// What the numbers say of a hypothesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The Holm-adjusted p in the claimed direction is at most ALPHA.
    Supported,
    /// The Holm-adjusted p against the claim is at most ALPHA.
    Contradicted,
    /// Neither, though the seeds could have given such a p.
    Inconclusive,
    /// A side has fewer than 2 seeds, or even the smallest p these seed counts allow (complete
    /// separation) would not pass Holm's adjustment across the file at ALPHA.
    NotEnoughSeeds,
}

impl Verdict {
    /// The word the report prints.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::Contradicted => "contradicted",
            Verdict::Inconclusive => "inconclusive at this power",
            Verdict::NotEnoughSeeds => "not enough seeds",
        }
    }
}

/// The test of one hypothesis on its two sides, before the family's adjustment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HypothesisTest {
    pub n_a: usize,
    pub n_b: usize,
    pub mean_a: Option<f64>,
    pub mean_b: Option<f64>,
    /// mean(a) - mean(b).
    pub difference: Option<f64>,
    /// The difference's 95% Welch interval (None with fewer than 2 seeds on a side).
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// The difference's standard error and the Welch-Satterthwaite degrees of freedom.
    pub se: Option<f64>,
    pub df: Option<f64>,
    /// The permutation p in the claimed direction (for an equivalence, the larger of its two
    /// one-sided tests against the margins), and against it (for an equivalence, that |a - b| exceeds
    /// the margin: twice the smaller one-sided p, capped at 1).
    pub p: Option<f64>,
    pub p_against: Option<f64>,
    /// Whether every relabelling was enumerated.
    pub exact: bool,
    /// The smallest one-sided p these seed counts allow.
    pub smallest_p: Option<f64>,
    /// Whether this is an equivalence test (`|a - b| < margin`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub equivalence: bool,
}

/// The Welch interval of mean(a) - mean(b) at `level`: (lo, hi, standard error, degrees of freedom).
/// None with fewer than 2 seeds on a side.
pub fn difference_interval(a: &Side, b: &Side, level: f64) -> Option<(f64, f64, f64, f64)> {
    let (na, nb) = (a.values.len(), b.values.len());
    if na < 2 || nb < 2 {
        return None;
    }
    let ((va, dfa), (vb, dfb)) = (variance_of_mean(&a.values, &a.within), variance_of_mean(&b.values, &b.within));
    let d = mean(&a.values)? - mean(&b.values)?;
    let se = (va + vb).sqrt();
    // Welch-Satterthwaite, each side with its own degrees of freedom.
    let df = if va + vb > 0.0 { (va + vb).powi(2) / (va * va / dfa + vb * vb / dfb) } else { (na + nb - 2) as f64 };
    let half = t_quantile(0.5 + level / 2.0, df) * se;
    Some((d - half, d + half, se, df))
}

/// A test with the sides' figures and no p-values: the hypothesis cannot be tested on these values.
pub fn untestable(a: &Side, b: &Side) -> HypothesisTest {
    let m = |s: &Side| mean(&s.values).filter(|x| x.is_finite());
    HypothesisTest {
        n_a: a.values.len(),
        n_b: b.values.len(),
        mean_a: m(a),
        mean_b: m(b),
        difference: m(a).zip(m(b)).map(|(x, y)| x - y),
        lo: None,
        hi: None,
        se: None,
        df: None,
        p: None,
        p_against: None,
        exact: true,
        smallest_p: None,
        equivalence: false,
    }
}

fn shifted(xs: &[f64], by: f64) -> Vec<f64> {
    xs.iter().map(|x| x + by).collect()
}

/// Tests one hypothesis; `seed` drives the relabellings only when they are too many to enumerate.
pub fn test(a: &Side, b: &Side, expect: Expect, seed: u64) -> HypothesisTest {
    let (na, nb) = (a.values.len(), b.values.len());
    // A value that is not finite is not a measurement: such a side is not tested.
    let finite = |s: &Side| s.values.iter().all(|x| x.is_finite());
    if !finite(a) || !finite(b) {
        return untestable(a, b);
    }
    let ci = difference_interval(a, b, 0.95);
    let one_sided = |x: &[f64], alt| permutation_test_toward(x, &b.values, alt, seed).map(|c| (c.p_value, c.exact));
    let testable = na >= 2 && nb >= 2;
    let (p, p_against, exact) = if !testable {
        (None, None, true)
    } else {
        match expect {
            Expect::Greater | Expect::Less => {
                let (toward, against) = if expect == Expect::Greater {
                    (Alternative::Greater, Alternative::Less)
                } else {
                    (Alternative::Less, Alternative::Greater)
                };
                let (p, e1) = one_sided(&a.values, toward).expect("both sides have seeds");
                let (q, e2) = one_sided(&a.values, against).expect("both sides have seeds");
                (Some(p), Some(q), e1 && e2)
            }
            // A trend's expectation on two sides (an edited results file): nothing to test.
            Expect::Increasing | Expect::Decreasing => return untestable(a, b),
            Expect::Equal { margin } => {
                // a - b > -margin: shift a up by the margin and test a + margin > b; likewise below.
                let (p_lo, e1) = one_sided(&shifted(&a.values, margin), Alternative::Greater).expect("seeds");
                let (p_hi, e2) = one_sided(&shifted(&a.values, -margin), Alternative::Less).expect("seeds");
                let (q_hi, e3) = one_sided(&shifted(&a.values, -margin), Alternative::Greater).expect("seeds");
                let (q_lo, e4) = one_sided(&shifted(&a.values, margin), Alternative::Less).expect("seeds");
                // A shifted relabelling is exchangeable only under a pure shift, which tied or bounded
                // figures are not (five seeds at 0 on both sides would pass any margin). Each one-sided
                // p is therefore also the t test's with the sampling floor, and the larger of the two
                // counts; with a standard error of 0 the t test says nothing and the test does not pass.
                let t_p = |z: f64| match ci {
                    Some((_, _, se, df)) if se > 0.0 => 1.0 - crate::stats::t_cdf(z / se, df),
                    _ => 1.0,
                };
                let d = mean(&a.values).zip(mean(&b.values)).map_or(0.0, |(x, y)| x - y);
                let (p_lo, p_hi) = (p_lo.max(t_p(d + margin)), p_hi.max(t_p(margin - d)));
                let (q_hi, q_lo) = (q_hi.max(t_p(d - margin)), q_lo.max(t_p(-margin - d)));
                (Some(p_lo.max(p_hi)), Some((2.0 * q_hi.min(q_lo)).min(1.0)), e1 && e2 && e3 && e4)
            }
        }
    };
    HypothesisTest {
        n_a: na,
        n_b: nb,
        mean_a: mean(&a.values),
        mean_b: mean(&b.values),
        difference: mean(&a.values).zip(mean(&b.values)).map(|(x, y)| x - y),
        lo: ci.map(|c| c.0),
        hi: ci.map(|c| c.1),
        se: ci.map(|c| c.2),
        df: ci.map(|c| c.3),
        p,
        p_against,
        exact,
        smallest_p: testable.then(|| smallest_p(na, nb, Alternative::Greater)),
        equivalence: matches!(expect, Expect::Equal { .. }),
    }
}

/// The least-squares slope of `values` on `doses`; None with fewer than 2 distinct doses.
pub fn slope(doses: &[f64], values: &[f64]) -> Option<f64> {
    let (md, mv) = (mean(doses)?, mean(values)?);
    let sxx: f64 = doses.iter().map(|d| (d - md).powi(2)).sum();
    (sxx > 0.0).then(|| doses.iter().zip(values).map(|(d, v)| (d - md) * (v - mv)).sum::<f64>() / sxx)
}

/// The sign-flip permutation p of mean(xs) against 0 (each seed's value equally likely of either sign
/// under the null): exact over all 2^n flips up to n = 20, else PERMUTATIONS drawn from `seed`.
pub fn sign_flip_p(xs: &[f64], alternative: Alternative, seed: u64) -> (f64, bool) {
    use rand::{Rng, SeedableRng};
    let n = xs.len();
    let observed: f64 = xs.iter().sum();
    let tol = 1e-9 * xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let extreme = |t: f64| match alternative {
        Alternative::TwoSided => t.abs() >= observed.abs() - tol,
        Alternative::Greater => t >= observed - tol,
        Alternative::Less => t <= observed + tol,
    };
    if n <= 20 {
        let hits = (0u64..1 << n)
            .filter(|mask| extreme(xs.iter().enumerate().map(|(i, x)| if mask >> i & 1 == 1 { -x } else { *x }).sum()))
            .count();
        (hits as f64 / (1u64 << n) as f64, true)
    } else {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut hits = 1;
        for _ in 0..crate::stats::PERMUTATIONS {
            let t: f64 = xs.iter().map(|x| if rng.random::<bool>() { -x } else { *x }).sum();
            hits += extreme(t) as usize;
        }
        (hits as f64 / (crate::stats::PERMUTATIONS + 1) as f64, false)
    }
}

/// Tests a trend from one slope per seed: the mean slope with its t-interval (the seed is the unit,
/// so doses that share a seed's trajectory are not counted as independent), and sign-flip p-values in
/// the claimed direction and against it.
pub fn trend_test(slopes: &[f64], expect: Expect, seed: u64) -> HypothesisTest {
    let n = slopes.len();
    let (toward, against) = match expect {
        Expect::Increasing => (Alternative::Greater, Alternative::Less),
        Expect::Decreasing => (Alternative::Less, Alternative::Greater),
        // Two sides' expectation on a trend (an edited results file): nothing to test.
        _ => return untestable(&Side { values: slopes.to_vec(), within: Vec::new() }, &Side::default()),
    };
    if slopes.iter().any(|x| !x.is_finite()) {
        return untestable(&Side { values: slopes.to_vec(), within: Vec::new() }, &Side::default());
    }
    let m = mean(slopes);
    let ci = crate::stats::seed_interval(slopes, &[], 0.95);
    let testable = n >= 2;
    let (p, e1) = sign_flip_p(slopes, toward, seed);
    let (q, e2) = sign_flip_p(slopes, against, seed);
    let se = (n >= 2).then(|| (crate::stats::sample_variance(slopes) / n as f64).sqrt());
    HypothesisTest {
        n_a: n,
        n_b: 0,
        mean_a: m,
        mean_b: None,
        difference: m,
        lo: ci.map(|c| c.0),
        hi: ci.map(|c| c.1),
        se,
        df: (n >= 2).then(|| (n - 1) as f64),
        p: testable.then_some(p),
        p_against: testable.then_some(q),
        exact: e1 && e2,
        // Drawn sign flips (above 20 seeds) count the observed one among PERMUTATIONS + 1.
        smallest_p: testable.then(|| {
            let floor = if n > 20 { 1.0 / (crate::stats::PERMUTATIONS + 1) as f64 } else { 0.0 };
            0.5f64.powi(n as i32).max(floor)
        }),
        equivalence: false,
    }
}

/// A hypothesis's figures after the family's adjustment, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Holm-adjusted p in the claimed direction, and against it (each direction its own family).
    pub p_holm: Option<f64>,
    pub p_against_holm: Option<f64>,
    /// The smallest true difference these seeds would detect with probability POWER at the strictest
    /// Holm threshold (ALPHA / m), from the t approximation with this test's standard error (for an
    /// equivalence: the smallest margin they would confirm with that power when a = b); None when no
    /// relabelling of these seeds reaches that threshold, the standard error is 0 (the t approximation
    /// says nothing), or a side has fewer than 2 seeds.
    pub detectable: Option<f64>,
    pub verdict: Verdict,
}

/// The verdicts of a family of hypothesis tests (an experiment file's), with Holm's adjustment across
/// all of them: untestable members count in the family size.
pub fn decide(tests: &[HypothesisTest]) -> Vec<Decision> {
    let m = tests.len().max(1) as f64;
    let strictest = ALPHA / m;
    let toward = crate::stats::holm(&tests.iter().map(|t| t.p).collect::<Vec<_>>());
    let against = crate::stats::holm(&tests.iter().map(|t| t.p_against).collect::<Vec<_>>());
    // Holm's adjusted p never falls when an input rises: a hypothesis can be supported at all only if
    // it would be with every test at its smallest attainable p.
    let best = crate::stats::holm(&tests.iter().map(|t| t.smallest_p).collect::<Vec<_>>());
    tests
        .iter()
        .zip(toward.into_iter().zip(against).zip(best))
        .map(|(t, ((p_holm, p_against_holm), best))| {
            let reachable = t.smallest_p.is_some_and(|p| p <= strictest);
            // An equivalence needs both one-sided tests to pass: each at (1 + POWER) / 2 when a = b.
            let power = if t.equivalence { 0.5 + POWER / 2.0 } else { POWER };
            let detectable = match (t.se, t.df) {
                (Some(se), Some(df)) if reachable && se > 0.0 => {
                    Some((t_quantile(1.0 - strictest, df) + t_quantile(power, df)) * se)
                }
                _ => None,
            };
            let verdict = if p_holm.is_some_and(|p| p <= ALPHA) {
                Verdict::Supported
            } else if p_against_holm.is_some_and(|p| p <= ALPHA) {
                Verdict::Contradicted
            } else if best.is_none_or(|p| p > ALPHA) {
                // Even complete separation, on every hypothesis of the file, would not pass.
                Verdict::NotEnoughSeeds
            } else {
                Verdict::Inconclusive
            };
            Decision { p_holm, p_against_holm, detectable, verdict }
        })
        .collect()
}
