//! Fuzzing ordo's parsers on stable Rust: each target's seed inputs are mutated (byte-level and
//! structure-aware edits, deterministic from a seed) and run through the parser, counting panics,
//! hangs, the slowest execution and the peak memory. Inputs that fail are saved for regression tests.

pub mod mutate;
pub mod targets;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use targets::{Target, ALL};

/// An execution slower than this counts as slow in the report.
pub const SLOW: Duration = Duration::from_secs(1);
/// An execution still running after this is a hang: the input is saved and the process exits.
pub const HANG: Duration = Duration::from_secs(20);

/// What one target's fuzzing found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub target: &'static str,
    pub execs: u64,
    /// Inputs the parser accepted (the code after parsing ran on them too).
    pub accepted: u64,
    pub panics: u64,
    /// Executions slower than [`SLOW`].
    pub slow: u64,
    pub slowest_ms: f64,
    pub seconds: f64,
    /// Peak resident memory while fuzzing this target (Linux; None elsewhere), MiB.
    pub peak_rss_mib: Option<f64>,
    /// Where the inputs that panicked were saved.
    pub saved: Vec<PathBuf>,
}

impl Report {
    /// The report as one JSON line (what a child process prints for its parent).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target, "execs": self.execs, "accepted": self.accepted, "panics": self.panics, "slow": self.slow,
            "slowest_ms": self.slowest_ms, "seconds": self.seconds, "peak_rss_mib": self.peak_rss_mib,
            "saved": self.saved,
        })
    }
}

/// The process's peak resident memory since the last reset, MiB (Linux; None elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    ordo_bench::measure::peak_rss_bytes().map(|b| b as f64 / (1u64 << 20) as f64)
}

fn save(out: &Path, what: &str, target: Target, n: u64, input: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(out);
    let p = out.join(format!("{what}-{}-{n}.bin", target.name()));
    let _ = std::fs::write(&p, input);
    p
}

/// Runs one input through a target and says whether it panicked (with the panic's message).
pub fn run_one(target: Target, input: &[u8], ws: &targets::Workspace) -> Result<bool, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| targets::run(target, input, ws))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Fuzzes `target` for `execs` executions from `seed`; failing inputs are saved under `out`.
/// A hang saves its input and ends the process with exit code 3.
pub fn fuzz(target: Target, execs: u64, seed: u64, out: &Path) -> anyhow::Result<Report> {
    let ws = targets::Workspace::new()?;
    let seeds = targets::seeds(target, &ws)?;
    // Panics are counted here, not printed by the default hook for each one.
    std::panic::set_hook(Box::new(|_| {}));
    // The watchdog: the current input and when it started.
    let current: Arc<Mutex<(Instant, Vec<u8>, bool)>> = Arc::new(Mutex::new((Instant::now(), Vec::new(), false)));
    let watched = current.clone();
    let out_dir = out.to_path_buf();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        let guard = watched.lock().expect("watchdog lock");
        if guard.2 && guard.0.elapsed() > HANG {
            let p = save(&out_dir, "hang", target, 0, &guard.1);
            eprintln!("{}: an input ran past {:?}; saved as {}", target.name(), HANG, p.display());
            std::process::exit(3);
        }
    });
    ordo_bench::measure::reset_peak_rss();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let started = Instant::now();
    let mut report = Report {
        target: target.name(),
        execs: 0,
        accepted: 0,
        panics: 0,
        slow: 0,
        slowest_ms: 0.0,
        seconds: 0.0,
        peak_rss_mib: None,
        saved: Vec::new(),
    };
    let mut last = seeds[0].clone();
    for i in 0..execs {
        // Mostly fresh mutations of a seed; sometimes a stack of mutations on the previous input.
        let base = if rng.random_bool(0.2) { &last } else { &seeds[rng.random_range(0..seeds.len())] };
        let input = if i < seeds.len() as u64 {
            seeds[i as usize].clone()
        } else {
            mutate::mutate(base, &seeds, target.is_text(), &mut rng)
        };
        {
            let mut g = current.lock().expect("watchdog lock");
            *g = (Instant::now(), input.clone(), true);
        }
        let t0 = Instant::now();
        let result = run_one(target, &input, &ws);
        let dt = t0.elapsed();
        current.lock().expect("watchdog lock").2 = false;
        report.accepted += matches!(result, Ok(true)) as u64;
        if let Err(message) = &result {
            report.panics += 1;
            if report.saved.len() < 20 {
                let p = save(out, "panic", target, i, &input);
                let _ = std::fs::write(p.with_extension("txt"), message);
                report.saved.push(p);
            }
        }
        if dt > SLOW {
            report.slow += 1;
            if report.saved.len() < 20 {
                report.saved.push(save(out, "slow", target, i, &input));
            }
        }
        report.slowest_ms = report.slowest_ms.max(dt.as_secs_f64() * 1e3);
        report.execs += 1;
        last = input;
    }
    let _ = std::panic::take_hook();
    report.seconds = started.elapsed().as_secs_f64();
    report.peak_rss_mib = peak_rss_mib();
    Ok(report)
}

/// The saved regression inputs of a target: `regressions/<target>/*` in this crate.
pub fn regression_inputs(target: Target) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target.name());
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    files
}
