//! The leaky-tests world in natural language (`leaky-tests-chat`): the same problems, ground truth,
//! verifiers, judges and monitors, with every prompt rendered through a chat template and every
//! completion written and read by the chat surface (`ordo_world::surface`). This module holds what only
//! the chat world does: writing its examples, datasets and samples in natural language.

use crate::{Examples, World};
use ordo_train::data::{PreferenceExample, SftExample};
use ordo_world::response::Format;
use ordo_world::surface::Surface;
use ordo_world::task::Prompt;
use ordo_world::WorldConfig;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::Path;

/// Compact examples written in `surface` (responses in `format`).
pub(crate) fn written(surface: Surface, format: Format, ex: Examples) -> Examples {
    if surface == Surface::Compact {
        return ex;
    }
    let prompt = |p: &str| surface.prompt(&Prompt::parse(p).expect("the world draws prompts it can parse"));
    let completion = |c: &str| surface.completion(c, format);
    match ex {
        Examples::Texts(texts) => Examples::Texts(
            texts
                .iter()
                .map(|t| {
                    let at = t.find('{').expect("documents have a think block") + 1;
                    format!("{}{}", prompt(&t[..at]), completion(&t[at..]))
                })
                .collect(),
        ),
        Examples::Sft(rows) => Examples::Sft(
            rows.into_iter()
                .map(|r| match r {
                    SftExample::PromptCompletion { prompt: p, completion: c } => {
                        SftExample::PromptCompletion { prompt: prompt(&p), completion: completion(&c) }
                    }
                    other => other,
                })
                .collect(),
        ),
        Examples::Preferences(pairs) => Examples::Preferences(
            pairs
                .iter()
                .map(|p| PreferenceExample {
                    prompt: prompt(&p.prompt),
                    chosen: completion(&p.chosen),
                    rejected: completion(&p.rejected),
                })
                .collect(),
        ),
        Examples::RlPrompts(prompts) => Examples::RlPrompts(prompts.iter().map(|p| prompt(p)).collect()),
    }
}

/// The JSONL rows of examples, in the formats of user data.
fn rows(ex: &Examples) -> Vec<serde_json::Value> {
    match ex {
        Examples::Texts(t) => t.iter().map(|t| json!({"text": t})).collect(),
        Examples::Sft(rows) => rows
            .iter()
            .map(|r| match r {
                SftExample::PromptCompletion { prompt, completion } => {
                    json!({"prompt": prompt, "completion": completion})
                }
                SftExample::Messages(m) => json!({"messages": m}),
            })
            .collect(),
        Examples::Preferences(p) => {
            p.iter().map(|p| json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})).collect()
        }
        Examples::RlPrompts(p) => p.iter().map(|p| json!({"prompt": p})).collect(),
    }
}

/// Writes every dataset of the chat world as JSONL (`NAME.jsonl`), each of `size(NAME, default)`
/// examples (the pair sets and `cold_start` follow `preferences`, `sft` follows `corpus` and
/// `rl_prompts_transfer` follows `rl_prompts`), drawn one after another from `seed`. No tokenizer is
/// written: the chat world's models bring their own.
pub(crate) fn write_datasets(
    world: &dyn World,
    dir: &Path,
    size: &dyn Fn(&str, usize) -> usize,
    seed: u64,
    replace: bool,
) -> ordo_model::Result<Vec<String>> {
    let d = ordo_world::DatasetSizes::default();
    ordo_model::atomic::check_output_dir(dir, replace)?;
    let staging = ordo_model::atomic::staging_dir(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut files = Vec::new();
    for ds in world.datasets() {
        let n = match ds.name {
            "corpus" | "sft" => size("corpus", d.corpus),
            "rl_prompts" | "rl_prompts_transfer" => size("rl_prompts", d.rl_prompts),
            _ => size("preferences", d.preferences),
        };
        let ex = world.generate(ds.name, n, &mut rng).map_err(ordo_model::ModelError::Input)?;
        let text: String = rows(&ex).iter().map(|r| r.to_string() + "\n").collect();
        let name = format!("{}.jsonl", ds.name);
        let p = staging.join(&name);
        std::fs::write(&p, text).map_err(|e| ordo_model::ModelError::io(&p, e))?;
        files.push(name);
    }
    ordo_model::atomic::commit_dir(&staging, dir, replace)?;
    Ok(files)
}

/// `n` examples of every dataset as a model sees them, each completion with its ground-truth labels
/// read by the chat surface, then the compact form that labels and monitors read.
pub(crate) fn samples(world: &dyn World, (cfg, surface): (&WorldConfig, Surface), n: usize, seed: u64) -> String {
    use std::fmt::Write as _;
    let format = cfg.corpus.format;
    let labels = |prompt: &str, completion: &str| {
        let Some(p) = surface.parse_prompt(prompt) else { return String::new() };
        let compact = surface.read(completion, format);
        let l = ordo_world::response::label_in(format, &p, &compact);
        format!("read as {compact:?}: {}", serde_json::to_string(&l).expect("labels serialise"))
    };
    let mut o = String::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for ds in world.datasets() {
        let _ = writeln!(o, "== {} ({}), as the model sees it", ds.name, ds.kind.holds());
        match world.generate(ds.name, n, &mut rng) {
            Ok(Examples::Texts(t)) => t.iter().for_each(|t| {
                let _ = writeln!(o, "{t}\n--");
            }),
            Ok(Examples::Sft(rows)) => rows.iter().for_each(|r| {
                if let SftExample::PromptCompletion { prompt, completion } = r {
                    let _ = writeln!(o, "{prompt}{completion}\n  [{}]\n--", labels(prompt, completion));
                }
            }),
            Ok(Examples::Preferences(p)) => p.iter().for_each(|p: &PreferenceExample| {
                let _ = writeln!(
                    o,
                    "{}\n  chosen: {:?}\n    [{}]\n  rejected: {:?}\n    [{}]\n--",
                    p.prompt,
                    p.chosen,
                    labels(&p.prompt, &p.chosen),
                    p.rejected,
                    labels(&p.prompt, &p.rejected)
                );
            }),
            Ok(Examples::RlPrompts(p)) => p.iter().for_each(|p| {
                let _ = writeln!(o, "{p}\n--");
            }),
            Err(e) => {
                let _ = writeln!(o, "  cannot draw it: {e}");
            }
        }
    }
    let _ = writeln!(o, "\n== the compact form the chat world reads completions into (labels and monitors read it)");
    o + &ordo_world::sample_text(cfg, n, seed)
}
