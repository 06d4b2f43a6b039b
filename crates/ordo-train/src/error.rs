//! Errors of the training side; data errors name the file, line and field.

/// A training error with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A malformed data file: `file:line: what was wrong`.
    #[error("{file}:{line}: {message}")]
    Data { file: String, line: usize, message: String },
    /// An invalid stage setting.
    #[error("{0}")]
    Config(String),
    /// The model engine failed.
    #[error(transparent)]
    Model(#[from] ordo_model::ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A step's loss or gradient norm is not finite: the stage diverged and stops at that step.
    #[error(
        "step {step}: the {quantity} is {value} (not finite) at learning rate {lr:e}; the stage diverged. \
         Lower `lr`, add warm-up (`warmup_steps`) or clip harder (`max_grad_norm`, now {max_grad_norm})"
    )]
    Diverged { step: usize, quantity: &'static str, value: f64, lr: f64, max_grad_norm: f64 },
    /// A metrics or data file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl TrainError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TrainError::Io { path: path.display().to_string(), source }
    }
}

/// Result type of the training side.
pub type Result<T> = std::result::Result<T, TrainError>;
