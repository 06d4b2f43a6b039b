//! What every stage's loop shares: optimiser settings, seeded data order, and step logging
//! (metrics JSONL plus a progress bar with ETA).

use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, Gradients};
use crate::schedule::{Decay, LrSchedule};
use crate::settings::{choice, SettingsReader};
use ordo_model::ParamStore;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Optimisation settings of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Examples per optimiser step.
    pub batch_size: usize,
    /// Examples per forward/backward pass; `batch_size / micro_batch_size` passes are accumulated.
    pub micro_batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub decay: Decay,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0 disables clipping).
    pub max_grad_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            steps: 100,
            batch_size: 16,
            micro_batch_size: 16,
            lr: 1e-4,
            warmup_steps: 0,
            decay: Decay::Constant,
            min_lr_ratio: 0.1,
            adamw: AdamWConfig::default(),
            max_grad_norm: 1.0,
        }
    }
}

impl OptimConfig {
    /// These settings with another batch size (micro-batches of the same size) and learning rate.
    pub fn with_batch_and_lr(self, batch_size: usize, lr: f64) -> Self {
        OptimConfig { batch_size, micro_batch_size: batch_size, lr, ..self }
    }

    /// Reads the optimiser settings every stage kind accepts, with this kind's defaults `d` (`steps`
    /// has none); problems include the range checks of `validate`.
    pub fn read(r: &mut dyn SettingsReader, d: &OptimConfig) -> Self {
        let steps = r.count("steps", None);
        let batch_size = r.count("batch_size", Some(d.batch_size));
        let micro_batch_size = r.count("micro_batch_size", Some(batch_size));
        let decay = choice(
            r,
            "schedule",
            &[("constant", Decay::Constant), ("linear", Decay::Linear), ("cosine", Decay::Cosine)],
            d.decay,
        );
        let cfg = OptimConfig {
            steps,
            batch_size,
            micro_batch_size,
            lr: r.number("lr", d.lr),
            warmup_steps: r.opt_count("warmup_steps").unwrap_or(d.warmup_steps),
            decay,
            min_lr_ratio: r.number("min_lr_ratio", d.min_lr_ratio),
            adamw: AdamWConfig {
                beta1: r.number("beta1", d.adamw.beta1),
                beta2: r.number("beta2", d.adamw.beta2),
                eps: d.adamw.eps,
                weight_decay: r.number("weight_decay", d.adamw.weight_decay),
            },
            max_grad_norm: r.number("max_grad_norm", d.max_grad_norm),
        };
        if let Err(e) = cfg.validate() {
            let path = r.path().to_string();
            r.problem(format!("{path}: {e}"));
        }
        cfg
    }

    /// Checks the settings; errors say which one is wrong and what range it must lie in.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.steps == 0 || self.steps > MAX_STEPS {
            return bad(format!("steps must be between 1 and {MAX_STEPS}, got {}", self.steps));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return bad(format!("batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}", self.batch_size));
        }
        if self.micro_batch_size == 0 || !self.batch_size.is_multiple_of(self.micro_batch_size) {
            return bad(format!(
                "batch_size ({}) must be a positive multiple of micro_batch_size ({})",
                self.batch_size, self.micro_batch_size
            ));
        }
        if !(self.lr > 0.0 && self.lr <= 1.0) {
            return bad(format!("lr must be in (0, 1], got {}", self.lr));
        }
        let a = &self.adamw;
        for (name, v, range_ok, range) in [
            ("min_lr_ratio", self.min_lr_ratio, (0.0..=1.0).contains(&self.min_lr_ratio), "[0, 1]"),
            ("beta1", a.beta1, (0.0..1.0).contains(&a.beta1), "[0, 1)"),
            ("beta2", a.beta2, (0.0..1.0).contains(&a.beta2), "[0, 1)"),
            ("weight_decay", a.weight_decay, (0.0..=1.0).contains(&a.weight_decay), "[0, 1]"),
            ("max_grad_norm", self.max_grad_norm, self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite(), ">= 0"),
            ("eps", a.eps, a.eps > 0.0 && a.eps < 1.0, "(0, 1)"),
        ] {
            if !range_ok {
                return bad(format!("{name} must be in {range}, got {v}"));
            }
        }
        Ok(())
    }

    /// The learning-rate schedule these settings describe.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak_lr: self.lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            decay: self.decay,
            min_ratio: self.min_lr_ratio,
        }
    }
}

/// The most optimiser steps a stage may take.
pub const MAX_STEPS: usize = 10_000_000;
/// The most examples an optimiser step may take.
pub const MAX_BATCH_SIZE: usize = 65_536;

/// AdamW driven by a schedule, with clipping: one call per optimiser step.
pub struct Optimizer {
    pub adamw: AdamW,
    pub schedule: LrSchedule,
    pub max_grad_norm: f64,
}

impl Optimizer {
    /// A fresh optimiser for `cfg`.
    pub fn new(cfg: &OptimConfig) -> Self {
        Optimizer { adamw: AdamW::new(cfg.adamw.clone()), schedule: cfg.schedule(), max_grad_norm: cfg.max_grad_norm }
    }

    /// Clips and applies `grads` of a step whose loss was `loss`; returns (gradient norm before
    /// clipping, learning rate used). A non-finite loss or gradient norm applies nothing and is
    /// [`TrainError::Diverged`], so the parameters stay as they were after the last good step.
    pub fn step(&mut self, params: &ParamStore, mut grads: Gradients, loss: f64) -> Result<(f64, f64)> {
        let lr = self.schedule.lr(self.adamw.step as usize);
        let diverged = |quantity, value| TrainError::Diverged {
            step: self.adamw.step as usize + 1,
            quantity,
            value,
            lr,
            max_grad_norm: self.max_grad_norm,
        };
        if !loss.is_finite() {
            return Err(diverged("loss", loss));
        }
        let norm = if self.max_grad_norm > 0.0 { grads.clip(self.max_grad_norm)? } else { grads.norm()? };
        if !norm.is_finite() {
            return Err(diverged("gradient norm", norm));
        }
        self.adamw.step(params, &grads, lr)?;
        Ok((norm, lr))
    }
}

/// A seeded epoch-wise shuffle of example indices: the same seed gives the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataOrder {
    pub seed: u64,
    pub len: usize,
    pub epoch: u64,
    pub position: usize,
    order: Vec<usize>,
}

impl DataOrder {
    /// The order over `len` examples.
    pub fn new(len: usize, seed: u64) -> Self {
        let mut d = DataOrder { seed, len, epoch: 0, position: 0, order: Vec::new() };
        d.shuffle();
        d
    }

    fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(self.epoch);
        self.order = (0..self.len).collect();
        self.order.shuffle(&mut rng);
    }

    /// The next `n` indices, starting a new shuffled epoch when one runs out.
    pub fn take(&mut self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && self.len > 0 {
            if self.position == self.len {
                self.epoch += 1;
                self.position = 0;
                self.shuffle();
            }
            out.push(self.order[self.position]);
            self.position += 1;
        }
        out
    }
}

/// Whether a step metric is a wall-clock measurement (`seconds`, `seconds/<phase>`, `tokens_per_s`),
/// the only metrics that differ between two runs of the same seed.
pub fn is_timing_metric(key: &str) -> bool {
    key == "seconds" || key.starts_with("seconds/") || key == "tokens_per_s"
}

/// Writes one JSON object per step to a metrics file and shows a progress bar with ETA.
pub struct StepLogger {
    file: Option<(PathBuf, std::fs::File)>,
    bar: indicatif::ProgressBar,
    started: Instant,
    /// Every step's metrics, in order.
    pub history: Vec<Map<String, Value>>,
}

impl StepLogger {
    /// A logger for `total_steps` steps of stage `label`; `metrics_path` (JSONL) is appended to.
    pub fn new(label: &str, total_steps: usize, metrics_path: Option<&Path>, show_progress: bool) -> Result<Self> {
        let file = match metrics_path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
                }
                let f =
                    std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| TrainError::io(p, e))?;
                Some((p.to_path_buf(), f))
            }
            None => None,
        };
        let bar = progress_bar(label, total_steps, "steps", show_progress);
        Ok(StepLogger { file, bar, started: Instant::now(), history: Vec::new() })
    }

    /// Records one step's metrics (a `step` and `seconds` field are added).
    pub fn log(&mut self, step: usize, mut metrics: Map<String, Value>, summary: &str) -> Result<()> {
        metrics.insert("step".into(), step.into());
        metrics.insert("seconds".into(), self.started.elapsed().as_secs_f64().into());
        if let Some((path, f)) = &mut self.file {
            let line = serde_json::to_string(&metrics).expect("metrics serialise");
            writeln!(f, "{line}").and_then(|_| f.flush()).map_err(|e| TrainError::io(path, e))?;
        }
        self.history.push(metrics);
        self.bar.set_message(summary.to_string());
        self.bar.inc(1);
        Ok(())
    }

    /// Continues from a saved history: the metrics file is rewritten to hold exactly those steps.
    pub fn restore(&mut self, history: Vec<Map<String, Value>>) -> Result<()> {
        if let Some((path, f)) = &mut self.file {
            let text: String =
                history.iter().map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n").collect();
            *f = std::fs::File::create(&*path).map_err(|e| TrainError::io(path, e))?;
            f.write_all(text.as_bytes()).and_then(|_| f.flush()).map_err(|e| TrainError::io(path, e))?;
        }
        self.bar.set_position(history.len() as u64);
        // A step checkpoint's clock offset, read from a file: used only when it is a sane duration.
        let offset = history.last().and_then(|m| m["seconds"].as_f64()).filter(|s| s.is_finite() && *s >= 0.0);
        let since = offset.and_then(|s| std::time::Duration::try_from_secs_f64(s).ok());
        self.started = since.and_then(|d| Instant::now().checked_sub(d)).unwrap_or_else(Instant::now);
        self.history = history;
        Ok(())
    }

    /// Ends the progress bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// Builds a metrics object from (name, value) pairs.
pub fn metrics(pairs: &[(&str, f64)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect()
}

/// The process's progress bars, drawn together so that stages running at once do not overwrite each other.
fn bars() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// A terminal progress bar with elapsed time and ETA (hidden when `show` is false), one line among the
/// process's bars.
pub fn progress_bar(label: &str, total: usize, unit: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = bars().add(indicatif::ProgressBar::new(total as u64));
    let template = format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{elapsed}} < ETA {{eta}}  {{msg}}");
    b.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    b.set_prefix(label.to_string());
    b
}

/// The state of a stage loop after `step` optimiser steps: with the parameters, enough to continue
/// exactly as an uninterrupted run would (every random draw derives from the seed and the step).
#[derive(Debug, Clone)]
pub struct LoopState {
    /// Optimiser steps taken (the loop continues at this step).
    pub step: usize,
    pub adamw: AdamW,
    /// Data orders (one per dataset or prompt set).
    pub orders: Vec<DataOrder>,
    /// Fractional quotas of GRPO's prompt-set allocator.
    pub carry: Vec<f64>,
    /// Metrics of the steps taken so far.
    pub history: Vec<Map<String, Value>>,
}

/// What a stage does with its parameters after so many steps (the uptake probe's snapshots).
pub type SnapshotFn<'a> = &'a mut dyn FnMut(&ParamStore, usize) -> Result<()>;

/// Saves a stage's loop state every `every` steps and, when `resume` is set, continues from it
/// (the caller has already put the saved parameters into the model).
pub struct Checkpointing<'a> {
    pub every: usize,
    pub resume: Option<LoopState>,
    #[allow(clippy::type_complexity)]
    pub save: &'a mut dyn FnMut(&ParamStore, &LoopState) -> Result<()>,
    /// Snapshots of the parameters every so many steps (the uptake probe's checkpoints): the
    /// interval and what to do with the parameters after that many steps (not after the last step).
    pub snapshot: Option<(usize, SnapshotFn<'a>)>,
}

impl Checkpointing<'_> {
    /// Takes a snapshot and saves after `done` steps when due (not after the last step: the stage's
    /// result is saved then).
    pub fn maybe_save(
        &mut self,
        params: &ParamStore,
        done: usize,
        total: usize,
        state: impl FnOnce() -> LoopState,
    ) -> Result<()> {
        if let Some((every, snap)) = self.snapshot.as_mut() {
            if *every > 0 && done.is_multiple_of(*every) && done < total {
                snap(params, done)?;
            }
        }
        if self.every > 0 && done.is_multiple_of(self.every) && done < total {
            let s = state();
            (self.save)(params, &s)?;
        }
        Ok(())
    }
}

/// Where a stage loop starts: a fresh optimiser and data orders, or a resumed state.
pub fn start_state(
    cfg: &OptimConfig,
    fresh_orders: Vec<DataOrder>,
    ckpt: &mut Option<&mut Checkpointing>,
    logger: &mut StepLogger,
) -> Result<(Optimizer, Vec<DataOrder>, Vec<f64>, usize)> {
    let mut opt = Optimizer::new(cfg);
    match ckpt.as_mut().and_then(|c| c.resume.take()) {
        Some(s) => {
            opt.adamw = s.adamw;
            logger.restore(s.history)?;
            Ok((opt, s.orders, s.carry, s.step))
        }
        None => Ok((opt, fresh_orders, Vec::new(), 0)),
    }
}

/// Ends an optimiser step: logs its metrics and saves a step checkpoint when one is due.
#[allow(clippy::too_many_arguments)]
pub fn end_step(
    logger: &mut StepLogger,
    ckpt: &mut Option<&mut Checkpointing>,
    params: &ParamStore,
    opt: &Optimizer,
    orders: &[DataOrder],
    carry: &[f64],
    (step, total): (usize, usize),
    metrics: Map<String, Value>,
    summary: &str,
) -> Result<()> {
    logger.log(step, metrics, summary)?;
    if let Some(c) = ckpt.as_mut() {
        c.maybe_save(params, step + 1, total, || LoopState {
            step: step + 1,
            adamw: opt.adamw.clone(),
            orders: orders.to_vec(),
            carry: carry.to_vec(),
            history: logger.history.clone(),
        })?;
    }
    Ok(())
}
