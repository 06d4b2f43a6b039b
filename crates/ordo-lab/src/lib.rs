//! ordo's experiments: the experiment file, the plan (a prefix tree of stage nodes per seed), the
//! content-addressed stage cache, the runner and the world evaluation of every arm.

pub mod answer;
pub mod cache;
pub mod error;
pub mod evaluation;
pub mod experiment;
pub mod html;
pub mod hypothesis;
pub mod markdown;
pub mod plan;
mod probe_signal;
pub mod report;
pub mod results;
pub mod resume;
pub mod runner;
pub mod spec;
pub mod spec_eval;
mod spec_reader;
mod spec_stage;
mod stages;
pub mod summary;
pub mod transcripts;

pub use error::LabError;
pub use experiment::Experiment;
pub use runner::{run, RunOptions, RunSummary};
pub use spec::load;
