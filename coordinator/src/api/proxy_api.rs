//! The client API, routed: `/rerank`, `/v1/rerank`, `/v2/rerank` go to a node chosen by the
//! router, unchanged, and come back unchanged. Scoring is idempotent, so a request a node fails
//! (connection refused or reset, timeout, 5xx, 429) is retried on the next node, within
//! `MAX_ATTEMPTS` and `TOTAL_TIMEOUT_MS`; only when every node fails does the client see an
//! error (503 in the endpoint's own format).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rerank_shared::hash_ring::request_key;
use rerank_shared::request_id::RequestId;
use serde::Deserialize;
use serde_json::json;
use tracing::{info_span, Instrument};

use rerank_shared::telemetry::trace_headers;

use crate::actors::{Forward, ForwardedResponse, Route};
use crate::state::CoordinatorState;

/// Which error format an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error", "error_type"}`
    Tei,
    /// `{"message"}`
    Cohere,
}

/// The request fields that decide routing; everything else passes through unread.
#[derive(Debug, Default, Deserialize)]
struct RoutingFields {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// The header naming the node that answered (for operators and affinity tests).
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// Request headers passed on to nodes (the trace context is the coordinator's own span's).
const PASSED_ON: &[&str] = &["content-type"];

fn error_response(
    shape: Shape,
    status: StatusCode,
    error_type: &str,
    message: String,
) -> HttpResponse {
    let body = match shape {
        Shape::Tei => json!({"error": message, "error_type": error_type}),
        Shape::Cohere => json!({"message": message}),
    };
    HttpResponse::build(status).json(body)
}

fn relay(response: ForwardedResponse, node: &str) -> HttpResponse {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    for (name, value) in &response.headers {
        builder.insert_header((name.as_str(), value.as_str()));
    }
    builder.insert_header((SERVED_BY_HEADER, node));
    builder.body(response.body)
}

/// `POST /rerank`.
pub async fn rerank_tei(
    http: HttpRequest,
    body: web::Payload,
    state: web::Data<CoordinatorState>,
) -> HttpResponse {
    proxy(http, body, state, "/rerank", Shape::Tei).await
}

/// `POST /v1/rerank`.
pub async fn rerank_v1(
    http: HttpRequest,
    body: web::Payload,
    state: web::Data<CoordinatorState>,
) -> HttpResponse {
    proxy(http, body, state, "/v1/rerank", Shape::Cohere).await
}

/// `POST /v2/rerank`.
pub async fn rerank_v2(
    http: HttpRequest,
    body: web::Payload,
    state: web::Data<CoordinatorState>,
) -> HttpResponse {
    proxy(http, body, state, "/v2/rerank", Shape::Cohere).await
}

/// Reads the body up to the payload limit.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, String> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| format!("unreadable body: {e}"))?;
        if body.len() + chunk.len() > limit {
            return Err(format!("request body is over the limit of {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn proxy(
    http: HttpRequest,
    payload: web::Payload,
    state: web::Data<CoordinatorState>,
    path: &str,
    shape: Shape,
) -> HttpResponse {
    let cfg = &state.config;
    let body = match read_body(payload, cfg.payload_limit).await {
        Ok(b) => b,
        Err(message) => {
            return error_response(shape, StatusCode::PAYLOAD_TOO_LARGE, "validation", message)
        }
    };
    // Malformed JSON still goes to a node, which answers with the proper 4xx.
    let fields: RoutingFields = serde_json::from_slice(&body).unwrap_or_default();
    let key = request_key(
        fields.model.as_deref().unwrap_or(""),
        fields.query.as_deref().unwrap_or(""),
    );
    let candidates = state
        .router
        .send(Route { key })
        .instrument(info_span!("route", routing = ?cfg.routing))
        .await
        .unwrap_or_default();
    if candidates.is_empty() {
        return error_response(
            shape,
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            "no healthy node to serve the request".into(),
        );
    }

    let mut headers: Vec<(String, String)> = PASSED_ON
        .iter()
        .filter_map(|h| {
            Some((
                h.to_string(),
                http.headers().get(*h)?.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    if let Some(id) = http.extensions().get::<RequestId>() {
        headers.push(("x-request-id".into(), id.0.clone()));
    }
    let deadline = Instant::now() + Duration::from_millis(cfg.total_timeout_ms);
    let attempt_timeout = Duration::from_millis(cfg.request_timeout_ms);
    let mut last_answer: Option<(ForwardedResponse, String)> = None;
    let mut failures: Vec<String> = Vec::new();
    for (attempt, candidate) in candidates.iter().take(cfg.max_attempts).enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            failures.push("total timeout reached".into());
            break;
        }
        let node = candidate.shared.id.clone();
        let span = info_span!("forward", node = %node, attempt = attempt + 1);
        let mut attempt_headers = headers.clone();
        attempt_headers.extend(trace_headers(&span));
        let forward = Forward {
            path: path.to_string(),
            body: body.clone(),
            headers: attempt_headers,
        };
        let outcome = tokio::time::timeout(
            remaining.min(attempt_timeout),
            candidate.client.send(forward).instrument(span),
        )
        .await;
        let attempts = &state.metrics.attempts;
        match outcome {
            Ok(Ok(Ok(answer))) if answer.status < 500 && answer.status != 429 => {
                attempts.with_label_values(&[node.as_str(), "ok"]).inc();
                return relay(answer, &node);
            }
            Ok(Ok(Ok(answer))) => {
                attempts.with_label_values(&[node.as_str(), "retry"]).inc();
                failures.push(format!("{node}: HTTP {}", answer.status));
                last_answer = Some((answer, node));
            }
            Ok(Ok(Err(e))) => {
                attempts.with_label_values(&[node.as_str(), "error"]).inc();
                failures.push(e.to_string());
            }
            Ok(Err(e)) => failures.push(format!("{node}: {e}")),
            Err(_) => {
                attempts.with_label_values(&[node.as_str(), "error"]).inc();
                failures.push(format!("{node}: timed out"));
            }
        }
    }
    match last_answer {
        // Every node was overloaded or failing: the last node's own answer says it best.
        Some((answer, node)) => relay(answer, &node),
        None => error_response(
            shape,
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            format!("no node could serve the request: {}", failures.join("; ")),
        ),
    }
}
