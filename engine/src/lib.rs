//! Model loading and inference.
//!
//! Everything model-specific lives here behind [`RerankBackend`], the way TEI keeps its backends
//! behind one trait: the HTTP layer and the actors only see `encode` (text → token ids, where
//! validation errors arise) and `score` (token ids → raw scores), so a faster backend can slide
//! in without touching them.
//!
//! - [`model_files`]: find a checkpoint locally or on the hub.
//! - [`hf_config`]: the `config.json` fields we read.
//! - [`tokenize`]: pair encoding, truncation and the length limit.
//! - [`encoder`]: the BERT/RoBERTa transformer forward pass.
//! - [`precision`]: f32 / bf16 / f16 / int8 projections.
//! - `onednn` (builds with oneDNN): the packed oneDNN forward pass for CPUs.
//! - [`heads`]: classification heads and bi-encoder pooling; logits → one raw score.
//! - [`batching`]: token-budget forward batches.
//! - [`reranker`]: the candle backend tying them together.

pub mod batching;
pub mod encoder;
pub mod heads;
pub mod hf_config;
pub mod model_files;
#[cfg(has_onednn)]
pub mod onednn;
pub mod precision;
pub mod rank_metrics;
pub mod reranker;
pub mod tokenize;

use std::sync::Arc;

use serde::Serialize;

pub use encoder::Kernels;
pub use model_files::{ModelFiles, ModelSource};
pub use precision::Precision;
pub use reranker::{CandleReranker, LoadOptions, SUPPORTED_ARCHITECTURES};
pub use tokenize::{QueryIds, TokenIds, TruncationDirection, TruncationOptions};

/// Whether this build and CPU compute bf16 natively (oneDNN kernels on a CPU with AVX512-BF16 or
/// AMX-BF16): where `ENABLE_MIXED_PRECISION` gains speed rather than only losing accuracy.
pub fn native_bf16() -> bool {
    #[cfg(all(has_onednn, target_arch = "x86_64"))]
    {
        // Every AMX-BF16 CPU has AVX512-BF16 too (AMX detection is not stable Rust yet).
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(all(has_onednn, target_arch = "x86_64")))]
    {
        false
    }
}

/// Failures of loading or running a model. Input problems (`InputTooLong`) are the client's;
/// the rest are the server's.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model not found: {0}")]
    ModelNotFound(String),
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("unsupported architecture {found}; supported: {supported}")]
    UnsupportedArchitecture { found: String, supported: String },
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("Input validation error: `inputs` must have less than {max} tokens. Given: {given}")]
    InputTooLong { given: usize, max: usize },
    #[error("inference error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whether a model scores pairs jointly or compares separate embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Query and document go through the encoder together; a head gives a logit.
    CrossEncoder,
    /// Query and document are embedded separately; the score is their cosine similarity.
    BiEncoder,
}

/// What `/health` and `/info` say about the loaded model: what is in effect, not what was asked.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub model_id: String,
    pub architecture: String,
    pub kind: ModelKind,
    pub device: String,
    pub dtype: String,
    pub quantization: String,
    pub max_input_length: usize,
    pub num_labels: Option<usize>,
    pub pooling: Option<String>,
    /// Bytes of the encoder's weights as stored in this precision.
    pub weight_bytes: usize,
    /// What runs the transformer layers: `candle`, or `onednn (<kernel family>)`.
    pub kernels: String,
}

/// One (query, document) pair, tokenized for the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EncodedPair {
    /// A cross-encoder input: `[CLS] query [SEP] document [SEP]` (or the RoBERTa layout).
    Cross(TokenIds),
    /// A bi-encoder input: the query (shared by a request's pairs) and the document.
    Bi {
        query: Arc<TokenIds>,
        document: TokenIds,
    },
}

impl EncodedPair {
    /// Tokens the pair costs in a forward pass.
    pub fn token_count(&self) -> usize {
        match self {
            Self::Cross(ids) => ids.len(),
            Self::Bi { query, document } => query.len() + document.len(),
        }
    }
}

/// A request's query, tokenized once for all of its documents.
#[derive(Debug, Clone)]
pub enum PreparedQuery {
    /// A cross-encoder's query ids, paired with each document's.
    Cross(QueryIds),
    /// A bi-encoder's query input, embedded once per forward pass.
    Bi(Arc<TokenIds>),
}

/// A loaded model that can score pairs. Implementations must be usable from several threads:
/// tokenization runs on request threads, scoring on the model's own thread.
pub trait RerankBackend: Send + Sync {
    /// The model as loaded.
    fn info(&self) -> &ModelInfo;

    /// Tokenizes a request's query once; [`Self::encode_document`] pairs it with each document,
    /// so tokenization costs the request's text once, not query × documents.
    fn prepare_query(
        &self,
        query: &str,
        opts: &TruncationOptions,
    ) -> Result<PreparedQuery, EngineError>;

    /// Tokenizes one document against a prepared query, applying truncation options; fails on
    /// input over the model's length when truncation is off.
    fn encode_document(
        &self,
        query: &PreparedQuery,
        document: &str,
        opts: &TruncationOptions,
    ) -> Result<EncodedPair, EngineError>;

    /// Tokenizes `query` against each document (the query once).
    fn encode(
        &self,
        query: &str,
        documents: &[&str],
        opts: &TruncationOptions,
    ) -> Result<Vec<EncodedPair>, EngineError> {
        let prepared = self.prepare_query(query, opts)?;
        documents
            .iter()
            .map(|doc| self.encode_document(&prepared, doc, opts))
            .collect()
    }

    /// Raw scores, one per pair, in order: a logit (or log-odds) for cross-encoders, a cosine
    /// similarity for bi-encoders.
    fn score(&self, pairs: &[EncodedPair]) -> Result<Vec<f32>, EngineError>;
}
