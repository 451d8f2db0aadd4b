//! The OpenAPI 3.1 description of the client API, served at `GET /openapi.json`.
//!
//! Every schema is derived from the wire types in this module's siblings (`ToSchema`), so the
//! document cannot drift from what the node parses and renders: a field added to
//! `RerankRequest` appears here at the next build. The operations below are declarations only
//! (`#[utoipa::path]` on empty functions): they name each route's request type, its responses
//! and the error body each status carries. A node and a coordinator serve the same rerank
//! operations; each has its own `/health`, and only a node has `/info`
//! ([`node_document`], [`coordinator_document`]).

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{IntoResponses, OpenApi, PartialSchema, ToSchema};

use super::cohere::{
    ApiVersion, BilledUnits, CohereError, CohereRerankRequest, CohereRerankResponse, Document,
    Meta, RerankResult, ResultDocument, Usage,
};
use super::health::{
    CoordinatorHealth, CoordinatorNodeSummary, DistributedCacheHealth, Health, HealthUnavailable,
    Info, MicroBatcherHealth, ModelHealth, UnavailableStatus,
};
use super::tei::{ErrorResponse, ErrorType, Rank, RerankRequest};
use super::{BestChunk, TruncationDirection};

/// The error statuses a rerank endpoint answers, each with when. Both error formats share them;
/// [`ErrorType`] says which TEI class each carries.
pub const RERANK_ERROR_STATUSES: &[(u16, &str)] = &[
    (
        400,
        "Malformed JSON, an empty list, or a field out of range (`top_n` or \
         `max_tokens_per_doc` below 1)",
    ),
    (
        408,
        "The request head or body did not arrive within `HTTP_READ_TIMEOUT_MS`; the connection \
         is closed",
    ),
    (
        413,
        "Over a limit: the body (`PAYLOAD_LIMIT`), the document count \
         (`MAX_CLIENT_BATCH_SIZE`), an input's tokens without truncation, or the request's \
         tokens (`MAX_QUEUED_TOKENS`); the message names the limit",
    ),
    (
        415,
        "The body is not declared as JSON (`Content-Type` must be `application/json`)",
    ),
    (
        422,
        "JSON that does not fit the request schema (missing field, wrong type), or input the \
         tokenizer rejects",
    ),
    (
        429,
        "Overloaded: admission limits reached (`MAX_PARALLEL_REQUESTS` + \
         `MAX_QUEUED_REQUESTS`, `MAX_QUEUED_TOKENS`); retry after `Retry-After` seconds",
    ),
    (500, "The model failed while scoring"),
    (
        503,
        "The request's deadline (`REQUEST_TIMEOUT_MS`) passed before it was scored, the node \
         cannot serve, the node is draining (shutting down: the answer carries \
         `x-node-draining: true`; a coordinator retries it on another node), or (coordinator) \
         no node could answer",
    ),
    (
        504,
        "Coordinator only: every node it tried timed out (a node itself answers 503)",
    ),
];

/// The statuses of [`RERANK_ERROR_STATUSES`] as responses whose body is the component schema
/// `error_schema`.
fn rerank_errors(error_schema: &str) -> BTreeMap<String, RefOr<Response>> {
    RERANK_ERROR_STATUSES
        .iter()
        .map(|&(status, when)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(error_schema)))
                .build();
            let mut response = ResponseBuilder::new()
                .description(when)
                .content("application/json", content);
            if status == 429 {
                let seconds = HeaderBuilder::new()
                    .schema(u32::schema())
                    .description(Some("Seconds to wait before retrying"))
                    .build();
                response = response.header("retry-after", seconds);
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

/// The error responses of `POST /rerank`, in TEI's `{error, error_type}` format.
pub struct TeiErrors;

impl IntoResponses for TeiErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rerank_errors(&ErrorResponse::name())
    }
}

/// The error responses of `POST /v1/rerank` and `/v2/rerank`, in Cohere's `{message}` format.
pub struct CohereErrors;

impl IntoResponses for CohereErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rerank_errors(&CohereError::name())
    }
}

/// Rerank texts (text-embeddings-inference shape).
///
/// Scores are the sigmoid of the cross-encoder's logit unless `raw_scores`; a bi-encoder's
/// score is the cosine similarity. Over-long inputs are rejected (413) unless `truncate`.
#[utoipa::path(
    post,
    path = "/rerank",
    operation_id = "rerank",
    tag = "rerank",
    request_body = RerankRequest,
    responses(
        (status = 200, description = "Ranks, best first", body = Vec<Rank>, headers(
            ("x-compute-time" = u64, description = "Milliseconds from admission to answer"),
            ("x-tokenization-time" = u64, description = "Milliseconds spent tokenizing"),
            ("x-queue-time" = u64, description = "Milliseconds waiting for the model"),
            ("x-inference-time" = u64, description = "Milliseconds in forward passes"),
        )),
        TeiErrors,
    )
)]
#[allow(dead_code)]
fn rerank() {}

/// Rerank documents (Cohere v1 / Jina shape; `return_documents` defaults to true).
///
/// Over-long documents are truncated (to `max_tokens_per_doc` when given).
#[utoipa::path(
    post,
    path = "/v1/rerank",
    operation_id = "rerank_v1",
    tag = "rerank",
    request_body = CohereRerankRequest,
    responses(
        (status = 200, description = "Ranked results, best first", body = CohereRerankResponse),
        CohereErrors,
    )
)]
#[allow(dead_code)]
fn rerank_v1() {}

/// Rerank documents (Cohere v2 shape; `return_documents` defaults to false).
///
/// Over-long documents are truncated (to `max_tokens_per_doc` when given).
#[utoipa::path(
    post,
    path = "/v2/rerank",
    operation_id = "rerank_v2",
    tag = "rerank",
    request_body = CohereRerankRequest,
    responses(
        (status = 200, description = "Ranked results, best first", body = CohereRerankResponse),
        CohereErrors,
    )
)]
#[allow(dead_code)]
fn rerank_v2() {}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    responses((status = 200, description = "Text exposition format 0.0.4", body = String,
        content_type = "text/plain"))
)]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value))
)]
#[allow(dead_code)]
fn openapi() {}

/// Node health: model, micro-batcher and shared-cache state.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    responses(
        (status = 200, description = "The node can score", body = Health),
        (status = 503, description = "`unavailable`: the node's pipeline does not answer; \
            `draining`: the node is shutting down (SIGTERM) and takes no new requests; \
            the answer then carries `x-node-draining: true`", body = HealthUnavailable),
    )
)]
#[allow(dead_code)]
fn node_health() {}

/// The model and the node's limits (TEI's `/info` plus model details).
#[utoipa::path(
    get,
    path = "/info",
    operation_id = "info",
    tag = "service",
    responses((status = 200, description = "Model and limits", body = Info))
)]
#[allow(dead_code)]
fn node_info() {}

/// Coordinator health and a summary of its nodes.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    responses(
        (status = 200, description = "`ok` (every node healthy) or `degraded` (some)",
            body = CoordinatorHealth),
        (status = 503, description = "`unavailable`: no healthy node; `draining`: the \
            coordinator is shutting down (SIGTERM)", body = CoordinatorHealth),
    )
)]
#[allow(dead_code)]
fn coordinator_health() {}

/// What nodes and coordinators share: the rerank operations and the service basics.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rerank-cluster",
        description = "Cross-encoder reranking with TEI- and Cohere-compatible APIs."
    ),
    paths(rerank, rerank_v1, rerank_v2, metrics, openapi),
    components(schemas(
        RerankRequest,
        TruncationDirection,
        BestChunk,
        Rank,
        ErrorResponse,
        ErrorType,
        CohereRerankRequest,
        Document,
        CohereRerankResponse,
        RerankResult,
        ResultDocument,
        Usage,
        Meta,
        ApiVersion,
        BilledUnits,
        CohereError,
    )),
    tags(
        (name = "rerank", description = "Scoring documents against a query"),
        (name = "service", description = "Health, limits, metrics and this document"),
    )
)]
struct ClientApi;

/// A node's own service endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(node_health, node_info),
    components(schemas(
        Health,
        HealthUnavailable,
        UnavailableStatus,
        ModelHealth,
        MicroBatcherHealth,
        DistributedCacheHealth,
        Info
    ))
)]
struct NodeServiceApi;

/// A coordinator's own service endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(coordinator_health),
    components(schemas(CoordinatorHealth, CoordinatorNodeSummary))
)]
struct CoordinatorServiceApi;

/// The document a node serves.
pub fn node_document() -> utoipa::openapi::OpenApi {
    ClientApi::openapi().merge_from(NodeServiceApi::openapi())
}

/// The document a coordinator serves: the node's rerank operations, its own `/health`, no
/// `/info`.
pub fn coordinator_document() -> utoipa::openapi::OpenApi {
    ClientApi::openapi().merge_from(CoordinatorServiceApi::openapi())
}
