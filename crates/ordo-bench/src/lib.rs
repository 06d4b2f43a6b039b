//! ordo's benchmarks, apart from the library they measure: the engine (training step and sampling
//! against sgemm) and the stages (seconds per step against each step's FLOP floor), each figure beside
//! a baseline measured in the same run.

pub mod engine;
pub mod measure;
pub mod stages;
