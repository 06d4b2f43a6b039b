//! Errors of the model engine; each names the file or value at fault and what was expected.

use std::path::Path;

/// An engine error with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A `config.json` (or GGUF metadata) field is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// An architecture or feature ordo does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// Weights that do not match the configuration (missing, extra, wrong shape or type).
    #[error("{0}")]
    Weights(String),
    /// A tokenizer or chat template problem.
    #[error("{0}")]
    Tokenizer(String),
    /// Bad arguments to an engine call (for example token ids outside the vocabulary).
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.display().to_string(), source }
    }
}

/// Result type of the engine.
pub type Result<T> = std::result::Result<T, ModelError>;
