//! rerank-cluster's model engine: load a reranker checkpoint, tokenize (query, document) pairs,
//! score them.
//!
//! The public surface is small on purpose: [`Reranker::load`] a model directory (or hub id, see
//! [`ModelFiles`]), then use it through [`RerankBackend`] — `info` (kind, limits, precision,
//! kernels), `prepare_query` / `encode_document` (text → token ids, where validation errors
//! arise) and `score` (token ids → raw scores). The node, its benchmark and its accuracy report
//! see nothing else, so a family or a kernel can change without touching them.
//!
//! Inside:
//! - [`model_files`]: find a checkpoint locally or on the hub.
//! - `hf_config`: the `config.json` fields the BERT family reads (each family reads its own).
//! - `tokenize`: pair encoding, truncation and the length limit.
//! - `families`: each model family's layers, weights and head, behind one trait.
//! - `kernels`: the packed CPU kernels (oneDNN GEMMs where built with it) families call.
//! - `modes`: precision and kernel choice, a leaf every other module may name.
//! - `precision`: f32 / bf16 / f16 / int8 projections on candle.
//! - `heads`: pooling, logits → one raw score, cosine.
//! - `batching`: token-budget forward passes.
//! - `reranker`: the backend tying them together, the same for every family.
//! - [`rank_metrics`]: how far two score lists are apart (Spearman's ρ, top-k), for tests and
//!   the accuracy report.

mod batching;
mod families;
mod heads;
mod hf_config;
mod kernels;
pub mod model_files;
mod modes;
mod precision;
pub mod rank_metrics;
mod reranker;
mod tokenize;

use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

pub use heads::raw_score;
pub use kernels::gemm_probe;
pub use kernels::{available as onednn_available, native_bf16};
pub use model_files::{ModelFiles, ModelSource};
pub use modes::{Kernels, Precision};
pub use reranker::{supported_architectures, LoadOptions, Reranker};
pub use tokenize::{QueryIds, TokenIds, TruncationDirection, TruncationOptions};

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
    /// Chunking settings that leave no window to score (an overlap as long as the window, a
    /// query that fills the model's input): the client's to fix.
    #[error("invalid chunking: {0}")]
    InvalidChunking(String),
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
    /// The model family: `bert`, `roberta`, `xlm-roberta`, `modernbert`, `deberta-v2`, `qwen3`.
    pub family: String,
    pub architecture: String,
    /// A decoder reranker's default task instruction (requests may name another); `None` for
    /// encoders, which take none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
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
    /// A decoder reranker's input: the tokens every document of a request shares (prompt,
    /// instruction, query), then this document's own tokens (document and closing template).
    /// The model may compute the shared part's keys and values once per request.
    Decoder {
        shared: Arc<TokenIds>,
        own: TokenIds,
    },
}

impl EncodedPair {
    /// Tokens the pair costs in a forward pass.
    pub fn token_count(&self) -> usize {
        match self {
            Self::Cross(ids) => ids.len(),
            Self::Bi { query, document } => query.len() + document.len(),
            Self::Decoder { shared, own } => shared.len() + own.len(),
        }
    }
}

/// How a request scores documents longer than the model's window: as up to `max_chunks`
/// windows of the document (consecutive windows sharing `overlap` tokens), each scored with the
/// query, the document's score being its best window's. The rule: README, *Long documents*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkOptions {
    /// Windows per document at most (≥ 1).
    pub max_chunks: usize,
    /// Tokens consecutive windows share; `None` is one eighth of the window.
    pub overlap: Option<usize>,
}

/// One window of a document, ready to score, and where it lies in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentWindow {
    /// The window's input: the query with this span of the document.
    pub pair: EncodedPair,
    /// Its number among the document's windows, from 0.
    pub index: usize,
    /// Its span of the document's tokens (special tokens not counted).
    pub tokens: Range<usize>,
    /// Its span of the document as sent, in characters (Unicode scalar values, as Python
    /// indexes strings), from the tokenizer's offsets: where a client finds the passage.
    pub chars: Range<usize>,
}

/// A request's query, tokenized once for all of its documents.
#[derive(Debug, Clone)]
pub enum PreparedQuery {
    /// A cross-encoder's query ids, paired with each document's.
    Cross(QueryIds),
    /// A bi-encoder's query input, embedded once per forward pass.
    Bi(Arc<TokenIds>),
    /// A decoder's shared tokens (prompt, instruction, query), and the text after the prompt
    /// they were tokenized from, which each document's input continues.
    Decoder {
        shared: Arc<TokenIds>,
        text: Arc<str>,
    },
}

/// A loaded model that can score pairs. Implementations must be usable from several threads:
/// tokenization runs on request threads, scoring on the model's own thread.
pub trait RerankBackend: Send + Sync {
    /// The model as loaded.
    fn info(&self) -> &ModelInfo;

    /// Tokenizes a request's query once; [`Self::encode_document`] pairs it with each document,
    /// so tokenization costs the request's text once, not query × documents. `instruction`
    /// replaces a decoder reranker's default task instruction; encoders have none and ignore it.
    fn prepare_query(
        &self,
        query: &str,
        instruction: Option<&str>,
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

    /// Splits one document into the windows [`ChunkOptions`] asks for, each tokenized with the
    /// prepared query (a document that fits is one window, identical to [`Self::encode_document`]'s
    /// pair when nothing is truncated). Fails with [`EngineError::InvalidChunking`] when the
    /// settings leave no window.
    fn encode_windows(
        &self,
        query: &PreparedQuery,
        document: &str,
        opts: &TruncationOptions,
        chunks: &ChunkOptions,
    ) -> Result<Vec<DocumentWindow>, EngineError>;

    /// Tokenizes `query` against each document (the query once).
    fn encode(
        &self,
        query: &str,
        documents: &[&str],
        opts: &TruncationOptions,
    ) -> Result<Vec<EncodedPair>, EngineError> {
        let prepared = self.prepare_query(query, None, opts)?;
        documents
            .iter()
            .map(|doc| self.encode_document(&prepared, doc, opts))
            .collect()
    }

    /// Raw scores, one per pair, in order: a logit (or log-odds) for cross-encoders, a cosine
    /// similarity for bi-encoders.
    fn score(&self, pairs: &[EncodedPair]) -> Result<Vec<f32>, EngineError>;
}
