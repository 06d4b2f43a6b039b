//! ordo's training side: optimisers and benchmarks now; the post-training stage algorithms build on them.

pub mod bench;
pub mod optim;
