//! `ordo-fuzz`: fuzzes one parser, or every parser in child processes (each with its own memory figure).

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::Command;

/// Fuzz ordo's parsers: mutated inputs from seeds, counting panics, hangs and peak memory.
#[derive(Parser)]
#[command(name = "ordo-fuzz")]
struct Cli {
    /// A target (experiment-toml, jsonl, safetensors, config-json, gguf, tokenizer, chat-template) or `all`.
    #[arg(long, default_value = "all")]
    target: String,
    /// Executions per target.
    #[arg(long, default_value_t = 1_000_000)]
    execs: u64,
    /// Seed of the mutations (same seed, same inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where inputs that panic or hang are saved.
    #[arg(long, default_value = "fuzz-out")]
    out: PathBuf,
    /// Targets fuzzed at once with `--target all` (one process each).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Print one JSON line (used between the parent and its child processes).
    #[arg(long, hide = true)]
    json: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.target != "all" {
        let Some(t) = ordo_fuzz::Target::from_name(&cli.target) else {
            bail!("--target {}: unknown target; expected all or one of {}", cli.target, names());
        };
        let r = ordo_fuzz::fuzz(t, cli.execs, cli.seed, &cli.out)?;
        if cli.json {
            println!("{}", r.to_json());
        } else {
            print_rows(&[r.to_json()]);
        }
        return if r.panics > 0 {
            bail!("{} input(s) panicked; saved under {}", r.panics, cli.out.display())
        } else {
            Ok(())
        };
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for chunk in ordo_fuzz::ALL.chunks(cli.jobs.max(1)) {
        let children: Vec<_> = chunk
            .iter()
            .map(|t| {
                let mut c = Command::new(&exe);
                c.args([
                    "--target",
                    t.name(),
                    "--execs",
                    &cli.execs.to_string(),
                    "--seed",
                    &cli.seed.to_string(),
                    "--json",
                ])
                .arg("--out")
                .arg(&cli.out);
                c.output().map(|o| (*t, o))
            })
            .collect();
        for child in children {
            let (t, out) = child.context("starting a fuzz process")?;
            let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => rows.push(v),
                Err(_) => failed.push(format!(
                    "{}: exit {:?}: {}",
                    t.name(),
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        }
    }
    print_rows(&rows);
    let panics: u64 = rows.iter().map(|r| r["panics"].as_u64().unwrap_or(0)).sum();
    if !failed.is_empty() {
        bail!("fuzz processes failed (a hang ends its process with exit 3):\n  {}", failed.join("\n  "));
    }
    if panics > 0 {
        bail!("{panics} input(s) panicked; saved under {}", cli.out.display());
    }
    Ok(())
}

fn names() -> String {
    ordo_fuzz::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

fn print_rows(rows: &[serde_json::Value]) {
    println!(
        "{:<16} {:>10} {:>9} {:>7} {:>6} {:>11} {:>9} {:>10}",
        "target", "execs", "accepted", "panics", "slow", "slowest ms", "seconds", "peak MiB"
    );
    for r in rows {
        println!(
            "{:<16} {:>10} {:>9} {:>7} {:>6} {:>11.1} {:>9.1} {:>10}",
            r["target"].as_str().unwrap_or("?"),
            r["execs"].as_u64().unwrap_or(0),
            r["accepted"].as_u64().unwrap_or(0),
            r["panics"].as_u64().unwrap_or(0),
            r["slow"].as_u64().unwrap_or(0),
            r["slowest_ms"].as_f64().unwrap_or(0.0),
            r["seconds"].as_f64().unwrap_or(0.0),
            r["peak_rss_mib"].as_f64().map_or("n/m".into(), |m| format!("{m:.1}")),
        );
    }
}
