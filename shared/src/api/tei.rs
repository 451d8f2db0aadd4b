//! The text-embeddings-inference shape of `POST /rerank`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{BestChunk, TruncationDirection};

/// `POST /rerank` request, as TEI accepts it. The examples are what the schema fuzzer's
/// examples phase sends first (`scripts/schemathesis.sh`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(
    json!({"query": "What is Deep Learning?", "texts": ["Deep Learning is not...", "Deep learning is..."]}),
    json!({"query": "hello", "texts": ["hello", "goodbye"], "return_text": true})
))]
pub struct RerankRequest {
    pub query: String,
    /// The texts to rank against `query`; at least one, at most `MAX_CLIENT_BATCH_SIZE` (413).
    #[schema(min_items = 1)]
    pub texts: Vec<String>,
    /// Return the logit instead of its sigmoid.
    #[serde(default)]
    pub raw_scores: bool,
    /// Echo each text in its result.
    #[serde(default)]
    pub return_text: bool,
    /// Truncate over-long inputs instead of rejecting them (TEI's default: false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of an over-long text loses tokens when `truncate` is set.
    #[serde(default)]
    pub truncation_direction: TruncationDirection,
    /// The task instruction of a decoder reranker (Qwen3-Reranker), in place of the node's
    /// (`RERANK_INSTRUCTION`, else the model card's). Encoders take no instruction and ignore it.
    #[serde(default)]
    pub instruction: Option<String>,
    /// Score each text by its best window of up to this many (≥ 1; `MAX_CHUNKS_PER_DOC` when
    /// absent, 1 by default: truncation). Over 1, a long text needs no `truncate`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_chunks_per_doc: Option<i64>,
    /// Tokens consecutive windows share (≥ 0, less than the window; `CHUNK_OVERLAP_TOKENS`
    /// when absent, else one eighth of the window).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub chunk_overlap: Option<i64>,
}

/// One entry of the `POST /rerank` response (a JSON array sorted by score, descending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rank {
    /// The text's position in the request's `texts`.
    pub index: usize,
    /// The sigmoid of the logit (in [0, 1]) unless `raw_scores`; a bi-encoder's cosine similarity.
    pub score: f32,
    /// The text itself, with `return_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The window that gave the score, when texts are split (`max_chunks_per_doc > 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_chunk: Option<BestChunk>,
}

/// TEI's error classes; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is well-formed JSON but not acceptable (too long, too many texts, bad fields).
    Validation,
    /// A required list is empty.
    Empty,
    /// The tokenizer rejected the input.
    Tokenizer,
    /// Admission limits were hit; retry later.
    Overloaded,
    /// The model failed while scoring.
    Backend,
    /// The server cannot serve at all (model not loaded, shutting down).
    Unhealthy,
}

/// TEI's error body: `{"error": "...", "error_type": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong, for a person to read.
    pub error: String,
    pub error_type: ErrorType,
}
