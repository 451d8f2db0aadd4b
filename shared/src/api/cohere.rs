//! The Cohere/Jina shape of `POST /v1/rerank` and `POST /v2/rerank`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::BestChunk;

/// A document: a bare string or an object with a `text` field (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    /// The document's text, whichever form it came in.
    pub fn text(&self) -> &str {
        match self {
            Self::Text(t) | Self::Object { text: t } => t,
        }
    }
}

/// `POST /v1/rerank` / `/v2/rerank` request.
///
/// The examples are what the schema fuzzer's examples phase sends on every run
/// (`scripts/schemathesis.sh`). The second holds an exact match, where a bi-encoder's cosine
/// reaches its ceiling: float rounding once served it as 1.0000001, past the schema's bound.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(examples(
    json!({"query": "What is the capital of the United States?",
           "documents": ["Carson City is the capital city of the American state of Nevada.",
                         {"text": "Washington, D.C. is the capital of the United States."}],
           "top_n": 1}),
    json!({"query": "The giant panda is a bear species endemic to China.",
           "documents": ["The giant panda is a bear species endemic to China.", "hello"],
           "return_documents": true})
))]
pub struct CohereRerankRequest {
    /// Accepted for client compatibility; a node serves the one model it loaded.
    #[serde(default)]
    pub model: Option<String>,
    pub query: String,
    /// The documents to rank against `query`; at least one, at most `MAX_CLIENT_BATCH_SIZE`
    /// (413).
    #[schema(min_items = 1)]
    pub documents: Vec<Document>,
    /// How many results to return (all when absent); must be ≥ 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub top_n: Option<i64>,
    /// Defaults: true on `/v1` (Cohere v1, Jina), false on `/v2` (Cohere v2).
    #[serde(default)]
    pub return_documents: Option<bool>,
    /// Cohere v2's cap on tokens per document (documents are truncated to it); must be ≥ 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens_per_doc: Option<i64>,
    /// The task instruction of a decoder reranker (Qwen3-Reranker), in place of the node's
    /// (`RERANK_INSTRUCTION`, else the model card's). Encoders take no instruction and ignore it.
    #[serde(default)]
    pub instruction: Option<String>,
    /// Cohere v1's chunking: score each document by its best window of up to this many (≥ 1;
    /// `MAX_CHUNKS_PER_DOC` when absent, 1 by default: truncation).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_chunks_per_doc: Option<i64>,
    /// Tokens consecutive windows share (≥ 0, less than the window; `CHUNK_OVERLAP_TOKENS`
    /// when absent, else one eighth of the window).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub chunk_overlap: Option<i64>,
}

/// The `document` field of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultDocument {
    pub text: String,
}

/// One ranked result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RerankResult {
    /// The document's position in the request's `documents`.
    pub index: usize,
    /// The sigmoid of the logit (in [0, 1]); a bi-encoder's cosine similarity (in [-1, 1]).
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub relevance_score: f32,
    /// The document's text, with `return_documents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<ResultDocument>,
    /// The window that gave the score, when documents are split (`max_chunks_per_doc > 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_chunk: Option<BestChunk>,
}

/// Token accounting (Jina's `usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub total_tokens: usize,
}

/// Cohere's `meta.api_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiVersion {
    pub version: String,
}

/// Cohere's `meta.billed_units`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BilledUnits {
    pub search_units: u32,
}

/// Cohere's `meta` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Meta {
    pub api_version: ApiVersion,
    pub billed_units: BilledUnits,
}

/// `POST /v1/rerank` / `/v2/rerank` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CohereRerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<RerankResult>,
    pub usage: Usage,
    pub meta: Meta,
}

/// Cohere's error body: `{"message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CohereError {
    pub message: String,
}
