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
use ordo_train::rewards::{
    CotFormat, RewardModelSource, RewardSource, RlPrompt, WeightedReward, DEFAULT_ANSWER_PATTERN,
};
use ordo_train::trainer::{Checkpointing, StepLogger};
use ordo_train::{Policy, TrainError};
use ordo_worlds::{Examples, World};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What every stage body shares: the node, the world, the tokenizer and its special ids, the data
/// generator, the step logger, step checkpoints and the parameters a killed run left behind.
pub(crate) struct StageCx<'a, 'c> {
    pub node: &'a Node,
    pub world: Option<&'a dyn World>,
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
    /// The reward models the node's ancestors trained, by stage name: where each is saved.
    pub reward_models: BTreeMap<String, PathBuf>,
}

impl<'a> StageCx<'a, '_> {
    /// A training error as this stage's error.
    fn err(&self) -> impl Fn(TrainError) -> LabError + 'a {
        stage_error(self.node)
    }

    /// The world, which a world data source or reward needs.
    fn world(&self) -> Result<&'a dyn World, LabError> {
        self.world.ok_or_else(|| {
            LabError::Other(format!(
                "stage `{}`: world data and rewards need a world; set experiment.world",
                self.node.stage
            ))
        })
    }

    /// `size` examples of a world dataset.
    fn generate(&mut self, dataset: &str, size: usize) -> Result<Examples, LabError> {
        let w = self.world()?;
        w.generate(dataset, size, self.rng).map_err(LabError::Other)
    }

    /// Puts the resumed parameters (if any) into `params`.
    fn apply(&self, params: &ParamStore) -> Result<(), LabError> {
        match self.resumed {
            Some(p) => crate::resume::apply(params, p).map_err(LabError::Other),
            None => Ok(()),
        }
    }
}

/// Adds the stage's LoRA adapters (if it has any) to the start model, drawn from the node's seed:
/// before the stage takes its reference (the base, then shared) and applies a step checkpoint's values.
fn add_lora(cx: &StageCx, policy: &mut Policy, lora: Option<&ordo_model::lora::LoraConfig>) -> Result<(), LabError> {
    let Some(lora) = lora else { return Ok(()) };
    let seed = crate::plan::data_seed(&format!("{}/lora", cx.node.stage), cx.node.seed);
    let config = policy.config.clone();
    policy.params.add_lora(&config, lora, seed).map_err(|e| stage_error(cx.node)(e.into()))
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
        DataSource::World { dataset, size } => match cx.generate(dataset, *size)? {
            Examples::Texts(t) => t,
            _ => return Err(kind_mismatch(cx.node, dataset)),
        },
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
        DataSource::World { dataset, size } => match cx.generate(dataset, *size)? {
            Examples::Sft(e) => e,
            _ => return Err(kind_mismatch(cx.node, dataset)),
        },
        DataSource::File { path, .. } => {
            parse_sft(&read_jsonl(path).map_err(cx.err())?, &path.display().to_string()).map_err(cx.err())?
        }
    };
    let seqs = examples
        .iter()
        .map(|e| tokenize_sft(e, cx.tok, cx.eos, s.max_len))
        .collect::<Result<Vec<_>, _>>()
        .map_err(cx.err())?;
    add_lora(cx, policy, s.lora.as_ref())?;
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
    if let Some(lora) = &s.lora {
        let lora_seed = crate::plan::data_seed(&format!("{}/lora", cx.node.stage), seed);
        ordo_train::reward_model::add_lora(&mut rm, lora, lora_seed).map_err(cx.err())?;
    }
    cx.apply(&rm.params)?;
    ordo_train::reward_model::train_reward_model(&mut rm, &pairs, &s.optim, seed, cx.pad, cx.logger, Some(&mut *cx.ck))
        .map_err(cx.err())?;
    // The reward model RL loads is whole (adapters merged); its adapters and head are kept beside it in
    // PEFT's layout, over the node's model (the policy the reward model started from).
    let merged = rm.params.merged(&rm.config)?;
    ordo_model::weights::save_hf_dir(&cx.staging.join("rm"), &rm.config, &merged, Some(cx.tok), usize::MAX)?;
    if let Some(adapters) = rm.params.adapters(&rm.config)? {
        let score = rm.params.var("score.weight").expect("a reward model has its head").as_tensor();
        ordo_model::weights::save_peft_reward_dir(
            &adapters,
            score,
            &cx.staging.join("rm-adapter"),
            Some("../model"),
            false,
        )?;
    }
    Ok(())
}

/// `dpo`: preference pairs against a frozen copy of the start model.
pub(crate) fn dpo(cx: &mut StageCx, policy: &mut Policy, data: &DataSource, s: &DpoSettings) -> Result<(), LabError> {
    let pairs = preference_data(cx, data)?;
    add_lora(cx, policy, s.lora.as_ref())?;
    // The reference is the stage's start model (with adapters, the base), taken before resumed
    // parameters are applied.
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
    gate: Option<&Value>,
    chat_template: bool,
    s: &GrpoSettings,
) -> Result<Option<Value>, LabError> {
    let mut gate_report = None;
    if let (Some(g), None) = (gate, cx.resumed) {
        let w = cx.world()?;
        let dec = policy.inference_decoder().map_err(cx.err())?;
        match w.check_readiness(&dec, cx.tok, g, cx.node.seed) {
            Ok(outcome) => {
                eprintln!("{}: readiness gate passed: {}", cx.label, outcome.summary);
                gate_report = Some(outcome.report);
            }
            Err(message) => return Err(LabError::Gate { stage: cx.node.stage.clone(), seed: cx.node.seed, message }),
        }
    }
    let mut prompt_sets = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let prompts = rl_prompts(cx, &set.data, chat_template)?;
        let rewards = set
            .rewards
            .iter()
            .map(|r| Ok(WeightedReward { source: stage_reward(cx, r)?, weight: r.weight.clone(), target: r.target }))
            .collect::<Result<Vec<_>, LabError>>()?;
        prompt_sets.push(PromptSet { name: format!("set{i}"), prompts, proportion: set.proportion.clone(), rewards });
    }
    add_lora(cx, policy, s.lora.as_ref())?;
    let reference = policy.frozen_copy().map_err(cx.err())?;
    cx.apply(&policy.params)?;
    let cot = s.cot.clone().unwrap_or_else(|| cx.world.map_or_else(CotFormat::default, |w| w.cot()));
    let cfg = GrpoConfig { settings: s.clone(), stop_tokens: cx.eos.into_iter().collect(), cot };
    let (seed, pad) = (cx.node.seed, cx.pad);
    train_grpo(policy, &reference, &prompt_sets, cx.tok, &cfg, seed, pad, cx.logger, Some(&mut *cx.ck))
        .map_err(cx.err())?;
    Ok(gate_report)
}

/// The prompts of one prompt set: the world's RL prompts, or a file's (optionally in the chat template).
fn rl_prompts(cx: &mut StageCx, data: &DataSource, chat_template: bool) -> Result<Vec<RlPrompt>, LabError> {
    match data {
        DataSource::World { dataset, size } => match cx.generate(dataset, *size)? {
            Examples::RlPrompts(texts) => Ok(texts
                .into_iter()
                .map(|text| Ok(RlPrompt { ids: cx.tok.encode_strict(&text)?, text, metadata: Default::default() }))
                .collect::<Result<Vec<_>, ordo_model::ModelError>>()?),
            _ => Err(kind_mismatch(cx.node, dataset)),
        },
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
        DataSource::World { dataset, size } => match cx.generate(dataset, *size)? {
            Examples::Preferences(e) => e,
            _ => return Err(kind_mismatch(cx.node, dataset)),
        },
        DataSource::File { path, .. } => {
            parse_preferences(&read_jsonl(path).map_err(cx.err())?, &path.display().to_string()).map_err(cx.err())?
        }
    };
    examples.iter().map(|e| tokenize_pair(e, cx.tok, cx.eos)).collect::<Result<_, _>>().map_err(cx.err())
}

/// A world dataset whose examples are not of the kind its stage reads (the spec rules this out).
fn kind_mismatch(node: &Node, dataset: &str) -> LabError {
    LabError::Other(format!(
        "stage `{}`: world:{dataset} does not hold what a {} stage reads",
        node.stage,
        node.params.kind()
    ))
}

/// The reward source of a stage's reward spec: `answer_match` on prompt metadata, or a world reward.
fn stage_reward(cx: &StageCx, spec: &RewardSpec) -> Result<Box<dyn RewardSource>, LabError> {
    let world = cx.world;
    Ok(match &spec.reward {
        Reward::AnswerMatch { field, pattern } => {
            let pattern = pattern.as_deref().unwrap_or(DEFAULT_ANSWER_PATTERN);
            let re = regex::Regex::new(pattern)
                .map_err(|e| LabError::Other(format!("answer_match pattern {pattern:?}: not a valid regex ({e})")))?;
            Box::new(ordo_train::rewards::answer_match("answer_match", field, &re, spec.sees_cot))
        }
        Reward::World(r) => {
            let w = world.ok_or_else(|| LabError::Other(format!("reward `{}` needs a world", r.name)))?;
            Box::new(w.reward(r, spec.sees_cot).map_err(LabError::Other)?)
        }
        Reward::RewardModel { stage, truth } => {
            let dir = cx.reward_models.get(stage).ok_or_else(|| {
                LabError::Other(format!(
                    "stage `{}`: no earlier stage `{stage}` of this arm trained a reward model",
                    cx.node.stage
                ))
            })?;
            let m = ordo_model::load(dir, &ordo_model::Device::Cpu)?;
            m.params.check_finite(&dir.display().to_string())?;
            let model = Policy { config: m.config, params: m.params };
            // The ground truth reads whole completions.
            let truth = match truth {
                Some(t) => {
                    let w = world.ok_or_else(|| LabError::Other(format!("reward `{}` needs a world", t.name)))?;
                    Some(Box::new(w.reward(t, true).map_err(LabError::Other)?) as Box<dyn RewardSource>)
                }
                None => None,
            };
            Box::new(RewardModelSource {
                truth,
                name: format!("reward_model/{stage}"),
                sees_cot: spec.sees_cot,
                model,
                tokenizer: cx.tok.clone(),
                pad: cx.pad,
                eos: cx.eos,
            })
        }
    })
}
