//! The body of each stage kind: build its data (from the world or a file), then train. The runner
//! prepares what every stage shares (`StageCx`) and commits the node afterwards.

use crate::error::LabError;
use crate::experiment::{DataSource, PromptSetSpec, Reward, RewardSpec};
use crate::plan::Node;
use ordo_model::{ParamStore, Tensor, TextTokenizer};
use ordo_train::data::*;
use ordo_train::dpo::DpoSettings;
use ordo_train::grpo::{train_grpo, GrpoConfig, GrpoSettings, PromptSet};
use ordo_train::lm::{PretrainSettings, SftSettings};
use ordo_train::reward_model::RewardModelSettings;
use ordo_train::rewards::{CotFormat, FnReward, RlPrompt, WeightedReward, DEFAULT_ANSWER_PATTERN};
use ordo_train::trainer::{Checkpointing, StepLogger};
use ordo_train::{Policy, TrainError};
use ordo_world::gate::{GateConfig, GateReport};
use ordo_world::monitors::{flawed_verifier, looks_harmless, true_verifier, Monitor};
use ordo_world::task::Prompt;
use ordo_world::WorldConfig;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

/// What every stage body shares: the node, the world, the tokenizer and its special ids, the data
/// generator, the step logger, step checkpoints and the parameters a killed run left behind.
pub(crate) struct StageCx<'a, 'c> {
    pub node: &'a Node,
    pub world: Option<&'a WorldConfig>,
    pub tok: &'a TextTokenizer,
    pub eos: Option<u32>,
    pub pad: u32,
    pub rng: &'a mut ChaCha8Rng,
    pub logger: &'a mut StepLogger,
    pub ck: &'a mut Checkpointing<'c>,
    /// Parameters of the step checkpoint this stage resumes from.
    pub resumed: Option<&'a BTreeMap<String, Tensor>>,
    /// The node's staging directory (a reward model writes its head there).
    pub staging: &'a Path,
    /// The progress label, for messages.
    pub label: &'a str,
}

impl<'a> StageCx<'a, '_> {
    /// A training error as this stage's error.
    fn err(&self) -> impl Fn(TrainError) -> LabError + 'a {
        stage_error(self.node)
    }

    /// The world, which a world data source or reward needs.
    fn world(&self) -> Result<&'a WorldConfig, LabError> {
        self.world.ok_or_else(|| {
            LabError::Other(format!(
                "stage `{}`: world data and rewards need a world; set experiment.world",
                self.node.stage
            ))
        })
    }

    /// Puts the resumed parameters (if any) into `params`.
    fn apply(&self, params: &ParamStore) -> Result<(), LabError> {
        match self.resumed {
            Some(p) => crate::resume::apply(params, p).map_err(LabError::Other),
            None => Ok(()),
        }
    }
}

/// A training error of `node`'s stage as the run's error.
pub(crate) fn stage_error(node: &Node) -> impl Fn(TrainError) -> LabError + '_ {
    move |source| LabError::Stage { stage: node.stage.clone(), seed: node.seed, source: Box::new(source) }
}

/// `pretrain`: packed text from the world's corpus or a file.
pub(crate) fn pretrain(
    cx: &mut StageCx,
    policy: &mut Policy,
    data: &DataSource,
    s: &PretrainSettings,
) -> Result<(), LabError> {
    let texts = match data {
        DataSource::World { size, .. } => {
            let w = cx.world()?;
            (0..*size).map(|_| ordo_world::corpus::document(&w.task, &w.corpus, cx.rng).text()).collect()
        }
        DataSource::File { path, .. } => {
            parse_texts(&read_jsonl(path).map_err(cx.err())?, &path.display().to_string()).map_err(cx.err())?
        }
    };
    let seqs = pack_texts(&texts, cx.tok, cx.eos, s.seq_len).map_err(cx.err())?;
    cx.apply(&policy.params)?;
    let (seed, pad) = (cx.node.seed, cx.pad);
    ordo_train::lm::train_lm(policy, &seqs, &s.optim, seed, pad, cx.logger, Some(&mut *cx.ck)).map_err(cx.err())?;
    Ok(())
}

/// `sft`: prompt-completion examples from the world's documents or a file.
pub(crate) fn sft(cx: &mut StageCx, policy: &mut Policy, data: &DataSource, s: &SftSettings) -> Result<(), LabError> {
    let examples = match data {
        DataSource::World { size, .. } => {
            let w = cx.world()?;
            (0..*size)
                .map(|_| {
                    let d = ordo_world::corpus::document(&w.task, &w.corpus, cx.rng);
                    SftExample::PromptCompletion { prompt: d.prompt.text(), completion: d.completion }
                })
                .collect()
        }
        DataSource::File { path, .. } => {
            parse_sft(&read_jsonl(path).map_err(cx.err())?, &path.display().to_string()).map_err(cx.err())?
        }
    };
    let seqs = examples
        .iter()
        .map(|e| tokenize_sft(e, cx.tok, cx.eos, s.max_len))
        .collect::<Result<Vec<_>, _>>()
        .map_err(cx.err())?;
    cx.apply(&policy.params)?;
    let (seed, pad) = (cx.node.seed, cx.pad);
    ordo_train::lm::train_lm(policy, &seqs, &s.optim, seed, pad, cx.logger, Some(&mut *cx.ck)).map_err(cx.err())?;
    Ok(())
}

/// `reward_model`: a scalar head on the policy trained on preference pairs; saved beside the policy.
pub(crate) fn reward_model(
    cx: &mut StageCx,
    policy: &Policy,
    data: &DataSource,
    s: &RewardModelSettings,
) -> Result<(), LabError> {
    let pairs = preference_data(cx, data)?;
    let seed = cx.node.seed;
    let mut rm = ordo_train::reward_model::reward_model_from(policy, s.init_std, seed).map_err(cx.err())?;
    cx.apply(&rm.params)?;
    ordo_train::reward_model::train_reward_model(&mut rm, &pairs, &s.optim, seed, cx.pad, cx.logger, Some(&mut *cx.ck))
        .map_err(cx.err())?;
    ordo_model::weights::save_hf_dir(&cx.staging.join("rm"), &rm.config, &rm.params, Some(cx.tok), usize::MAX)?;
    Ok(())
}

/// `dpo`: preference pairs against a frozen copy of the start model.
pub(crate) fn dpo(cx: &mut StageCx, policy: &mut Policy, data: &DataSource, s: &DpoSettings) -> Result<(), LabError> {
    let pairs = preference_data(cx, data)?;
    // The reference is the stage's start model, copied before resumed parameters are applied.
    let reference = policy.frozen_copy().map_err(cx.err())?;
    cx.apply(&policy.params)?;
    let (seed, pad) = (cx.node.seed, cx.pad);
    ordo_train::dpo::train_dpo(policy, &reference, &pairs, s, seed, pad, cx.logger, Some(&mut *cx.ck))
        .map_err(cx.err())?;
    Ok(())
}

/// `grpo`: the readiness gate on the start model (when set and not resuming), then RL on the
/// stage's prompt sets with their rewards. Returns the gate's report.
pub(crate) fn grpo(
    cx: &mut StageCx,
    policy: &mut Policy,
    sets: &[PromptSetSpec],
    gate: Option<&GateConfig>,
    chat_template: bool,
    s: &GrpoSettings,
) -> Result<Option<GateReport>, LabError> {
    let mut gate_report = None;
    if let (Some(g), None) = (gate, cx.resumed) {
        let w = cx.world()?;
        let dec = policy.inference_decoder().map_err(cx.err())?;
        let gate_cfg = GateConfig { seed: cx.node.seed, ..g.clone() };
        match ordo_world::gate::check_readiness(&dec, &w.task, &w.corpus.test_line, &gate_cfg) {
            Ok(report) => {
                eprintln!(
                    "{}: readiness gate passed: clean accuracy {:.3}, silent hack rate {:.3} (greedy, {} held-out prompts each)",
                    cx.label, report.clean_accuracy, report.silent_hack_rate, report.prompts
                );
                gate_report = Some(report);
            }
            Err(e) => {
                return Err(LabError::Gate { stage: cx.node.stage.clone(), seed: cx.node.seed, message: e.to_string() })
            }
        }
    }
    let mut prompt_sets = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let prompts = rl_prompts(cx, &set.data, chat_template)?;
        let rewards = set
            .rewards
            .iter()
            .map(|r| Ok(WeightedReward { source: Box::new(stage_reward(r)?), weight: r.weight }))
            .collect::<Result<Vec<_>, LabError>>()?;
        prompt_sets.push(PromptSet { name: format!("set{i}"), prompts, proportion: set.proportion, rewards });
    }
    let reference = policy.frozen_copy().map_err(cx.err())?;
    cx.apply(&policy.params)?;
    let cot = s.cot.clone().unwrap_or_else(|| match cx.world {
        Some(_) => CotFormat { open: "{".into(), close: "}".into() },
        None => CotFormat::default(),
    });
    let cfg = GrpoConfig { settings: s.clone(), stop_tokens: cx.eos.into_iter().collect(), cot };
    let (seed, pad) = (cx.node.seed, cx.pad);
    train_grpo(policy, &reference, &prompt_sets, cx.tok, &cfg, seed, pad, cx.logger, Some(&mut *cx.ck))
        .map_err(cx.err())?;
    Ok(gate_report)
}

/// The prompts of one prompt set: the world's RL prompts, or a file's (optionally in the chat template).
fn rl_prompts(cx: &mut StageCx, data: &DataSource, chat_template: bool) -> Result<Vec<RlPrompt>, LabError> {
    match data {
        DataSource::World { size, .. } => {
            let w = cx.world()?;
            Ok((0..*size)
                .map(|_| {
                    let p = ordo_world::corpus::rl_prompt(&w.task, &w.rl, cx.rng);
                    let text = p.text();
                    Ok(RlPrompt { ids: cx.tok.encode_strict(&text)?, text, metadata: Default::default() })
                })
                .collect::<Result<Vec<_>, ordo_model::ModelError>>()?)
        }
        DataSource::File { path, .. } => {
            let rows = parse_rl_prompts(&read_jsonl(path).map_err(cx.err())?, &path.display().to_string())
                .map_err(cx.err())?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let text = if chat_template {
                        let msg = ordo_model::ChatMessage { role: "user".into(), content: r.prompt };
                        cx.tok.apply_chat_template(&[msg], true)?
                    } else {
                        r.prompt
                    };
                    Ok(RlPrompt { ids: cx.tok.encode(&text, false)?, text, metadata: r.metadata })
                })
                .collect::<Result<Vec<_>, ordo_model::ModelError>>()?)
        }
    }
}

/// Preference pairs from the world or a file, tokenized.
fn preference_data(cx: &mut StageCx, data: &DataSource) -> Result<Vec<TokenizedPair>, LabError> {
    let examples = match data {
        DataSource::World { size, .. } => {
            let w = cx.world()?;
            (0..*size)
                .map(|_| {
                    let p = ordo_world::corpus::preference_pair(&w.task, &w.corpus, cx.rng);
                    PreferenceExample { prompt: p.prompt.text(), chosen: p.chosen, rejected: p.rejected }
                })
                .collect()
        }
        DataSource::File { path, .. } => {
            parse_preferences(&read_jsonl(path).map_err(cx.err())?, &path.display().to_string()).map_err(cx.err())?
        }
    };
    examples.iter().map(|e| tokenize_pair(e, cx.tok, cx.eos)).collect::<Result<_, _>>().map_err(cx.err())
}

/// The world's output-only reward input: the shown output re-joined to an empty think block.
fn as_output(shown: &str) -> String {
    format!("}}{shown}")
}

/// The reward source of a stage's reward spec. World rewards are shown the whole completion or
/// only the output, as `sees_cot` says, and judge the completion in the world's format either way.
fn stage_reward(spec: &RewardSpec) -> Result<FnReward, LabError> {
    let sees = spec.sees_cot;
    let as_completion = move |shown: &str| if sees { shown.to_string() } else { as_output(shown) };
    let parse = |p: &RlPrompt| Prompt::parse(&p.text);
    let name = spec.reward.name();
    Ok(match &spec.reward {
        Reward::AnswerMatch { field, pattern } => {
            let pattern = pattern.as_deref().unwrap_or(DEFAULT_ANSWER_PATTERN);
            let re = regex::Regex::new(pattern)
                .map_err(|e| LabError::Other(format!("answer_match pattern {pattern:?}: not a valid regex ({e})")))?;
            ordo_train::rewards::answer_match(name, field, &re, sees)
        }
        Reward::Verifier => {
            FnReward::new(name, sees, move |p, s| parse(p).map_or(0.0, |pr| flawed_verifier(&pr, &as_completion(s))))
        }
        Reward::TrueVerifier => {
            FnReward::new(name, sees, move |p, s| parse(p).map_or(0.0, |pr| true_verifier(&pr, &as_completion(s))))
        }
        Reward::Preference => FnReward::new(name, sees, |_, s| looks_harmless(s.rsplit('}').next().unwrap_or(s))),
        Reward::CotMonitor(monitor) => monitor_reward(name, sees, monitor.clone()),
        Reward::ActionMonitor => monitor_reward(name, sees, Monitor::ActionOnly),
    })
}

/// A monitor's flag (1 or 0) as a reward (a negative weight makes it a penalty).
fn monitor_reward(name: &str, sees: bool, monitor: Monitor) -> FnReward {
    let as_completion = move |shown: &str| if sees { shown.to_string() } else { as_output(shown) };
    FnReward::new(name, sees, move |p, s| {
        Prompt::parse(&p.text).map_or(0.0, |pr| monitor.flags(&pr, &as_completion(s)) as u8 as f64)
    })
}
