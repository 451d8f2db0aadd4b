//! The OpenAPI 3 description of the client API, served at `GET /openapi.json` by nodes and
//! the coordinator alike (they serve the same API).

use serde_json::{json, Value};

fn error_ref(schema: &str) -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn rerank_errors(schema: &str) -> Value {
    json!({
        "400": {"description": "Malformed JSON, empty list or out-of-range field", "content": error_ref(schema)["content"]},
        "413": {"description": "Body, document count or input length over the limit", "content": error_ref(schema)["content"]},
        "422": {"description": "JSON that does not fit the schema, or untokenizable input", "content": error_ref(schema)["content"]},
        "429": {"description": "Overloaded; retry after the Retry-After header", "content": error_ref(schema)["content"]}
    })
}

fn cohere_operation(version: &str, return_documents_default: bool) -> Value {
    let mut responses = rerank_errors("CohereError");
    responses["200"] = json!({"description": "Ranked results", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CohereRerankResponse"}}}});
    json!({"post": {
        "summary": format!("Rerank documents (Cohere {version} / Jina shape; return_documents defaults to {return_documents_default})"),
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CohereRerankRequest"}}}},
        "responses": responses
    }})
}

/// The document, built once per call (it is small and rarely fetched).
pub fn document() -> Value {
    let mut tei_responses = rerank_errors("ErrorResponse");
    tei_responses["200"] = json!({"description": "Ranks, best first", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Rank"}}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "rerank-cluster", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Cross-encoder reranking with TEI- and Cohere-compatible APIs."},
        "paths": {
            "/rerank": {"post": {
                "summary": "Rerank texts (text-embeddings-inference shape)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RerankRequest"}}}},
                "responses": tei_responses
            }},
            "/v1/rerank": cohere_operation("v1", true),
            "/v2/rerank": cohere_operation("v2", false),
            "/health": {"get": {"summary": "Node health, model, micro-batcher and cache state", "responses": {"200": {"description": "Healthy"}}}},
            "/info": {"get": {"summary": "Model and limits", "responses": {"200": {"description": "Info"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition"}}}}
        },
        "components": {"schemas": {
            "RerankRequest": {"type": "object", "required": ["query", "texts"], "properties": {
                "query": {"type": "string"},
                "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "raw_scores": {"type": "boolean", "default": false},
                "return_text": {"type": "boolean", "default": false},
                "truncate": {"type": "boolean", "default": false},
                "truncation_direction": {"type": "string", "enum": ["Left", "Right"], "default": "Right"}
            }},
            "Rank": {"type": "object", "required": ["index", "score"], "properties": {
                "index": {"type": "integer", "minimum": 0}, "score": {"type": "number"}, "text": {"type": "string"}
            }},
            "ErrorResponse": {"type": "object", "required": ["error", "error_type"], "properties": {
                "error": {"type": "string"},
                "error_type": {"type": "string", "enum": ["validation", "empty", "tokenizer", "overloaded", "backend", "unhealthy"]}
            }},
            "CohereRerankRequest": {"type": "object", "required": ["query", "documents"], "properties": {
                "model": {"type": "string"},
                "query": {"type": "string"},
                "documents": {"type": "array", "minItems": 1, "items": {"oneOf": [
                    {"type": "string"},
                    {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
                ]}},
                "top_n": {"type": "integer", "minimum": 1},
                "return_documents": {"type": "boolean"},
                "max_tokens_per_doc": {"type": "integer", "minimum": 1}
            }},
            "CohereRerankResponse": {"type": "object", "required": ["id", "model", "results", "usage", "meta"], "properties": {
                "id": {"type": "string"}, "model": {"type": "string"},
                "results": {"type": "array", "items": {"type": "object", "required": ["index", "relevance_score"], "properties": {
                    "index": {"type": "integer"}, "relevance_score": {"type": "number"},
                    "document": {"type": "object", "properties": {"text": {"type": "string"}}}
                }}},
                "usage": {"type": "object", "properties": {"total_tokens": {"type": "integer"}}},
                "meta": {"type": "object"}
            }},
            "CohereError": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
        }}
    })
}
