//! ordo-eval: what ordo measures. Evaluation suites and faithfulness probes on a checkpoint,
//! pluggable monitors (rule-based, learned, LLM judge), metrics from labelled transcripts, and
//! statistics across seeds (bootstrap intervals, permutation tests). Definitions: DESIGN.md section 4.

pub mod catalogue;
pub mod inference;
pub mod judge;
pub mod learned;
pub mod metrics;
pub mod monitor;
pub mod stats;
pub mod suites;

pub use metrics::{Measure, Metrics, Transcript};
pub use monitor::{MonitorError, TranscriptMonitor};
pub use suites::{evaluate, evaluate_hacking, EvalConfig, EvalError, Evaluation};
