//! What every benchmark measures with: medians, paired runs, the machine's sgemm rate, peak memory.

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Median of a list of timings.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// An `n` x `n` x `n` f32 matmul on random operands: the machine's sgemm rate, the engine's baseline.
pub struct Sgemm {
    a: Tensor,
    b: Tensor,
    device: Device,
}

impl Sgemm {
    /// Random `n` x `n` operands on `device`, multiplied once to warm up.
    pub fn new(n: usize, device: &Device) -> Result<Self> {
        let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
        let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
        let _ = a.matmul(&b)?;
        Ok(Self { a, b, device: device.clone() })
    }

    /// GFLOP/s of the faster of `reps` products.
    pub fn gflops(&self, reps: usize) -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = Instant::now();
            let c = self.a.matmul(&self.b)?;
            self.device.synchronize()?;
            drop(c);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let n = self.a.dim(0)? as f64;
        Ok(2.0 * n.powi(3) / best / 1e9)
    }
}

/// Runs `a` and `b` alternately, `runs` times each after one discarded warm-up call of each, and returns
/// their results in pairs. This VM's speed drifts by tens of percent within minutes; a ratio taken
/// within each pair (then the median over pairs) compares the two under the same conditions.
pub fn interleaved(
    runs: usize,
    a: &mut dyn FnMut() -> Result<f64>,
    b: &mut dyn FnMut() -> Result<f64>,
) -> Result<Vec<(f64, f64)>> {
    a()?;
    b()?;
    (0..runs).map(|_| Ok((a()?, b()?))).collect()
}

/// Random token rows, `batch` x `seq`, below `vocab` (seeded).
pub fn random_rows(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..batch).map(|_| (0..seq).map(|_| rng.random_range(0..vocab as u32)).collect()).collect()
}

/// Peak resident memory since the last `reset_peak_rss`, from `/proc/self/status` (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak resident memory to the current one (Linux: `/proc/self/clear_refs`); false if unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// An engine error as a candle error, so benchmark code can use one `?` for both.
pub fn to_candle(e: ordo_model::ModelError) -> candle_core::Error {
    match e {
        ordo_model::ModelError::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
