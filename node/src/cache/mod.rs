//! Score caches. Values are raw scores (normalisation happens at response time) with the pair's
//! token count, so a cached pair still reports its `usage.total_tokens`.
//!
//! - [`local`]: the in-process LRU tier, checked first.
//! - [`shared_tier`]: the Redis tier shared by all nodes, with cross-node locks and wake-ups.
//! - [`breaker`]: the circuit breaker that keeps a dead Redis from slowing requests down.

pub mod breaker;
pub mod local;
pub mod shared_tier;

pub use local::LocalScoreCache;
pub use shared_tier::{SharedCacheSettings, SharedScoreCache};

/// What is cached per pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachedScore {
    /// The raw score (logit, log-odds or cosine).
    pub raw: f32,
    /// Tokens of the encoded pair, special tokens included.
    pub tokens: u32,
}
