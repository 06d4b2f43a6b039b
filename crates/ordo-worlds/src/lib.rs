//! The World interface: what ordo's experiments need from a world (its tokenizer and think-block
//! format, model presets, named datasets with their kinds, rewards with their CoT visibility, a
//! readiness gate, the default uptake probe and its evaluation), and the registry experiment files
//! pick a world from by name. Adding a world is a module implementing [`World`] and one line in
//! [`WORLDS`].

pub mod leaky_tests;
pub mod leaky_tests_chat;

use ordo_eval::catalogue::Catalogue;
use ordo_eval::metrics::Metrics;
use ordo_eval::{EvalError, Evaluation};
use ordo_model::{Decoder, ModelConfig, TextTokenizer};
use ordo_train::data::{PreferenceExample, SftExample};
use ordo_train::rewards::{CotFormat, FnReward};
use ordo_train::settings::SettingsReader;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What a dataset holds, which fixes the stage kinds that can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// Pretraining text.
    Text,
    /// Prompt-completion examples.
    Sft,
    /// Preference pairs (prompt, chosen, rejected).
    Preferences,
    /// RL prompts.
    RlPrompts,
}

impl DatasetKind {
    /// What the dataset holds, in words.
    pub fn holds(self) -> &'static str {
        match self {
            DatasetKind::Text => "pretraining text",
            DatasetKind::Sft => "prompt-completion examples",
            DatasetKind::Preferences => "preference pairs",
            DatasetKind::RlPrompts => "RL prompts",
        }
    }
    /// The stage kinds that read it.
    pub fn read_by(self) -> &'static str {
        match self {
            DatasetKind::Text => "pretrain",
            DatasetKind::Sft => "sft",
            DatasetKind::Preferences => "dpo and reward_model",
            DatasetKind::RlPrompts => "grpo",
        }
    }
    /// The JSONL format a data file of this kind has (`ordo_train::data::check_rows`).
    pub fn file_format(self) -> &'static str {
        match self {
            DatasetKind::Text => "text",
            DatasetKind::Sft => "sft",
            DatasetKind::Preferences => "preferences",
            DatasetKind::RlPrompts => "rl_prompts",
        }
    }
}

/// A dataset a world generates, by name (`world:NAME` in an experiment file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dataset {
    pub name: &'static str,
    pub kind: DatasetKind,
}

/// Examples a world generated, of one dataset's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Examples {
    Texts(Vec<String>),
    Sft(Vec<SftExample>),
    Preferences(Vec<PreferenceExample>),
    /// RL prompts as text (the world's prompts need no metadata: its rewards parse the prompt).
    RlPrompts(Vec<String>),
}

/// A reward a world offers to RL stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardKind {
    pub name: &'static str,
    /// Whether it is shown the CoT unless the experiment says otherwise.
    pub default_sees_cot: bool,
    /// Whether it must see the CoT (a CoT monitor).
    pub must_see_cot: bool,
    /// Whether it takes a `monitor` (its value: one of [`World::monitor_names`]).
    pub takes_monitor: bool,
}

/// A world reward as an experiment chose it: its name and monitor (as hashed into node keys).
#[derive(Debug, Clone, PartialEq)]
pub struct WorldReward {
    pub name: String,
    /// The monitor's settings, for rewards that take one.
    pub monitor: Option<Value>,
}

/// A readiness gate that passed: its report (kept in the node's manifest) and a one-line summary.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    pub report: Value,
    pub summary: String,
}

/// What the uptake probe trains on, for its surface-match diagnostic (does its signal cover the form
/// each model's hacks take?).
pub enum ProbeSignal {
    /// Preference pairs (a DPO or reward-model probe): what its rejected completions look like.
    Pairs(Vec<PreferenceExample>),
    /// Each prompt set's world rewards with their weights at the probe's first step, each shown the CoT
    /// or not (a GRPO probe).
    Rewards(Vec<Vec<(FnReward, f64)>>),
    /// A signal the world cannot judge (a learned reward model, a reward on file prompts).
    Opaque,
}

/// Evaluates checkpoints in a world: its suites with its monitors, and the uptake probe's rates.
pub trait Evaluator: Sync {
    /// The monitors' metric-name prefixes in report order, each with whether it reads the CoT.
    fn monitors(&self) -> Vec<(String, bool)>;
    /// What the report says about the monitors themselves (for example a learned monitor's held-out score).
    fn monitor_notes(&self) -> Value;
    /// Every suite on one checkpoint (its tokenizer `tok`), prompts drawn from `seed`.
    fn evaluate(&self, dec: &Decoder, tok: &TextTokenizer, seed: u64) -> Result<Evaluation, EvalError>;
    /// The rates the uptake probe follows, on one checkpoint, with how well the probe's `signal`
    /// covers the checkpoint's hacks.
    fn evaluate_probe(
        &self,
        dec: &Decoder,
        tok: &TextTokenizer,
        seed: u64,
        signal: &ProbeSignal,
    ) -> Result<Metrics, EvalError>;
}

/// A world with ground truth that experiments run in.
pub trait World: Send + Sync + std::fmt::Debug {
    /// Its name in experiment files.
    fn name(&self) -> &'static str;
    /// Its settings as hashed into node keys and evaluation names, and recorded in results.json. A
    /// world other than leaky-tests must include its name under `"world"`, so that two worlds never
    /// share keys and a recorded run names its world ([`recorded`]).
    fn key_settings(&self) -> Value;
    /// The tokenizer of models trained from scratch in it.
    fn tokenizer(&self) -> TextTokenizer;
    /// Whether a run's start model (its tokenizer) can be used in this world: `Err` says why not (a chat
    /// world's prompts must render as the model's own chat template renders them).
    fn check_model(&self, _tok: &TextTokenizer) -> Result<(), String> {
        Ok(())
    }
    /// Its think-block delimiters.
    fn cot(&self) -> CotFormat;
    /// The model presets `model.init = "scratch"` can start from, the default first.
    fn presets(&self) -> Vec<(&'static str, ModelConfig)>;
    /// An upper bound on the tokens of any prompt it draws.
    fn max_prompt_tokens(&self) -> usize;
    /// The longest completion its format needs (the default `max_new_tokens`).
    fn max_completion_tokens(&self) -> usize;
    /// The datasets it generates.
    fn datasets(&self) -> &'static [Dataset];
    /// `size` examples of dataset `name`, drawn from `rng`.
    fn generate(&self, name: &str, size: usize, rng: &mut ChaCha8Rng) -> Result<Examples, String>;
    /// The rewards it offers.
    fn rewards(&self) -> &'static [RewardKind];
    /// The monitors a reward that takes one can use (`monitor = NAME`), the default first.
    fn monitor_names(&self) -> &'static [&'static str];
    /// The monitor settings a reward hashes: the named monitor (one of `monitor_names`) or the
    /// reward's default; None for a reward that uses no monitor.
    fn monitor(&self, reward: &str, name: Option<&str>) -> Option<Value>;
    /// The reward source of a chosen reward, shown the CoT or not.
    fn reward(&self, reward: &WorldReward, sees_cot: bool) -> Result<FnReward, String>;
    /// Reads the readiness gate's settings of a stage (its `gate_*` keys).
    fn read_gate(&self, r: &mut dyn SettingsReader) -> Value;
    /// Runs the readiness gate on a start model (its tokenizer `tok`), or says why the model is not ready.
    fn check_readiness(
        &self,
        dec: &Decoder,
        tok: &TextTokenizer,
        gate: &Value,
        seed: u64,
    ) -> Result<GateOutcome, String>;
    /// The built-in uptake probe stage, as stage TOML.
    fn default_probe(&self) -> Option<&'static str>;
    /// The built-in transfer probe stage (the same values taught in a second context), as stage TOML.
    fn default_transfer_probe(&self) -> Option<&'static str> {
        None
    }
    /// Reads an experiment's `[eval]` table (None: defaults) into its evaluation settings, as
    /// recorded in results.json and hashed into evaluation names, or lists every problem in it.
    fn read_eval(&self, table: Option<&toml::Table>) -> Result<Value, Vec<String>>;
    /// The evaluator of evaluation settings that [`World::read_eval`] gave (it may train a learned
    /// monitor).
    fn evaluator(&self, eval: &Value) -> Result<Box<dyn Evaluator + '_>, String>;
    /// The catalogue of what its evaluation measures with these monitors (metric-name prefix, whether
    /// it reads the CoT): every metric, the headline and trajectory metrics, the probe's rates.
    fn catalogue(&self, monitors: &[(String, bool)]) -> Catalogue;
    /// The report's method lines from a run's recorded evaluation settings, probe (null when none),
    /// monitors, monitor notes ([`Evaluator::monitor_notes`]) and the probe rates its results hold.
    fn method_lines(
        &self,
        eval: &Value,
        probe: &Value,
        monitors: &[(String, bool)],
        notes: &Value,
        probe_rates: &[String],
    ) -> Vec<String>;
    /// The question its experiments' reports open with.
    fn report_question(&self) -> &'static str;
    /// The ground-truth labels of an evaluation transcript, in display order (`ordo transcripts`).
    fn transcript_labels(&self) -> &'static [&'static str];
    /// The evaluation suite whose transcripts the monitors judge (the default of `ordo transcripts`).
    fn monitored_suite(&self) -> &'static str;
    /// `n` samples of each kind of example it draws from `seed`, with their ground-truth labels, as text.
    fn samples(&self, n: usize, seed: u64) -> String;
    /// Writes its datasets as JSONL files (and its tokenizer) into `dir`, `sizes` examples of each
    /// named dataset (others at their defaults); returns the files written. An existing `dir` is
    /// replaced only when it is an earlier ordo output and `replace` is set.
    fn write_datasets(
        &self,
        dir: &Path,
        sizes: &BTreeMap<String, usize>,
        seed: u64,
        replace: bool,
    ) -> ordo_model::Result<Vec<String>>;
}

/// Configures a world from its `[world]` table (None: defaults), or lists every problem found in it.
pub type Configure = fn(Option<&toml::Table>) -> Result<Arc<dyn World>, Vec<String>>;

/// A world in the registry: its name and how its settings table (`[world]`) configures it.
pub struct Entry {
    pub name: &'static str,
    pub configure: Configure,
}

/// Every world ordo has.
pub const WORLDS: &[Entry] = &[
    Entry { name: leaky_tests::NAME, configure: leaky_tests::configure },
    Entry { name: leaky_tests::CHAT_NAME, configure: leaky_tests::configure_chat },
];

/// The registry entry of a world name.
pub fn find(name: &str) -> Option<&'static Entry> {
    WORLDS.iter().find(|w| w.name == name)
}

/// The world a run recorded (results.json's `world`: its key settings), with default settings: the
/// world named under `"world"`, else leaky-tests (whose key settings carry no name).
pub fn recorded(settings: &Value) -> Result<Arc<dyn World>, String> {
    let name = match settings {
        Value::Object(o) => match o.get("world") {
            None => leaky_tests::NAME,
            Some(Value::String(name)) => name.as_str(),
            Some(other) => return Err(format!("its world settings name the world {other}, not a string")),
        },
        Value::Null => return Err("the run recorded no world (an experiment without one is not evaluated)".into()),
        other => return Err(format!("its world settings are {other}, not an object")),
    };
    let entry = find(name).ok_or_else(|| format!("the run's world {name:?} is not one of {}", names()))?;
    (entry.configure)(None).map_err(|problems| problems.join("; "))
}

/// The registry's names, quoted, for messages.
pub fn names() -> String {
    WORLDS.iter().map(|w| format!("{:?}", w.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recorded_run_names_its_world() {
        for entry in WORLDS {
            let world = (entry.configure)(None).unwrap();
            assert_eq!(recorded(&world.key_settings()).unwrap().name(), entry.name);
        }
        assert_eq!(recorded(&json!({})).unwrap().name(), leaky_tests::NAME);
        for bad in [json!(null), json!(3), json!({"world": 5}), json!({"world": "nowhere"})] {
            assert!(recorded(&bad).is_err(), "{bad}");
        }
    }
}
