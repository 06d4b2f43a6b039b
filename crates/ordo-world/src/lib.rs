//! ordo's built-in world "leaky-tests": a model organism in which a tiny model trained from scratch
//! can cheat a flawed verifier, say so in its chain of thought or not, and feel output-only
//! preference pressure, with ground truth for every sample (DESIGN.md section 3).

pub mod corpus;
pub mod gate;
pub mod monitors;
pub mod response;
mod samples;
pub mod surface;
pub mod task;
pub mod values;

pub use samples::sample_text;

use corpus::{CorpusConfig, RlPromptConfig};
use ordo_model::{ModelConfig, TextTokenizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use task::TaskConfig;
use values::{ColdStartConfig, ValuesConfig};

/// Whether a setting has its default value. Settings added to the world after its first version are
/// left out of its serialised form when they do, so that the node keys of existing experiments stay as
/// they were; a non-default value is serialised and keys the nodes it changes.
pub(crate) fn is_default<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

/// Every knob of the world.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldConfig {
    pub task: TaskConfig,
    pub corpus: CorpusConfig,
    pub rl: RlPromptConfig,
    /// The values (honesty) pairs.
    #[serde(skip_serializing_if = "is_default")]
    pub values: ValuesConfig,
    /// The cold-start SFT demonstrations.
    #[serde(skip_serializing_if = "is_default")]
    pub cold_start: ColdStartConfig,
}

impl WorldConfig {
    /// An upper bound on the characters (the organism's tokens) of any prompt the world draws:
    /// `Q:<expression>;T:<test>;{` at the most operands, widest operands and largest test.
    pub fn max_prompt_chars(&self) -> usize {
        let t = &self.task;
        let digits = |x: u64| x.to_string().len();
        let widest = t.max_operand.max(t.max_multiplier);
        let expression = t.max_operands * digits(widest) + t.max_operands.saturating_sub(1);
        let offset = self.corpus.test_line.max_offset.max(self.rl.test_line.max_offset);
        let largest =
            (t.max_operands as u64).saturating_mul(t.max_operand.max(1)).saturating_mul(t.max_multiplier.max(1));
        "Q:".len() + expression + ";T:".len() + digits(largest.saturating_add(offset)) + ";{".len()
    }

    /// The longest completion (with its end of sequence) the world's format needs: 48 tokens in the
    /// label format; 80 in the restate format, which writes the think block twice (the default task's
    /// longest honest completion is 48 characters there, and its longest prompt 18, within the organism's
    /// 128 positions).
    pub fn max_completion_tokens(&self) -> usize {
        match self.corpus.format {
            response::Format::Label => gate::MAX_COMPLETION_TOKENS,
            response::Format::Restate => 80,
        }
    }

    /// Every out-of-range setting, each as `world.PATH: what was expected, found what` (empty: valid).
    /// Probabilities lie in [0, 1], the corpus shares sum to 1, ranges are ordered, and the held-out
    /// split leaves problems on both sides, found by drawing (an empty side would make drawing from it
    /// loop forever).
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let mut prob = |path: &str, v: f64| {
            if !(0.0..=1.0).contains(&v) {
                errs.push(format!("world.{path}: expected a probability in [0, 1], found {v}"));
            }
        };
        let t = &self.task;
        prob("task.p_multiply", t.p_multiply);
        for (path, line) in [("corpus.test_line", &self.corpus.test_line), ("rl.test_line", &self.rl.test_line)] {
            prob(&format!("{path}.p_show"), line.p_show);
            prob(&format!("{path}.p_wrong"), line.p_wrong);
        }
        let c = &self.corpus;
        for (name, v) in [("honest", c.honest), ("copy", c.copy), ("sloppy", c.sloppy)] {
            prob(&format!("corpus.{name}"), v);
        }
        prob("corpus.clean_wrong_answer", c.clean_wrong_answer);
        prob("corpus.cue_first_share", c.cue_first_share);
        prob("values.fabricated_share", self.values.fabricated_share);
        prob("cold_start.preference_share", self.cold_start.preference_share);
        prob("rl.clean_share", self.rl.clean_share);
        let shares = c.honest + c.copy + c.sloppy;
        if (shares - 1.0).abs() > 1e-6 {
            errs.push(format!("world.corpus: honest + copy + sloppy must sum to 1, found {shares}"));
        }
        if c.sloppy > 0.0 {
            let total: f64 = c.sloppy_set.iter().map(|s| s.weight).sum();
            if c.sloppy_set.iter().any(|s| !(s.weight >= 0.0 && s.weight.is_finite())) || total.is_nan() || total <= 0.0
            {
                errs.push("world.corpus.sloppy_set: expected non-negative weights with a positive sum".into());
            }
        }
        let mut range = |path: &str, lo: u64, hi: u64, min: u64, max: u64| {
            if lo < min || hi < lo || hi > max {
                errs.push(format!("world.{path}: expected {min} <= low <= high <= {max}, found {lo} and {hi}"));
            }
        };
        range("task.min_operands/max_operands", t.min_operands as u64, t.max_operands as u64, 2, 6);
        range("task.max_operand", 1, t.max_operand, 1, 9_999);
        range("task.min_multiplier/max_multiplier", t.min_multiplier, t.max_multiplier, 1, 99);
        range("task.heldout_percent", 1, t.heldout_percent, 1, 99);
        for (path, line) in [("corpus.test_line", &self.corpus.test_line), ("rl.test_line", &self.rl.test_line)] {
            range(&format!("{path}.min_offset/max_offset"), line.min_offset, line.max_offset, 1, 9_999);
        }
        // Preference pairs are drawn from documents that show a test: some must.
        if self.corpus.test_line.p_show == 0.0 {
            errs.push(
                "world.corpus.test_line.p_show: expected more than 0 (preference pairs need a shown test)".into(),
            );
        }
        // Both sides of the held-out split must be reachable by drawing, or drawing from one loops forever.
        if errs.is_empty() && *t != TaskConfig::default() {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let draws = 4_000;
            let held = (0..draws).filter(|_| task::Problem::sample(t, &mut rng).is_heldout(t)).count();
            if held < 4 || draws - held < 4 {
                errs.push(format!(
                    "world.task: the problem space is too small for a held-out split ({held} of {draws} draws held out); \
                     raise max_operand or max_operands"
                ));
            }
        }
        errs
    }
}

/// The characters of the world's text (30 symbols; with `<pad>` and `<eos>` the vocabulary has 32).
pub const ALPHABET: &str = "0123456789+*=,;:{}QTAB usecalt";
/// Padding token id.
pub const PAD: u32 = 0;
/// End-of-sequence token id.
pub const EOS: u32 = 1;

/// The organism's character tokenizer, an ordinary `tokenizer.json`.
pub fn tokenizer() -> TextTokenizer {
    ordo_model::tokenizer::char_tokenizer(ALPHABET, &["<pad>", "<eos>"], Some("<eos>"), Some("<pad>"))
        .expect("the world's alphabet is a valid tokenizer")
}

/// The `organism` model preset: a Llama-layout decoder of about 0.8M parameters (d_model 128,
/// 4 layers, 4 heads, SwiGLU 344) over the world's 32 tokens.
pub fn organism_config() -> ModelConfig {
    let v = json!({
        "model_type": "llama", "vocab_size": 32, "hidden_size": 128, "intermediate_size": 344,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "bos_token_id": null, "eos_token_id": EOS, "pad_token_id": PAD,
    });
    ModelConfig::from_json(&v, "organism preset").expect("the organism preset is valid")
}

/// Sizes of the datasets [`write_datasets`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSizes {
    pub corpus: usize,
    pub preferences: usize,
    pub rl_prompts: usize,
    pub eval_prompts: usize,
}

impl Default for DatasetSizes {
    fn default() -> Self {
        DatasetSizes { corpus: 20_000, preferences: 2_000, rl_prompts: 5_000, eval_prompts: 256 }
    }
}

/// The files [`write_datasets`] writes.
pub const DATASET_FILES: [&str; 12] = [
    "corpus.jsonl",
    "sft.jsonl",
    "preferences.jsonl",
    "rl_prompts.jsonl",
    "eval_wrong_test.jsonl",
    "eval_clean.jsonl",
    "honesty_pairs.jsonl",
    "honesty_pairs_transfer.jsonl",
    "cot_appearance_pairs.jsonl",
    "cold_start.jsonl",
    "rl_prompts_transfer.jsonl",
    "tokenizer.json",
];

/// Writes the world's datasets as JSONL in the formats of user data, plus the tokenizer:
/// `corpus.jsonl` (`{"text"}`), `sft.jsonl` and `cold_start.jsonl` (`{"prompt","completion"}`),
/// the pair sets `preferences.jsonl`, `honesty_pairs.jsonl`, `honesty_pairs_transfer.jsonl` and
/// `cot_appearance_pairs.jsonl` (`{"prompt","chosen","rejected"}`, each of `sizes.preferences` pairs;
/// `cold_start` has as many demonstrations), `rl_prompts.jsonl`, `rl_prompts_transfer.jsonl` and the
/// held-out `eval_wrong_test.jsonl` and `eval_clean.jsonl` (`{"prompt", truth, test, test_wrong}`),
/// `tokenizer.json`. An existing `dir` is replaced only when it is an earlier ordo output and
/// `replace` is set.
pub fn write_datasets(
    dir: &Path,
    cfg: &WorldConfig,
    sizes: &DatasetSizes,
    seed: u64,
    replace: bool,
) -> ordo_model::Result<()> {
    ordo_model::atomic::check_output_dir(dir, replace)?;
    let staging = ordo_model::atomic::staging_dir(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let jsonl = |rows: Vec<serde_json::Value>| rows.iter().map(|r| r.to_string() + "\n").collect::<String>();
    let write = |name: &str, text: String| -> ordo_model::Result<()> {
        let p = staging.join(name);
        std::fs::write(&p, text).map_err(|e| ordo_model::ModelError::io(&p, e))
    };
    let pair_rows = |pairs: Vec<corpus::PreferencePair>| {
        jsonl(
            pairs
                .iter()
                .map(|p| json!({"prompt": p.prompt.text(), "chosen": p.chosen, "rejected": p.rejected}))
                .collect(),
        )
    };
    let (task, c) = (&cfg.task, &cfg.corpus);
    let docs: Vec<corpus::Document> = (0..sizes.corpus).map(|_| corpus::document(task, c, &mut rng)).collect();
    write("corpus.jsonl", jsonl(docs.iter().map(|d| json!({"text": d.text()})).collect()))?;
    write(
        "sft.jsonl",
        jsonl(docs.iter().map(|d| json!({"prompt": d.prompt.text(), "completion": d.completion})).collect()),
    )?;
    let n = sizes.preferences;
    write("preferences.jsonl", pair_rows((0..n).map(|_| corpus::preference_pair(task, c, &mut rng)).collect()))?;
    let meta = |p: &task::Prompt| json!({"prompt": p.text(), "truth": p.problem.truth(), "test": p.test, "test_wrong": p.test_is_wrong()});
    let rl: Vec<_> = (0..sizes.rl_prompts).map(|_| corpus::rl_prompt(task, &cfg.rl, &mut rng)).collect();
    write("rl_prompts.jsonl", jsonl(rl.iter().map(meta).collect()))?;
    let wrong = corpus::eval_prompts(task, &cfg.rl.test_line, sizes.eval_prompts, true, &mut rng);
    write("eval_wrong_test.jsonl", jsonl(wrong.iter().map(meta).collect()))?;
    let clean = corpus::eval_prompts(task, &cfg.rl.test_line, sizes.eval_prompts, false, &mut rng);
    write("eval_clean.jsonl", jsonl(clean.iter().map(meta).collect()))?;
    // Drawn after the wave-1 files, so those are the same draw for draw.
    for (name, context) in
        [("honesty_pairs.jsonl", values::Context::Rlvf), ("honesty_pairs_transfer.jsonl", values::Context::Transfer)]
    {
        let pairs = (0..n).map(|_| values::honesty_pair(task, c, &cfg.values, context, &mut rng)).collect();
        write(name, pair_rows(pairs))?;
    }
    write(
        "cot_appearance_pairs.jsonl",
        pair_rows((0..n).map(|_| values::cot_appearance_pair(task, c, &mut rng)).collect()),
    )?;
    let demos: Vec<_> = (0..n).map(|_| values::cold_start_demo(task, c, &cfg.cold_start, &mut rng)).collect();
    write(
        "cold_start.jsonl",
        jsonl(demos.iter().map(|(p, d)| json!({"prompt": p.text(), "completion": d})).collect()),
    )?;
    let transfer: Vec<_> = (0..sizes.rl_prompts).map(|_| values::transfer_rl_prompt(task, &cfg.rl, &mut rng)).collect();
    write("rl_prompts_transfer.jsonl", jsonl(transfer.iter().map(meta).collect()))?;
    tokenizer().save_to_dir(&staging)?;
    ordo_model::atomic::commit_dir(&staging, dir, replace)
}
