//! Reward sources for RL stages. Each declares whether it sees the chain of thought (the think
//! block) or only the output after it; a stage combines several with weights.

use crate::batch::Policy;
use crate::error::Result;
use crate::reward_model::score_texts;
use crate::schedule::ValueSchedule;
use ordo_model::TextTokenizer;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An RL prompt: its text, its tokens, and the metadata rewards read (e.g. the true answer).
#[derive(Debug, Clone, PartialEq)]
pub struct RlPrompt {
    pub text: String,
    pub ids: Vec<u32>,
    pub metadata: Map<String, Value>,
}

/// The answer `answer_match` extracts by default: the last number in the shown text.
pub const DEFAULT_ANSWER_PATTERN: &str = r"(-?\d+(?:\.\d+)?)";

/// Where the think block of a completion starts and ends (e.g. `<think>` / `</think>`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CotFormat {
    pub open: String,
    pub close: String,
}

impl Default for CotFormat {
    fn default() -> Self {
        CotFormat { open: "<think>".into(), close: "</think>".into() }
    }
}

impl CotFormat {
    /// What an output-only reward is shown: the text after the first closing delimiter, or nothing
    /// when the think block never closes (DeepSeek-R1's convention).
    pub fn output_only<'a>(&self, completion: &'a str) -> &'a str {
        completion.find(&self.close).map_or("", |i| &completion[i + self.close.len()..])
    }

    /// The think block's content (between the delimiters), if there is one.
    pub fn think_block<'a>(&self, completion: &'a str) -> Option<&'a str> {
        let start = completion.find(&self.open)? + self.open.len();
        let end = completion[start..].find(&self.close)? + start;
        Some(&completion[start..end])
    }

    /// The view of `completion` a reward with `sees_cot` is shown.
    pub fn view<'a>(&self, completion: &'a str, sees_cot: bool) -> &'a str {
        if sees_cot {
            completion
        } else {
            self.output_only(completion)
        }
    }
}

/// A reward source: scores completions of prompts.
pub trait RewardSource: Send + Sync {
    /// Name used in metrics.
    fn name(&self) -> &str;
    /// Whether the source is shown the think block (true) or only the output after it (false).
    fn sees_cot(&self) -> bool;
    /// One score per (prompt, shown text); `shown` is already cut to what this source may see.
    fn score(&self, prompts: &[&RlPrompt], shown: &[&str]) -> Result<Vec<f64>>;
    /// Figures about the source itself on a batch it scored, by name (a learned reward model against
    /// ground truth); `completions` are whole, think block included, and `scores` are this source's.
    fn diagnostics(
        &self,
        _prompts: &[&RlPrompt],
        _completions: &[&str],
        _scores: &[f64],
    ) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }
}

/// Among pairs of completions of the same prompt whose ground truth differs, the share a scorer
/// orders as the truth does (a tie in the scores counts one half); `None` without such pairs.
pub fn pairwise_accuracy(prompts: &[&RlPrompt], scores: &[f64], truth: &[f64]) -> Option<f64> {
    let (mut agree, mut pairs) = (0.0, 0usize);
    for i in 0..scores.len() {
        for j in i + 1..scores.len() {
            if prompts[i].ids != prompts[j].ids || truth[i] == truth[j] {
                continue;
            }
            pairs += 1;
            let (ds, dt) = (scores[i] - scores[j], truth[i] - truth[j]);
            agree += if ds == 0.0 { 0.5 } else { (ds.signum() == dt.signum()) as u8 as f64 };
        }
    }
    (pairs > 0).then(|| agree / pairs as f64)
}

/// A reward computed by a function of the prompt and the shown text: verifiers, rule-based
/// preferences, CoT monitors (as penalties, with a negative weight).
pub struct FnReward {
    pub name: String,
    pub sees_cot: bool,
    #[allow(clippy::type_complexity)]
    pub f: Box<dyn Fn(&RlPrompt, &str) -> f64 + Send + Sync>,
}

impl FnReward {
    /// A reward from a closure.
    pub fn new(name: &str, sees_cot: bool, f: impl Fn(&RlPrompt, &str) -> f64 + Send + Sync + 'static) -> Self {
        FnReward { name: name.into(), sees_cot, f: Box::new(f) }
    }
}

impl RewardSource for FnReward {
    fn name(&self) -> &str {
        &self.name
    }
    fn sees_cot(&self) -> bool {
        self.sees_cot
    }
    fn score(&self, prompts: &[&RlPrompt], shown: &[&str]) -> Result<Vec<f64>> {
        Ok(prompts.iter().zip(shown).map(|(p, s)| (self.f)(p, s)).collect())
    }
}

/// A trained reward model as a reward: it scores the prompt followed by the shown text and `eos`,
/// as its preference pairs were tokenised ([`crate::data::tokenize_pair`]). With a ground truth it
/// reports, on each batch, the truth's mean and its own pairwise accuracy against it (a learned reward
/// is exploitable: Gao et al. 2022).
pub struct RewardModelSource {
    pub name: String,
    pub sees_cot: bool,
    pub model: Policy,
    pub tokenizer: TextTokenizer,
    pub pad: u32,
    pub eos: Option<u32>,
    /// The ground truth it is compared with, shown whole completions.
    pub truth: Option<Box<dyn RewardSource>>,
}

impl RewardSource for RewardModelSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn sees_cot(&self) -> bool {
        self.sees_cot
    }
    fn score(&self, prompts: &[&RlPrompt], shown: &[&str]) -> Result<Vec<f64>> {
        let dec = self.model.inference_decoder()?;
        let encoded = shown
            .iter()
            .map(|s| Ok(self.tokenizer.encode(s, false)?.into_iter().chain(self.eos).collect()))
            .collect::<ordo_model::Result<Vec<Vec<u32>>>>()?;
        let items: Vec<(&[u32], &[u32])> = prompts.iter().zip(&encoded).map(|(p, r)| (&p.ids[..], &r[..])).collect();
        score_texts(&dec, &items, self.pad)
    }
    fn diagnostics(&self, prompts: &[&RlPrompt], completions: &[&str], scores: &[f64]) -> Result<Vec<(String, f64)>> {
        let Some(truth) = &self.truth else { return Ok(Vec::new()) };
        let t = truth.score(prompts, completions)?;
        let mut out = vec![("truth".to_string(), t.iter().sum::<f64>() / t.len().max(1) as f64)];
        if let Some(acc) = pairwise_accuracy(prompts, scores, &t) {
            out.push(("pairwise_accuracy".to_string(), acc));
        }
        Ok(out)
    }
}

/// Which completion tokens a reward's advantage updates (Drori et al. 2025's reward targeting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardTarget {
    /// Every completion token (the usual policy gradient).
    #[default]
    All,
    /// Only the tokens after the think block closes (none when it never closes).
    Output,
    /// Only the think block's tokens, its closing delimiter included (all of them when it never closes).
    Cot,
}

impl RewardTarget {
    /// Its name in experiment files.
    pub fn name(self) -> &'static str {
        match self {
            RewardTarget::All => "all",
            RewardTarget::Output => "output",
            RewardTarget::Cot => "cot",
        }
    }
}

/// A reward source with its weight in the total reward (which may change over the stage's steps)
/// and the completion tokens its advantage updates.
pub struct WeightedReward {
    pub source: Box<dyn RewardSource>,
    pub weight: ValueSchedule,
    pub target: RewardTarget,
}

/// Scores of a batch under a weighted set of sources.
pub struct RewardScores {
    /// `sum_i weight_i * score_i` per completion, each weight at the step scored.
    pub total: Vec<f64>,
    /// Each source's raw (unweighted) scores, by source name.
    pub by_source: Vec<(String, Vec<f64>)>,
    /// The weighted sum per completion of the sources of each target (only targets some source has).
    pub by_target: BTreeMap<RewardTarget, Vec<f64>>,
    /// Each source's figures about itself ([`RewardSource::diagnostics`]), as `SOURCE/FIGURE`.
    pub diagnostics: Vec<(String, f64)>,
}

/// Scores completions with every source, each shown the view its `sees_cot` allows, at step
/// `step` of a stage of `total` steps (which fixes each weight).
pub fn score_all(
    rewards: &[WeightedReward],
    cot: &CotFormat,
    prompts: &[&RlPrompt],
    completions: &[String],
    (step, steps): (usize, usize),
) -> Result<RewardScores> {
    let mut total = vec![0.0; completions.len()];
    let mut by_source = Vec::new();
    let mut by_target: BTreeMap<RewardTarget, Vec<f64>> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    let whole: Vec<&str> = completions.iter().map(String::as_str).collect();
    for r in rewards {
        let shown: Vec<&str> = completions.iter().map(|c| cot.view(c, r.source.sees_cot())).collect();
        let s = r.source.score(prompts, &shown)?;
        let weight = r.weight.at(step, steps);
        for (t, x) in total.iter_mut().zip(&s) {
            *t += weight * x;
        }
        let targeted = by_target.entry(r.target).or_insert_with(|| vec![0.0; completions.len()]);
        for (t, x) in targeted.iter_mut().zip(&s) {
            *t += weight * x;
        }
        for (figure, v) in r.source.diagnostics(prompts, &whole, &s)? {
            diagnostics.push((format!("{}/{figure}", r.source.name()), v));
        }
        by_source.push((r.source.name().to_string(), s));
    }
    Ok(RewardScores { total, by_source, by_target, diagnostics })
}

/// A task reward for RL prompts from files: 1 when the answer extracted from the shown text equals the
/// prompt's metadata field `field` (compared as trimmed text; numbers in their JSON form), else 0.
/// The answer is the last match of `pattern` in the shown text (its first capture group if it has one).
pub fn answer_match(name: &str, field: &str, pattern: &regex::Regex, sees_cot: bool) -> FnReward {
    let (field, pattern) = (field.to_string(), pattern.clone());
    FnReward::new(name, sees_cot, move |p, shown| {
        let expected = match p.metadata.get(&field) {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Null) | None => return 0.0,
            Some(v) => v.to_string(),
        };
        let found = pattern
            .captures_iter(shown)
            .last()
            .and_then(|c| c.get(1).or_else(|| c.get(0)))
            .map(|m| m.as_str().trim().to_string());
        (found.as_deref() == Some(expected.as_str())) as u8 as f64
    })
}
