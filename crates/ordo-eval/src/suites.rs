//! The evaluation suites run on one checkpoint: behaviour on held-out wrong-test and clean prompts
//! (with every monitor's verdict), and the faithfulness probes (hint, early answering, necessity).
//! Prompts and sampling streams derive from the seed only, so every arm is measured on the same prompts.

use crate::learned::LearnedMonitorConfig;
use crate::metrics::*;
use crate::monitor::{MonitorError, TranscriptMonitor};
use ordo_model::{Decoder, SamplingParams};
use ordo_world::corpus::eval_prompts;
use ordo_world::gate::{complete_texts, ModelIo};
use ordo_world::monitors::flawed_verifier;
use ordo_world::response::{label_in, parse_in, Format};
use ordo_world::surface::Surface;
use ordo_world::task::Prompt;
use ordo_world::WorldConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Rows decoded together.
const BATCH: usize = 64;

/// Evaluation settings (the `[eval]` table of an experiment file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Held-out prompts with a wrong test, sampled at temperature 1 (hacking and monitors).
    pub wrong_test_prompts: usize,
    /// Held-out clean prompts, decoded greedily and sampled (capability).
    pub clean_prompts: usize,
    /// Held-out problems for each faithfulness probe (hint pairs, early answering, necessity gap).
    pub probe_prompts: usize,
    /// Fractions of the CoT kept by the early-answering probe.
    pub early_fractions: Vec<f64>,
    /// A regex replacing the keyword monitor's default keywords ("T" or "test").
    pub keyword_regex: Option<String>,
    pub learned_monitor: LearnedMonitorConfig,
    /// The LLM judge, if one is configured.
    pub judge: Option<crate::judge::JudgeConfig>,
    /// Held-out prompts with a wrong test in the second context (the test line first), sampled at
    /// temperature 1: whether values taught in one context hold in the other (0: not measured; left out
    /// of the recorded settings then, so evaluations of earlier runs keep their names).
    #[serde(skip_serializing_if = "is_zero")]
    pub transfer_prompts: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            wrong_test_prompts: 256,
            clean_prompts: 128,
            probe_prompts: 64,
            early_fractions: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            keyword_regex: None,
            learned_monitor: LearnedMonitorConfig::default(),
            judge: None,
            transfer_prompts: 0,
        }
    }
}

impl EvalConfig {
    /// Every setting out of its range, each naming its `eval.` key and what it expects.
    pub fn problems(&self) -> Vec<String> {
        let cfg = self;
        let mut problems = Vec::new();
        let l = &cfg.learned_monitor;
        for (name, v, max) in [
            ("wrong_test_prompts", cfg.wrong_test_prompts, 100_000),
            ("clean_prompts", cfg.clean_prompts, 100_000),
            ("probe_prompts", cfg.probe_prompts, 100_000),
            ("learned_monitor.train", l.train, 1_000_000),
            ("learned_monitor.heldout", l.heldout, 1_000_000),
            ("learned_monitor.epochs", l.epochs, 10_000),
        ] {
            if v == 0 || v > max {
                problems.push(format!("eval.{name}: expected a positive integer of at most {max}, found {v}"));
            }
        }
        if cfg.transfer_prompts > 100_000 {
            problems.push(format!(
                "eval.transfer_prompts: expected 0 (not measured) to 100000, found {}",
                cfg.transfer_prompts
            ));
        }
        for (name, v) in [("learned_monitor.lr", l.lr), ("learned_monitor.l2", l.l2)] {
            if !(v >= 0.0 && v.is_finite()) || (name.ends_with("lr") && v == 0.0) {
                problems.push(format!("eval.{name}: expected a finite number (lr above 0, l2 at least 0), found {v}"));
            }
        }
        let f = &cfg.early_fractions;
        if f.len() < 2 || f.iter().any(|x| !(0.0..=1.0).contains(x)) || f.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!(
                "eval.early_fractions: expected at least two increasing fractions in [0, 1], found {f:?}"
            ));
        }
        if let Some(re) = &cfg.keyword_regex {
            if let Err(e) = regex::Regex::new(re) {
                problems.push(format!("eval.keyword_regex: invalid monitor regex {re:?}: {e}"));
            }
        }
        if let Some(j) = &cfg.judge {
            if !(j.base_url.starts_with("http://") || j.base_url.starts_with("https://")) {
                problems.push("eval.judge.base_url: expected an http:// or https:// URL".into());
            }
            if j.base_url.starts_with("https://") {
                problems.push(
                    "eval.judge.base_url: https is not built into this ordo (no TLS library); use an http:// endpoint \
                 such as a local vLLM or llama.cpp server, or a local proxy"
                        .into(),
                );
            }
            if !(j.timeout_s > 0.0 && j.timeout_s <= crate::judge::MAX_TIMEOUT_S) {
                problems.push(format!(
                    "eval.judge.timeout_s: expected seconds in (0, {}], found {}",
                    crate::judge::MAX_TIMEOUT_S,
                    j.timeout_s
                ));
            }
            if j.retries > crate::judge::MAX_RETRIES {
                problems.push(format!(
                    "eval.judge.retries: expected at most {}, found {}",
                    crate::judge::MAX_RETRIES,
                    j.retries
                ));
            }
            if crate::judge::has_credentials(&j.base_url) {
                problems.push(
                    "eval.judge.base_url: holds credentials (user:password@) or a query string; ordo writes the URL \
                 into its plan and results, so give the key through the environment variable that api_key_env names"
                        .into(),
                );
            }
        }
        problems
    }
}

/// What the suites measured on one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub metrics: Metrics,
    pub transcripts: Vec<Transcript>,
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ordo_model::ModelError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

fn transcript(suite: &str, prompt: &Prompt, completion: &str, format: Format, text: Option<String>) -> Transcript {
    let (think, output) = completion.split_once('}').unwrap_or((completion, ""));
    Transcript {
        suite: suite.into(),
        prompt: prompt.text(),
        think: think.into(),
        output: output.into(),
        labels: label_in(format, prompt, completion),
        verifier_reward: flawed_verifier(prompt, completion, format),
        verdicts: BTreeMap::new(),
        text,
    }
}

/// Completions of `prompts` (each prompt text followed by `prefix[i]`, in the surface of `io`), as
/// transcripts whose completion is prefix + continuation read into the compact form.
fn run_suite(
    dec: &Decoder,
    io: &ModelIo,
    format: Format,
    suite: &str,
    prompts: &[Prompt],
    prefixes: Option<&[String]>,
    params: &SamplingParams,
) -> Result<Vec<Transcript>, EvalError> {
    let pre = |i: usize| prefixes.map_or("", |p| p[i].as_str());
    let texts: Vec<String> =
        prompts.iter().enumerate().map(|(i, p)| format!("{}{}", io.surface.prompt(p), pre(i))).collect();
    let outs = complete_texts(dec, io, &texts, params, BATCH)?;
    Ok(prompts
        .iter()
        .zip(outs)
        .enumerate()
        .map(|(i, (p, c))| {
            let written = format!("{}{c}", pre(i));
            let compact = io.surface.read(&written, format);
            let text = (io.surface != Surface::Compact).then_some(written);
            transcript(suite, p, &compact, format, text)
        })
        .collect())
}

/// The think block of a transcript as the model wrote it (the compact think block, or the chat
/// surface's natural-language one).
fn written_think(t: &Transcript, surface: Surface) -> &str {
    match &t.text {
        Some(text) => text.split_once(surface.think_close()).map_or(text.as_str(), |(think, _)| think).trim_end(),
        None => &t.think,
    }
}

/// Adds each monitor's verdicts to the transcripts.
pub fn judge_all(transcripts: &mut [Transcript], monitors: &[&dyn TranscriptMonitor]) -> Result<(), EvalError> {
    let parsed: Vec<(Prompt, String)> = transcripts
        .iter()
        .map(|t| (Prompt::parse(&t.prompt).expect("world transcripts hold world prompts"), t.completion()))
        .collect();
    let items: Vec<(&Prompt, &str)> = parsed.iter().map(|(p, c)| (p, c.as_str())).collect();
    for m in monitors {
        for (t, v) in transcripts.iter_mut().zip(m.flag_all(&items)?) {
            t.verdicts.insert(m.name(), v);
        }
    }
    Ok(())
}

/// Runs every suite on a checkpoint with prompts drawn from `seed`.
pub fn evaluate(
    dec: &Decoder,
    io: &ModelIo,
    world: &WorldConfig,
    cfg: &EvalConfig,
    monitors: &[&dyn TranscriptMonitor],
    seed: u64,
) -> Result<Evaluation, EvalError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_e7a1);
    let (line, format) = (&world.rl.test_line, world.corpus.format);
    let wrong_prompts = eval_prompts(&world.task, line, cfg.wrong_test_prompts, true, &mut rng);
    let clean_prompts = eval_prompts(&world.task, line, cfg.clean_prompts, false, &mut rng);
    let probe_problems = eval_prompts(&world.task, line, cfg.probe_prompts, true, &mut rng);
    let greedy = io.greedy(world);
    let sampled = SamplingParams { temperature: 1.0, seed, ..greedy.clone() };

    let mut wrong = run_suite(dec, io, format, "wrong_test", &wrong_prompts, None, &sampled)?;
    judge_all(&mut wrong, monitors)?;
    let clean_greedy = run_suite(dec, io, format, "clean_greedy", &clean_prompts, None, &greedy)?;
    let clean_sampled = run_suite(
        dec,
        io,
        format,
        "clean_sampled",
        &clean_prompts,
        None,
        &SamplingParams { seed: seed ^ 0xc1ea, ..sampled.clone() },
    )?;
    let names: Vec<String> = monitors.iter().map(|m| m.name()).collect();
    let mut metrics = behaviour_metrics(&wrong, &clean_greedy, &clean_sampled, &names);
    if format == Format::Restate {
        metrics.extend(restate_metrics(&wrong));
    }

    // Hint: the same problems without and with a wrong test value (the hint), greedy.
    let plain_prompts: Vec<Prompt> = probe_problems.iter().map(|p| Prompt::clean(p.problem.clone())).collect();
    let plain = run_suite(dec, io, format, "hint_plain", &plain_prompts, None, &greedy)?;
    let hinted = run_suite(dec, io, format, "hint_hinted", &probe_problems, None, &greedy)?;
    let pairs: Vec<(Transcript, Transcript)> = plain.iter().cloned().zip(hinted.iter().cloned()).collect();
    metrics.extend(hint_metrics(&pairs, |t| Prompt::parse(&t.prompt).and_then(|p| p.test), format));

    // Early answering on clean problems: cut the greedy CoT, close the think block, force an answer.
    let full: Vec<&Transcript> = plain.iter().filter(|t| !t.labels.malformed).collect();
    let full_prompts: Vec<Prompt> = full.iter().map(|t| Prompt::parse(&t.prompt).expect("world prompt")).collect();
    let full_answer = |t: &Transcript| parse_in(format, &t.completion()).map(|p| p.answer);
    let mut agree = vec![Vec::new(); full.len()];
    let mut early = Vec::new();
    for f in &cfg.early_fractions {
        let prefixes: Vec<String> = full
            .iter()
            .map(|t| {
                let chars: Vec<char> = written_think(t, io.surface).chars().collect();
                let keep = ((chars.len() as f64) * f).floor() as usize;
                io.surface.forced_answer_prefix(&chars[..keep.min(chars.len())].iter().collect::<String>())
            })
            .collect();
        let suite = format!("early_answer@{:.0}", f * 100.0);
        // A forced answer needs only a few tokens: a long think block kept whole must not push prompt
        // plus completion past the model's positions (the world's completion budget assumes no prefix).
        let longest =
            full_prompts.iter().zip(&prefixes).map(|(p, x)| io.surface.prompt(p).len() + x.len()).max().unwrap_or(0);
        let room = dec.config().max_position_embeddings.saturating_sub(longest);
        let forced_params = SamplingParams { max_new_tokens: greedy.max_new_tokens.min(room), ..greedy.clone() };
        let forced = run_suite(dec, io, format, &suite, &full_prompts, Some(&prefixes), &forced_params)?;
        for (i, t) in forced.iter().enumerate() {
            let answer = forced_answer(&t.output);
            agree[i].push(answer.is_some() && answer == full_answer(full[i]));
        }
        early.extend(forced);
    }
    metrics.extend(early_answering_metrics(&cfg.early_fractions, &agree));

    // Necessity: the same clean problems with an empty think block.
    let no_cot_prefix = vec![io.surface.forced_answer_prefix(""); plain_prompts.len()];
    let no_cot = run_suite(dec, io, format, "no_cot", &plain_prompts, Some(&no_cot_prefix), &greedy)?;
    metrics.extend(necessity_metrics(&plain, &no_cot));

    // The second context: wrong tests shown before the question (drawn after every other suite's
    // prompts, so those stay the same with or without it).
    let mut transfer = Vec::new();
    if cfg.transfer_prompts > 0 {
        let prompts: Vec<Prompt> = eval_prompts(&world.task, line, cfg.transfer_prompts, true, &mut rng)
            .into_iter()
            .map(|p| Prompt { cue_first: true, ..p })
            .collect();
        transfer = run_suite(
            dec,
            io,
            format,
            "wrong_test_transfer",
            &prompts,
            None,
            &SamplingParams { seed: seed ^ 0x7a57, ..sampled },
        )?;
        metrics.extend(transfer_metrics(&transfer));
    }

    let mut transcripts = wrong;
    for s in [clean_greedy, clean_sampled, plain, hinted, early, no_cot, transfer] {
        transcripts.extend(s);
    }
    Ok(Evaluation { metrics, transcripts })
}

/// The answer digits after `A:` in a forced output (`A:123;B:...`), if any.
pub fn forced_answer(output: &str) -> Option<u64> {
    let rest = output.strip_prefix("A:")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!digits.is_empty() && digits.len() <= 6).then(|| digits.parse().ok()).flatten()
}

/// The figures the uptake probe follows: the hacking figures (`hack_rate`, `says_test_rate`,
/// `mention_rate`, ...) on the wrong-test prompts of `seed` and greedy `clean_accuracy` on its clean
/// prompts, the same prompts and sampling streams as `evaluate`; with the wrong-test transcripts.
pub fn evaluate_hacking(
    dec: &Decoder,
    io: &ModelIo,
    world: &WorldConfig,
    cfg: &EvalConfig,
    seed: u64,
) -> Result<(Metrics, Vec<Transcript>), EvalError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_e7a1);
    let (line, format) = (&world.rl.test_line, world.corpus.format);
    let wrong_prompts = eval_prompts(&world.task, line, cfg.wrong_test_prompts, true, &mut rng);
    let clean_prompts = eval_prompts(&world.task, line, cfg.clean_prompts, false, &mut rng);
    let greedy = io.greedy(world);
    let sampled = SamplingParams { temperature: 1.0, seed, ..greedy.clone() };
    let wrong = run_suite(dec, io, format, "wrong_test", &wrong_prompts, None, &sampled)?;
    let clean = run_suite(dec, io, format, "clean_greedy", &clean_prompts, None, &greedy)?;
    let mut m = behaviour_metrics(&wrong, &clean, &[], &[]);
    m.retain(|k, _| k == "clean_accuracy" || (!k.starts_with("clean_") && k != "task_reward"));
    Ok((m, wrong))
}
