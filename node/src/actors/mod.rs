//! The node's actors, one per file with its messages.
//!
//! Requests flow `NodeActor` → `BatcherActor` → `ModelActor`:
//! - [`node_actor`]: admission, the local cache, keys, tokenization of missing pairs; the only
//!   actor the HTTP layer talks to.
//! - [`batcher_actor`]: micro-batching (window, size, token budget), in-flight dedup,
//!   cancellation of abandoned pairs.
//! - [`model_actor`]: owns the model on its own thread and runs forward passes.

pub mod batcher_actor;
pub mod model_actor;
pub mod node_actor;

pub use batcher_actor::{BatcherActor, BatcherSettings, BatcherStats};
pub use model_actor::{ModelActor, ScorePairs, ScoredPairs};
pub use node_actor::{
    GetPipelineHealth, NodeActor, NodeParts, NodeSettings, PipelineHealth, Rerank, RerankError,
    RerankOutcome,
};
