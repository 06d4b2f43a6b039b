//! `ordo bench engine`: training-step and sampling speed of the engine, against sgemm measured in the same run.

use crate::measure::{interleaved, median, random_rows, to_candle, Sgemm};
use candle_core::{Device, Result, Tensor};
use ordo_model::decoder::ids_tensor;
use ordo_model::flops::training_step_flops;
use ordo_model::{ops, sampler, Decoder, ModelConfig, ParamStore, SamplingParams, SamplingPath};
use ordo_train::optim::{AdamW, AdamWConfig, Gradients};
use std::time::Instant;

/// A fresh `cfg` model and its AdamW, trained step by step on fixed rows to time the step: through the
/// training pass (`Decoder::forward_train`, hand-written on the CPU) or, with `graph`, through candle's
/// graph (`Decoder::forward` and its backward pass).
pub struct TimedTraining {
    cfg: ModelConfig,
    params: ParamStore,
    ids: Tensor,
    opt: AdamW,
    graph: bool,
    device: Device,
}

impl TimedTraining {
    /// A model initialised with seed 0 and `rows` as its batch.
    pub fn new(cfg: &ModelConfig, rows: &[Vec<u32>], graph: bool, device: &Device) -> Result<Self> {
        let params = ParamStore::init(cfg, 0.02, 0, device).map_err(to_candle)?;
        let ids = ids_tensor(rows, device).map_err(to_candle)?;
        let opt = AdamW::new(AdamWConfig::default());
        Ok(Self { cfg: cfg.clone(), params, ids, opt, graph, device: device.clone() })
    }

    /// Milliseconds of one step: forward, backward, gradient clipping and AdamW.
    pub fn step_ms(&mut self) -> Result<f64> {
        let t = Instant::now();
        let dec = Decoder::new(&self.cfg, &self.params).map_err(to_candle)?;
        let mut grads = if self.graph {
            let logits = dec.forward(&self.ids, None, ordo_model::OpPath::Differentiable).map_err(to_candle)?;
            Gradients::from_backward(&self.params, &ops::next_token_loss(&logits, &self.ids, None)?.backward()?)
        } else {
            let pass = dec.forward_train(&self.ids, None).map_err(to_candle)?;
            let loss = ops::next_token_loss(&pass.logits, &self.ids, None)?;
            Gradients::from_loss(&self.params, &pass, &loss).map_err(to_candle)?
        };
        grads.clip(1.0)?;
        self.opt.step(&self.params, &grads, 1e-3)?;
        self.device.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Figures of one engine benchmark run. Each comparison is taken in pairs, subject and baseline run
/// alternately (`interleaved`); a ratio is the median of the pairs' ratios.
#[derive(Debug, Clone)]
pub struct EngineBench {
    pub batch: usize,
    pub seq: usize,
    /// Each timed training step of the bench model (ms) and the sgemm rate (GFLOP/s) measured just after it.
    pub step_ms: Vec<f64>,
    pub sgemm_gflops: Vec<f64>,
    pub step_flops: f64,
    /// Median over pairs of the step's GFLOP/s over the sgemm rate beside it.
    pub step_sgemm_ratio: f64,
    pub sgemm_n: usize,
    pub sample_batch: usize,
    pub sample_new_tokens: usize,
    /// Sampling throughput (tokens/s) of `sampler::generate` (the CPU path on the CPU), paired with the
    /// same sampling on the tensor path (candle ops, KV cache).
    pub sample_tokens_per_s: Vec<f64>,
    pub sample_tensor_tokens_per_s: Vec<f64>,
    /// Median over pairs of the CPU path's throughput over the tensor path's.
    pub sample_ratio: f64,
    /// Rows x tokens of the organism's training step (its pretraining shape).
    pub organism_shape: (usize, usize),
    /// Organism training steps (ms) on the training pass, each paired with one through candle's graph.
    pub organism_step_ms: Vec<f64>,
    pub organism_graph_step_ms: Vec<f64>,
    /// Median over pairs of the graph step's time over the training pass's.
    pub organism_speedup: f64,
}

/// Median of the ratios `f(a, b)` over `pairs`.
fn median_ratio(pairs: &[(f64, f64)], f: impl Fn(f64, f64) -> f64) -> f64 {
    median(&pairs.iter().map(|&(a, b)| f(a, b)).collect::<Vec<_>>())
}

/// Runs the engine benchmark, `steps` pairs of each comparison after one warm-up pair: training steps
/// of the bench model against sgemm (the faster of two 2048^3 products after each step), the organism
/// (the world's model at its pretraining shape) on the training pass against candle's graph, and
/// sampling on the CPU path against the tensor path.
pub fn bench_engine(
    steps: usize,
    organism: &ModelConfig,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<EngineBench> {
    let cfg = ModelConfig::bench();
    let (batch, seq) = (16, 128);
    let rows = random_rows(batch, seq, cfg.vocab_size);
    let step_flops = training_step_flops(&cfg, batch, seq);
    let sgemm_n = 2048;
    progress("training steps of the bench model, each followed by sgemm (baseline)");
    let mut training = TimedTraining::new(&cfg, &rows, false, device)?;
    let sgemm = Sgemm::new(sgemm_n, device)?;
    let step_pairs = interleaved(steps, &mut || training.step_ms(), &mut || sgemm.gflops(2))?;
    let step_sgemm_ratio = median_ratio(&step_pairs, |ms, gflops| step_flops / (ms / 1e3) / 1e9 / gflops);

    let (organism_batch, organism_seq) = (96, 64);
    let organism_rows = random_rows(organism_batch, organism_seq, organism.vocab_size);
    progress("organism training steps, each followed by one through candle's graph (baseline)");
    let mut pass = TimedTraining::new(organism, &organism_rows, false, device)?;
    let mut graph = TimedTraining::new(organism, &organism_rows, true, device)?;
    let organism_pairs = interleaved(steps, &mut || pass.step_ms(), &mut || graph.step_ms())?;

    progress("sampling, each run followed by one on the tensor path (baseline)");
    let (sample_batch, sample_new_tokens) = (16, 128);
    let prompts: Vec<Vec<u32>> = rows.iter().take(sample_batch).map(|r| r[..8].to_vec()).collect();
    let params = ParamStore::init(&cfg, 0.02, 0, device).map_err(to_candle)?;
    let dec = Decoder::new_inference(&cfg, &params).map_err(to_candle)?;
    let sp = SamplingParams { temperature: 1.0, seed: 1, ..SamplingParams::greedy(sample_new_tokens) };
    let tokens_per_s = |path: SamplingPath| -> Result<f64> {
        let t = Instant::now();
        let out = sampler::generate_on(&dec, &prompts, &sp, path).map_err(to_candle)?;
        let produced: usize = out.iter().map(Vec::len).sum();
        Ok(produced as f64 / t.elapsed().as_secs_f64())
    };
    let sample_pairs = interleaved(steps.max(3), &mut || tokens_per_s(SamplingPath::Auto), &mut || {
        tokens_per_s(SamplingPath::Tensor)
    })?;
    Ok(EngineBench {
        batch,
        seq,
        step_ms: step_pairs.iter().map(|p| p.0).collect(),
        sgemm_gflops: step_pairs.iter().map(|p| p.1).collect(),
        step_flops,
        step_sgemm_ratio,
        sgemm_n,
        sample_batch,
        sample_new_tokens,
        sample_tokens_per_s: sample_pairs.iter().map(|p| p.0).collect(),
        sample_tensor_tokens_per_s: sample_pairs.iter().map(|p| p.1).collect(),
        sample_ratio: median_ratio(&sample_pairs, |cpu, tensor| cpu / tensor),
        organism_shape: (organism_batch, organism_seq),
        organism_step_ms: organism_pairs.iter().map(|p| p.0).collect(),
        organism_graph_step_ms: organism_pairs.iter().map(|p| p.1).collect(),
        organism_speedup: median_ratio(&organism_pairs, |pass, graph| graph / pass),
    })
}

/// Prints a run's figures: each with its range, its same-run baseline and their ratio.
pub fn print(b: &EngineBench, organism: &ModelConfig, device: &Device) {
    // "M (range LO-HI" of timings or rates, with `digits` decimals.
    let spread = |xs: &[f64], digits: usize, unit: &str| {
        let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().cloned().fold(0.0, f64::max);
        format!("{:.digits$} {unit} median (range {lo:.digits$}-{hi:.digits$}", median(xs))
    };
    let step_ms = median(&b.step_ms);
    println!("ordo bench engine (d_model 256, 4 layers, 4 heads, MLP 1024, vocab 512; f32, {device:?})");
    println!(
        "each figure is paired with its baseline, the two run alternately, {} pair(s) after a warm-up pair;",
        b.step_ms.len()
    );
    println!("ratios are medians of the pairs' ratios (this measures both under the same machine conditions)");
    println!("training step, batch {} x {} tokens (forward, backward, clip, AdamW):", b.batch, b.seq);
    println!("  step time            {})", spread(&b.step_ms, 1, "ms"));
    println!("  FLOPs per step       {:.2} GFLOP", b.step_flops / 1e9);
    println!("  achieved             {:.1} GFLOP/s (median step)", b.step_flops / (step_ms / 1e3) / 1e9);
    let n = b.sgemm_n;
    println!(
        "  sgemm baseline       {}; {n}^3 f32 matmul, faster of 2 after each step)",
        spread(&b.sgemm_gflops, 1, "GFLOP/s")
    );
    println!("  ratio                {:.2} of sgemm", b.step_sgemm_ratio);
    println!("sampling, batch {} x {} new tokens (KV cache, temperature 1):", b.sample_batch, b.sample_new_tokens);
    println!("  throughput           {})", spread(&b.sample_tokens_per_s, 0, "tokens/s"));
    println!(
        "  tensor-path baseline {}; candle ops with a KV cache)",
        spread(&b.sample_tensor_tokens_per_s, 0, "tokens/s")
    );
    println!("  ratio                {:.2}", b.sample_ratio);
    let (rows, seq) = b.organism_shape;
    println!(
        "organism training step, {rows} x {seq} tokens (d_model {}, {} layers, vocab {}; its pretraining shape):",
        organism.hidden_size, organism.num_hidden_layers, organism.vocab_size
    );
    println!("  step time            {}; the training pass)", spread(&b.organism_step_ms, 1, "ms"));
    println!(
        "  candle-graph path    {}; Decoder::forward with candle's backward pass)",
        spread(&b.organism_graph_step_ms, 1, "ms")
    );
    println!("  speed-up             {:.2}x", b.organism_speedup);
}
