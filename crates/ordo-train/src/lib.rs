//! ordo's training side: the optimiser and schedules, data formats, the post-training stages
//! (pretrain, sft, reward_model, dpo, grpo) and their objectives.

pub mod batch;
pub mod data;
pub mod dpo;
pub mod error;
pub mod grpo;
pub mod lm;
pub mod losses;
pub mod optim;
pub mod reward_model;
pub mod rewards;
pub mod schedule;
pub mod settings;
pub mod trainer;

pub use batch::Policy;
pub use error::{Result, TrainError};
