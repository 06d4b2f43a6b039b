//! The `ordo` command line: a thin layer over the ordo crates.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ordo_model::{decoder::ids_tensor, sampler, ChatMessage, Decoder, Device, OpPath, SamplingParams};
use std::path::{Path, PathBuf};

mod lab;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ordo: run the same model through different post-training orders and measure the difference.
#[derive(Parser)]
#[command(name = "ordo", version, about)]
struct Cli {
    /// Where tensors live: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show an experiment's plan: the prefix tree of stage nodes, each cached, corrupt or to run.
    Plan {
        file: PathBuf,
        /// Root of run directories and the shared stage cache.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Run an experiment: train every node not in the cache, then evaluate every arm.
    Run {
        file: PathBuf,
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Nodes trained at once where they are independent (default: the machine's cores); results do not
        /// depend on it.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Rebuild a run's report (report.md, report.html, summary.json) from its results.json.
    Report { run_dir: PathBuf },
    /// Print evaluation samples of a run: what the model was shown and wrote, labels and verdicts.
    Transcripts {
        run_dir: PathBuf,
        #[arg(long)]
        arm: Option<String>,
        #[arg(long)]
        seed: Option<u64>,
        /// Only checkpoints evaluated after this stage.
        #[arg(long)]
        stage: Option<String>,
        /// Evaluation suite (default: the one the world's monitors judge; leaky-tests has wrong_test,
        /// clean_greedy, clean_sampled, hint_plain, hint_hinted, early_answer@50, no_cot).
        #[arg(long)]
        suite: Option<String>,
        /// Comma-separated conditions, all of which must hold: a ground-truth label of the world's
        /// transcripts (a wrong one lists them), flagged or unflagged (`!` negates).
        #[arg(long, value_delimiter = ',')]
        filter: Vec<String>,
        /// The monitor that `flagged` / `unflagged` refer to (default: the world's first monitor).
        #[arg(long)]
        monitor: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// List the nodes and arms of a run directory with their state.
    Status { run_dir: PathBuf },
    /// Remove cache nodes that no run directory's plan refers to.
    Gc {
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        /// Remove without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Inspect models and compute their logits.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Generate a continuation with a model (greedy or sampled).
    Generate(GenerateArgs),
    /// Measure the engine's speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A world's samples and datasets (the registry's worlds; default leaky-tests).
    World {
        /// The world, by its name in experiment files.
        #[arg(long, global = true, default_value = "leaky-tests")]
        world: String,
        #[command(subcommand)]
        command: WorldCommand,
    },
}

#[derive(Subcommand)]
enum WorldCommand {
    /// Prints samples of each kind of document, pair and prompt, with their ground-truth labels.
    Sample {
        #[arg(long, default_value_t = 5)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Writes the world's datasets as JSONL (corpus, sft, preferences, RL and evaluation prompts) and its tokenizer.
    Corpus {
        #[arg(long)]
        out: PathBuf,
        /// Examples of a dataset, as NAME=N (repeatable; e.g. corpus=20000, preferences=2000,
        /// rl_prompts=5000, eval=256 in leaky-tests; others keep the world's defaults).
        #[arg(long = "size", value_parser = parse_size)]
        sizes: Vec<(String, usize)>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace an earlier `ordo world corpus` output at `--out` (never another directory).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Architecture, sizes, parameter count and stored dtype of an HF directory or .gguf file.
    Info { path: PathBuf },
    /// Writes the logits of a token sequence as one f32 tensor `logits` [len(ids), vocab].
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids, e.g. 5,17,42.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file at `--out`.
        #[arg(long)]
        force: bool,
    },
    /// Merges a LoRA adapter directory in PEFT's layout (adapter_config.json + adapter_model.safetensors)
    /// into its base model and writes the full HF checkpoint.
    MergeLora {
        /// The base model: HF directory or .gguf.
        #[arg(long)]
        base: PathBuf,
        /// The adapter directory.
        #[arg(long)]
        adapter: PathBuf,
        /// The HF directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing directory at `--out`.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Ids,
}

#[derive(Args)]
struct GenerateArgs {
    /// HF checkpoint directory or .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// The prompt text (needs the model's tokenizer).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// The prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Greedy decoding (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    greedy: bool,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the completion as text or as token ids.
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training step and sampling speed of the bench model, against sgemm measured in the same run.
    Engine {
        /// Timed training steps (after one warm-up step).
        #[arg(long, default_value_t = 10)]
        steps: usize,
    },
    /// Seconds per step of SFT, DPO and GRPO on the bench model.
    Stages {
        /// Timed steps of each stage (after one warm-up step).
        #[arg(long, default_value_t = 3)]
        steps: usize,
    },
    /// Seconds per step of SFT, DPO and GRPO on a real checkpoint, every weight trained and then LoRA,
    /// each against its FLOP floor, with peak memory (the shapes TRL was timed at: scripts/trl_bench.py).
    Real {
        /// HF checkpoint directory or .gguf file (e.g. target/assets/SmolLM2-135M-Instruct.Q4_1.gguf).
        #[arg(long)]
        model: PathBuf,
        /// Timed steps of each stage (after one warm-up step).
        #[arg(long, default_value_t = 2)]
        steps: usize,
        /// The LoRA rank of the second pass (alpha twice the rank, on every linear layer of the blocks).
        #[arg(long, default_value_t = 16)]
        lora_rank: usize,
    },
}

fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes away (`ordo plan F | head`).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// An error and its causes in one line, each cause once: many of ordo's errors already include
/// their cause's text, which `{:#}` would print a second time.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Parses `--size NAME=N`.
fn parse_size(s: &str) -> std::result::Result<(String, usize), String> {
    let (name, n) = s.split_once('=').ok_or_else(|| format!("expected NAME=N, found {s:?}"))?;
    let n = n.parse().map_err(|_| format!("{name}: expected a number of examples, found {n:?}"))?;
    Ok((name.to_string(), n))
}

/// Parses `--device`.
fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let index: usize = match s.strip_prefix("cuda:") {
                Some(i) => i.parse().with_context(|| format!("--device {s}: expected cuda:N with N a GPU index"))?,
                None => 0,
            };
            Device::new_cuda(index).with_context(|| {
                format!(
                    "--device {s}: no CUDA device (ordo must be built with `--features cuda` on a machine with CUDA)"
                )
            })
        }
        other => bail!("--device {other}: expected cpu, cuda or cuda:N"),
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = parse_device(&cli.device)?;
    match cli.command {
        Command::Plan { file, runs } => lab::plan(&file, &runs),
        Command::Run { file, runs, jobs } => lab::run(&file, &runs, jobs),
        Command::Status { run_dir } => lab::status(&run_dir),
        Command::Report { run_dir } => lab::report(&run_dir),
        Command::Transcripts { run_dir, arm, seed, stage, suite, filter, monitor, limit } => {
            let f = ordo_lab::transcripts::TranscriptFilter { arm, seed, stage, suite, conditions: filter, monitor };
            lab::transcripts(&run_dir, &f, limit)
        }
        Command::Gc { runs, yes } => lab::gc(&runs, yes),
        Command::Model(ModelCommand::Info { path }) => model_info(&path, &device),
        Command::Model(ModelCommand::Logits { model, ids, out, force }) => {
            model_logits(&model, &ids, &out, force, &device)
        }
        Command::Model(ModelCommand::MergeLora { base, adapter, out, force }) => {
            merge_lora(&base, &adapter, &out, force, &device)
        }
        Command::Generate(args) => generate(args, &device),
        Command::Bench(BenchCommand::Engine { steps }) => bench_engine(steps, &device),
        Command::Bench(BenchCommand::Stages { steps }) => bench_stages(steps, &device),
        Command::Bench(BenchCommand::Real { model, steps, lora_rank }) => bench_real(&model, steps, lora_rank, &device),
        Command::World { world, command } => {
            let entry = ordo_worlds::find(&world)
                .with_context(|| format!("--world {world}: unknown world (ordo has {})", ordo_worlds::names()))?;
            let w = (entry.configure)(None).map_err(|p| anyhow::anyhow!("{world}: {}", p.join("; ")))?;
            match command {
                WorldCommand::Sample { n, seed } => print!("{}", w.samples(n, seed)),
                WorldCommand::Corpus { out, sizes, seed, force } => {
                    let files = w.write_datasets(&out, &sizes.into_iter().collect(), seed, force)?;
                    println!("wrote the {world} datasets (seed {seed}) to {}", out.display());
                    for f in files {
                        println!("  {f}");
                    }
                }
            }
            Ok(())
        }
    }
}

fn model_info(path: &Path, device: &Device) -> Result<()> {
    print!("{}", ordo_model::load(path, device)?.describe(path));
    Ok(())
}

fn model_logits(path: &Path, ids: &[u32], out: &Path, force: bool, device: &Device) -> Result<()> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        bail!("--out {}: exists; pass --force to replace it", out.display());
    }
    let m = ordo_model::load(path, device)?;
    let dec = Decoder::new_inference(&m.config, &m.params)?;
    let logits = dec.forward(&ids_tensor(&[ids.to_vec()], device)?, None, OpPath::Inference)?.squeeze(0)?;
    ordo_model::weights::write_f32_safetensors(out, &[("logits", &logits)])?;
    let (n, v) = logits.dims2()?;
    println!("wrote logits [{n}, {v}] to {}", out.display());
    Ok(())
}

fn merge_lora(base: &Path, adapter: &Path, out: &Path, force: bool, device: &Device) -> Result<()> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        bail!("--out {}: exists; pass --force to replace it", out.display());
    }
    let mut m = ordo_model::load(base, device)?;
    let cfg = m.config.clone();
    let adapters = ordo_model::weights::load_peft_dir(adapter, cfg.num_hidden_layers, |s| {
        ordo_model::lora::weight_shape(&cfg, s)
    })?;
    m.params.attach_lora(&cfg, &adapters).with_context(|| format!("--adapter {}", adapter.display()))?;
    let merged = m.params.merged(&cfg)?;
    ordo_model::weights::save_hf_dir(out, &cfg, &merged, m.tokenizer.as_ref(), usize::MAX)?;
    println!(
        "merged {} adapters (rank {}; {}) into {}: wrote {}",
        adapters.adapters.len(),
        adapters.config.rank,
        adapters.config.targets.join(", "),
        base.display(),
        out.display()
    );
    Ok(())
}

fn generate(args: GenerateArgs, device: &Device) -> Result<()> {
    let m = ordo_model::load(&args.model, device)?;
    let prompt_ids = match (&args.prompt, &args.ids) {
        (Some(text), None) => {
            let tok = m.require_tokenizer()?;
            if args.chat {
                let rendered = tok.apply_chat_template(&[ChatMessage::new("user", text)], true)?;
                tok.encode(&rendered, false)?
            } else {
                tok.encode(text, true)?
            }
        }
        (None, Some(ids)) => {
            if args.chat {
                bail!("--chat needs --prompt TEXT (a chat template renders text, not ids)");
            }
            ids.clone()
        }
        _ => bail!("give exactly one of --prompt TEXT or --ids LIST"),
    };
    if prompt_ids.is_empty() {
        bail!("the prompt is empty");
    }
    let mut stop_tokens = m.config.eos_token_ids.clone();
    if let Some(tok) = &m.tokenizer {
        for key in ["eos_token"] {
            if let Some(id) = tok.special_token(key).and_then(|t| tok.token_id(&t)) {
                if !stop_tokens.contains(&id) {
                    stop_tokens.push(id);
                }
            }
        }
    }
    let params = SamplingParams {
        max_new_tokens: args.max_new_tokens,
        temperature: if args.greedy { 0.0 } else { args.temperature.unwrap_or(0.0) },
        top_k: args.top_k,
        top_p: args.top_p,
        stop_tokens,
        seed: args.seed,
    };
    let dec = Decoder::new_inference(&m.config, &m.params)?;
    let out = sampler::generate(&dec, &[prompt_ids], &params)?.remove(0);
    match args.format {
        OutputFormat::Ids => println!("{}", out.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        OutputFormat::Text => {
            let tok = m.require_tokenizer().context("--format text needs a tokenizer; use --format ids")?;
            println!("{}", tok.decode(&out, true)?);
        }
    }
    Ok(())
}

fn bench_engine(steps: usize, device: &Device) -> Result<()> {
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let organism = ordo_world::organism_config();
    let b = ordo_bench::engine::bench_engine(steps, &organism, device, &mut |msg| eprintln!("  {msg}"))?;
    ordo_bench::engine::print(&b, &organism, device);
    Ok(())
}

fn bench_stages(steps: usize, device: &Device) -> Result<()> {
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    // SAFETY: mi_collect only returns the global allocator's free pages to the system.
    let mut release = || unsafe { libmimalloc_sys::mi_collect(true) };
    let cfg = ordo_model::ModelConfig::bench();
    let params = ordo_model::ParamStore::init(&cfg, 0.02, 0, device)?;
    let shapes = ordo_bench::stages::Shapes::bench();
    let b = ordo_bench::stages::bench_stages(
        (&cfg, &params),
        None,
        (&shapes, None),
        steps,
        &mut |msg| eprintln!("  {msg}"),
        &mut release,
    )?;
    let model = "ordo bench stages (bench model: d_model 256, 4 layers, 4 heads, MLP 1024, vocab 512)";
    ordo_bench::stages::print(&b, model, device);
    Ok(())
}

fn bench_real(path: &Path, steps: usize, lora_rank: usize, device: &Device) -> Result<()> {
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let m = ordo_model::load(path, device)?;
    let tok = m.require_tokenizer()?.clone();
    let c = &m.config;
    let model = format!(
        "ordo bench real ({}: {} parameters, d_model {}, {} layers, vocab {})",
        path.display(),
        c.parameter_count(),
        c.hidden_size,
        c.num_hidden_layers,
        c.vocab_size
    );
    let targets = ordo_model::lora::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    let lora = ordo_model::lora::LoraConfig { rank: lora_rank, alpha: 2.0 * lora_rank as f64, dropout: 0.0, targets };
    lora.check("--lora-rank")?;
    let shapes = ordo_bench::stages::Shapes::real();
    // SAFETY: mi_collect only returns the global allocator's free pages to the system.
    let mut release = || unsafe { libmimalloc_sys::mi_collect(true) };
    for adapters in [None, Some(&lora)] {
        let b = ordo_bench::stages::bench_stages(
            (&m.config, &m.params),
            Some(&tok),
            (&shapes, adapters),
            steps,
            &mut |msg| eprintln!("  {msg}"),
            &mut release,
        )?;
        ordo_bench::stages::print(&b, &model, device);
        println!(
            "(the checkpoint as loaded stays resident beside each stage's own copy: {:.1} MiB of every peak above)\n",
            c.parameter_count() as f64 * 4.0 / 1048576.0
        );
    }
    Ok(())
}
