//! ordo's model engine: trainable Llama-family decoders (Qwen3, Qwen2, Llama/SmolLM) on candle,
//! HF and GGUF checkpoints in and out, tokenizers with chat templates, and a KV-cached sampler.

pub mod atomic;
mod attention;
pub mod config;
pub mod cpu;
pub mod cpu_decode;
pub mod cpu_train;
pub mod decoder;
pub mod error;
pub mod flops;
pub mod gguf;
pub mod kernels;
mod logprobs;
pub mod lora;
mod norm;
pub mod ops;
pub mod params;
pub mod sampler;
pub mod tensors;
mod token_layout;
pub mod tokenizer;
pub mod weights;

pub use candle_core::{DType, Device, Tensor, Var};
pub use config::{Family, ModelConfig};
pub use decoder::{DecodeCache, Decoder};
pub use error::{ModelError, Result};
pub use ops::OpPath;
pub use params::ParamStore;
pub use sampler::{generate, generate_on, SamplingParams, SamplingPath};
pub use tokenizer::{ChatMessage, TextTokenizer};

use std::collections::BTreeMap;
use std::path::Path;

/// Where a loaded model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFormat {
    /// An HF directory with safetensors weights.
    HfDir,
    /// A llama.cpp GGUF file.
    Gguf,
}

/// A model loaded from disk: configuration, parameters (f32) and, when present, its tokenizer.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub params: ParamStore,
    pub tokenizer: Option<TextTokenizer>,
    /// Why there is no tokenizer, when there is none.
    pub tokenizer_note: Option<String>,
    pub format: SourceFormat,
    /// Number of elements stored per on-disk dtype (before conversion to f32).
    pub stored_dtypes: BTreeMap<String, usize>,
}

/// Loads an HF checkpoint directory or a `.gguf` file.
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    if !path.exists() {
        return Err(ModelError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or directory; expected an HF checkpoint directory or a .gguf file",
            ),
        });
    }
    if path.is_dir() {
        let (config, params, stored_dtypes) = weights::load_hf_params(path, device)?;
        let tokenizer = TextTokenizer::from_dir(path)?;
        let tokenizer_note = tokenizer.is_none().then(|| format!("{} has no tokenizer.json", path.display()));
        Ok(LoadedModel { config, params, tokenizer, tokenizer_note, format: SourceFormat::HfDir, stored_dtypes })
    } else {
        let g = gguf::load_gguf(path, device)?;
        let (tokenizer, tokenizer_note) = match g.tokenizer {
            Ok(t) => (Some(t), None),
            Err(why) => (None, Some(format!("{}: {why}", path.display()))),
        };
        Ok(LoadedModel {
            config: g.config,
            params: g.params,
            tokenizer,
            tokenizer_note,
            format: SourceFormat::Gguf,
            stored_dtypes: g.stored_dtypes,
        })
    }
}

impl LoadedModel {
    /// The tokenizer, or an error saying why the model has none.
    pub fn require_tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            ModelError::Tokenizer(format!(
                "this model has no usable tokenizer ({}); pass token ids with --ids instead",
                self.tokenizer_note.as_deref().unwrap_or("unknown reason")
            ))
        })
    }

    /// Architecture, sizes, parameter count, stored dtype and tokenizer, one per line (`ordo model info`).
    pub fn describe(&self, path: &Path) -> String {
        use std::fmt::Write as _;
        let m = self;
        let mut o = String::new();
        let c = &m.config;
        let _ = writeln!(o, "path:                 {}", path.display());
        let _ = writeln!(
            o,
            "format:               {}",
            match m.format {
                SourceFormat::HfDir => "HF checkpoint directory",
                SourceFormat::Gguf => "GGUF",
            }
        );
        let _ = writeln!(o, "architecture:         {} ({})", c.family.architecture(), c.family.model_type());
        let _ = writeln!(o, "layers:               {}", c.num_hidden_layers);
        let _ = writeln!(o, "hidden size:          {}", c.hidden_size);
        let _ = writeln!(o, "intermediate size:    {}", c.intermediate_size);
        let _ = writeln!(
            o,
            "attention heads:      {} (kv heads {}, head_dim {})",
            c.num_attention_heads, c.num_key_value_heads, c.head_dim
        );
        let _ = writeln!(o, "vocab size:           {}", c.vocab_size);
        let _ = writeln!(o, "max positions:        {}", c.max_position_embeddings);
        let _ = writeln!(o, "rope theta:           {}", c.rope_theta);
        let _ = writeln!(o, "norm:                 {}, eps {}", norm::NAME, c.rms_norm_eps);
        let _ = writeln!(o, "tied embeddings:      {}", c.tie_word_embeddings);
        let _ = writeln!(o, "q/k/v bias, q/k norm: {}, {}", c.qkv_bias, c.qk_norm);
        let _ = writeln!(
            o,
            "parameters:           {} ({:.2}M)",
            m.params.parameter_count(),
            m.params.parameter_count() as f64 / 1e6
        );
        let dtypes: Vec<String> = m.stored_dtypes.iter().map(|(d, n)| format!("{d} ({n} elements)")).collect();
        let _ = writeln!(o, "stored dtype:         {}", dtypes.join(", "));
        let _ = writeln!(o, "compute dtype:        f32");
        match (&m.tokenizer, &m.tokenizer_note) {
            (Some(t), _) => writeln!(
                o,
                "tokenizer:            {} tokens{}",
                t.vocab_size(),
                if t.chat_template().is_some() { ", chat template" } else { "" }
            ),
            (None, note) => writeln!(o, "tokenizer:            none ({})", note.as_deref().unwrap_or("")),
        }
        .expect("writing to a String cannot fail");
        o
    }

    /// Saves as an HF checkpoint directory (atomically).
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        weights::save_hf_dir(dir, &self.config, &self.params, self.tokenizer.as_ref(), weights::DEFAULT_MAX_SHARD_BYTES)
    }
}
