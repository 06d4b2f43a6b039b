//! Model configuration read straight from a Hugging Face `config.json` (Llama, Qwen2, Qwen3).

use crate::error::{ModelError, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The decoder families ordo implements; they share one architecture with small differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `LlamaForCausalLM` (also SmolLM/SmolLM2).
    Llama,
    /// `Qwen2ForCausalLM`: bias on the q/k/v projections.
    Qwen2,
    /// `Qwen3ForCausalLM`: RMSNorm on queries and keys per head, explicit `head_dim`.
    Qwen3,
}

impl Family {
    /// The HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// The HF `architectures` entry.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// Parses an HF `model_type`.
    pub fn from_model_type(s: &str) -> Option<Family> {
        match s {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "qwen3" => Some(Family::Qwen3),
            _ => None,
        }
    }
}

/// Llama 3 style frequency scaling of RoPE (`rope_type = "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Everything the decoder needs to know about its shape, normalised across families.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    /// Per-head RMSNorm of queries and keys (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// `Some(n)` for a sequence classifier (`XForSequenceClassification`, e.g. a reward model): the
    /// output projection is `score.weight` [n, hidden] instead of the LM head.
    pub score_labels: Option<usize>,
}

/// Reads fields of a JSON object and names the file and field in every error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
}

impl<'a> Fields<'a> {
    fn bad(&self, field: &str, expected: &str) -> ModelError {
        let got = self.obj.get(field).map(|v| v.to_string()).unwrap_or_else(|| "nothing".into());
        ModelError::Config(format!("{}: field `{field}`: expected {expected}, found {got}", self.origin))
    }
    fn usize(&self, field: &str) -> Result<usize> {
        match self.obj.get(field).and_then(Value::as_u64) {
            Some(v) if v > 0 => Ok(v as usize),
            _ => Err(self.bad(field, "a positive integer")),
        }
    }
    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.usize(field).map(Some),
        }
    }
    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(field, "a number")),
        }
    }
    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.bad(field, "true or false")),
        }
    }
    fn opt_str(&self, field: &str) -> Result<Option<&'a str>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(field, "a string")),
        }
    }
    fn token_ids(&self, field: &str) -> Result<Vec<u32>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => {
                a.iter().map(|v| v.as_u64().map(|x| x as u32).ok_or_else(|| self.bad(field, "token ids"))).collect()
            }
            Some(v) => v.as_u64().map(|x| vec![x as u32]).ok_or_else(|| self.bad(field, "a token id")),
        }
    }
}

impl ModelConfig {
    /// Reads `config.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: not valid JSON: {e}", path.display())))?;
        Self::from_json(&value, &path.display().to_string())
    }

    /// The bench model of `ordo bench`: d_model 256, 4 layers, 4 heads, MLP 1024, vocab 512 (Llama
    /// layout, untied head).
    pub fn bench() -> Self {
        let v = serde_json::json!({
            "model_type": "llama", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 1024,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
            "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
        });
        Self::from_json(&v, "bench model").expect("the bench config is valid")
    }

    /// Parses a `config.json` value; `origin` names the file in errors.
    pub fn from_json(value: &Value, origin: &str) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| ModelError::Config(format!("{origin}: expected a JSON object")))?;
        let f = Fields { obj, origin };
        let model_type = f.opt_str("model_type")?.ok_or_else(|| f.bad("model_type", "a string"))?;
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{origin}: model_type `{model_type}` is not supported; ordo implements llama (SmolLM too), qwen2 and qwen3"
            ))
        })?;
        if let Some(act) = f.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(ModelError::Unsupported(format!(
                    "{origin}: hidden_act `{act}` is not supported; only silu (SwiGLU) is"
                )));
            }
        }
        if f.opt_bool("mlp_bias")? == Some(true) {
            return Err(ModelError::Unsupported(format!("{origin}: mlp_bias = true is not supported")));
        }
        if f.opt_bool("use_sliding_window")? == Some(true) {
            return Err(ModelError::Unsupported(format!(
                "{origin}: use_sliding_window = true is not supported; set it to false or use full attention"
            )));
        }
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(ModelError::Config(format!(
                "{origin}: num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(h) => h,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(
                        f.bad("head_dim", "a value, since hidden_size is not a multiple of num_attention_heads")
                    );
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.bad("head_dim", "an even number (rotary embeddings rotate pairs)"));
        }
        // rope_theta: top level (older checkpoints) or under rope_parameters (transformers 5).
        let rope_params = obj.get("rope_parameters").and_then(Value::as_object);
        let rope_scaling_obj = obj.get("rope_scaling").and_then(Value::as_object).or(rope_params);
        let rope_theta = match f.opt_f64("rope_theta")? {
            Some(t) => t,
            None => match rope_params.and_then(|p| p.get("rope_theta")) {
                Some(v) => v.as_f64().ok_or_else(|| f.bad("rope_parameters", "rope_theta as a number"))?,
                None => 10_000.0,
            },
        };
        let rope_scaling = match rope_scaling_obj {
            None => None,
            Some(s) => {
                let sf = Fields { obj: s, origin };
                let kind = sf.opt_str("rope_type")?.or(sf.opt_str("type")?).unwrap_or("default");
                match kind {
                    "default" => None,
                    "llama3" => Some(Llama3RopeScaling {
                        factor: sf.opt_f64("factor")?.ok_or_else(|| sf.bad("factor", "a number"))?,
                        low_freq_factor: sf.opt_f64("low_freq_factor")?.unwrap_or(1.0),
                        high_freq_factor: sf.opt_f64("high_freq_factor")?.unwrap_or(4.0),
                        original_max_position_embeddings: sf
                            .opt_usize("original_max_position_embeddings")?
                            .unwrap_or(8192),
                    }),
                    other => {
                        return Err(ModelError::Unsupported(format!(
                            "{origin}: rope type `{other}` is not supported; ordo implements default and llama3"
                        )))
                    }
                }
            }
        };
        let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
        let classifier = obj
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .is_some_and(|a| a.ends_with("ForSequenceClassification"));
        let score_labels = if classifier { Some(f.opt_usize("num_labels")?.unwrap_or(1)) } else { None };
        let (qkv_bias, o_bias, qk_norm) = match family {
            Family::Llama => (attention_bias, attention_bias, false),
            Family::Qwen2 => (true, false, false),
            Family::Qwen3 => (attention_bias, false, true),
        };
        let config = ModelConfig {
            family,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm,
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
            pad_token_id: f.token_ids("pad_token_id")?.first().copied(),
            score_labels,
        };
        config.check_limits(origin)?;
        Ok(config)
    }

    /// Refuses sizes no real model has (each a generous bound above the largest open models), a
    /// non-positive epsilon or rope base, and a model whose f32 weights alone exceed this machine's
    /// memory: a small file with an absurd config fails here, before anything is allocated.
    pub fn check_limits(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, v: f64, limit: &str| {
            Err(ModelError::Config(format!("{origin}: field `{field}`: {v} is out of range (expected {limit})")))
        };
        for (field, v, max) in [
            ("vocab_size", self.vocab_size, LIMITS.vocab_size),
            ("hidden_size", self.hidden_size, LIMITS.hidden_size),
            ("intermediate_size", self.intermediate_size, LIMITS.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers, LIMITS.layers),
            ("num_attention_heads", self.num_attention_heads, LIMITS.heads),
            ("num_key_value_heads", self.num_key_value_heads, LIMITS.heads),
            ("head_dim", self.head_dim, LIMITS.head_dim),
            ("max_position_embeddings", self.max_position_embeddings, LIMITS.positions),
        ] {
            if v == 0 || v > max {
                return bad(field, v as f64, &format!("1 to {max}"));
            }
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return bad("rms_norm_eps", self.rms_norm_eps, "a number between 0 and 1, exclusive");
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad("rope_theta", self.rope_theta, "a positive number");
        }
        if let Some(s) = &self.rope_scaling {
            if !(s.factor > 0.0 && s.factor.is_finite() && s.low_freq_factor > 0.0 && s.high_freq_factor > 0.0) {
                return bad("rope_scaling.factor", s.factor, "positive factors");
            }
        }
        // f32 weights and the rotary tables (cos and sin: positions x head_dim values).
        let bytes = (self.parameter_count() as f64 + (self.max_position_embeddings * self.head_dim) as f64) * 4.0;
        if let Some(mem) = total_memory_bytes() {
            if bytes > mem as f64 {
                return Err(ModelError::Config(format!(
                    "{origin}: the config implies {} parameters and {} positions, {:.1} GiB in f32, more than this \
                     machine's {:.1} GiB of memory",
                    self.parameter_count(),
                    self.max_position_embeddings,
                    bytes / (1u64 << 30) as f64,
                    mem as f64 / (1u64 << 30) as f64
                )));
            }
        }
        Ok(())
    }

    /// The `config.json` transformers reads for this model.
    pub fn to_hf_json(&self) -> Value {
        let architecture = match self.score_labels {
            Some(_) => self.family.architecture().replace("ForCausalLM", "ForSequenceClassification"),
            None => self.family.architecture().to_string(),
        };
        let mut v = json!({
            "architectures": [architecture],
            "model_type": self.family.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": match self.family { Family::Qwen2 => true, _ => self.qkv_bias },
            "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => json!(one),
                many => json!(many),
            },
            "pad_token_id": self.pad_token_id,
        });
        if let Some(s) = &self.rope_scaling {
            v["rope_scaling"] = json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        if self.family != Family::Llama {
            v["use_sliding_window"] = json!(false);
        }
        if let Some(n) = self.score_labels {
            v["num_labels"] = json!(n);
        }
        v
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Width of the decoder's output: the vocabulary, or the number of score labels of a classifier.
    pub fn output_size(&self) -> usize {
        self.score_labels.unwrap_or(self.vocab_size)
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// Upper bounds on the sizes in a model config (each well above the largest open models').
pub struct ConfigLimits {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub positions: usize,
}

/// The limits [`ModelConfig::check_limits`] applies.
pub const LIMITS: ConfigLimits = ConfigLimits {
    vocab_size: 1 << 21,
    hidden_size: 1 << 16,
    intermediate_size: 1 << 18,
    layers: 1024,
    heads: 1024,
    head_dim: 1024,
    positions: 1 << 20,
};

/// This machine's total memory (Linux `/proc/meminfo`); None where it cannot be read.
pub fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
