//! The node's actors, one per file with its messages.
//!
//! Requests flow `NodeActor` → `BatcherActor` → `ModelActor`:
//! - [`node_actor`]: the actor the HTTP layer talks to, its messages, the request deadline; the
//!   request pipeline it runs (admission by count and tokens, keys, the local cache, the Redis
//!   tier, tokenization of missing pairs) lives beside it in `node_actor/pipeline.rs`.
//! - [`batcher_actor`]: the scheduler — one forward pass at a time, drawn fairly across
//!   requests — with micro-batching, in-flight dedup and dropping of abandoned pairs.
//! - [`model_actor`]: owns the model on its own thread and runs the forward passes it is sent.

pub mod batcher_actor;
pub mod model_actor;
pub mod node_actor;

pub use batcher_actor::{BatcherActor, BatcherSettings, BatcherStats};
pub use model_actor::{ModelActor, ScorePairs, ScoredPairs};
pub use node_actor::{
    GetPipelineHealth, NodeActor, NodeParts, NodeSettings, PipelineHealth, Rerank, RerankError,
    RerankOutcome,
};
