//! Score caches. Values are raw scores (normalisation happens at response time) with the pair's
//! token count, so a cached pair still reports its `usage.total_tokens`.
//!
//! - [`local`]: the in-process LRU tier.

pub mod local;

pub use local::LocalScoreCache;

/// What is cached per pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachedScore {
    /// The raw score (logit, log-odds or cosine).
    pub raw: f32,
    /// Tokens of the encoded pair, special tokens included.
    pub tokens: u32,
}
