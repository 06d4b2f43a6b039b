//! Why an experiment stopped: the experiment file, a stage (training or its readiness gate), the
//! model engine, or the run's files.

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("stage `{stage}` (seed {seed}): {source}")]
    Stage {
        stage: String,
        seed: u64,
        #[source]
        source: Box<ordo_train::TrainError>,
    },
    #[error("stage `{stage}` (seed {seed}): {message}")]
    Gate { stage: String, seed: u64, message: String },
    #[error(transparent)]
    Model(#[from] ordo_model::ModelError),
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for LabError {
    fn from(e: std::io::Error) -> Self {
        LabError::Other(e.to_string())
    }
}
