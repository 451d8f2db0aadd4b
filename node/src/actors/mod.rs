//! The node's actors, one per file with its messages.
//!
//! - [`model_actor`]: owns the model on its own thread and runs forward passes.

pub mod model_actor;

pub use model_actor::{ModelActor, ScorePairs, ScoredPairs};
