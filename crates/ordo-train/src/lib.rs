//! ordo's training side: optimiser, schedules, the stage objectives, data formats, and the engine benchmark.

pub mod bench;
pub mod losses;
pub mod optim;
pub mod schedule;
