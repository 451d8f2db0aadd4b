//! The Cohere/Jina shape of `POST /v1/rerank` and `POST /v2/rerank`.

use serde::{Deserialize, Serialize};

/// A document: a bare string or an object with a `text` field (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CohereRerankRequest {
    /// Accepted for client compatibility; a node serves the one model it loaded.
    #[serde(default)]
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<Document>,
    /// How many results to return (all when absent); must be ≥ 1.
    #[serde(default)]
    pub top_n: Option<i64>,
    /// Defaults: true on `/v1` (Cohere v1, Jina), false on `/v2` (Cohere v2).
    #[serde(default)]
    pub return_documents: Option<bool>,
    /// Cohere v2's cap on tokens per document (documents are truncated to it).
    #[serde(default)]
    pub max_tokens_per_doc: Option<i64>,
}

/// The `document` field of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDocument {
    pub text: String,
}

/// One ranked result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    pub index: usize,
    pub relevance_score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<ResultDocument>,
}

/// Token accounting (Jina's `usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub total_tokens: usize,
}

/// Cohere's `meta.api_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiVersion {
    pub version: String,
}

/// Cohere's `meta.billed_units`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BilledUnits {
    pub search_units: u32,
}

/// Cohere's `meta` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub api_version: ApiVersion,
    pub billed_units: BilledUnits,
}

/// `POST /v1/rerank` / `/v2/rerank` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereRerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<RerankResult>,
    pub usage: Usage,
    pub meta: Meta,
}

/// Cohere's error body: `{"message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CohereError {
    pub message: String,
}
