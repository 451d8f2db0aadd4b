//! The text-embeddings-inference shape of `POST /rerank`.

use serde::{Deserialize, Serialize};

use super::TruncationDirection;

/// `POST /rerank` request, as TEI accepts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankRequest {
    pub query: String,
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
    #[serde(default)]
    pub truncation_direction: TruncationDirection,
}

/// One entry of the `POST /rerank` response (a JSON array sorted by score, descending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rank {
    pub index: usize,
    pub score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// TEI's error classes; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    pub error_type: ErrorType,
}
