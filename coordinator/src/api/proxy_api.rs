//! The client API, routed: `/rerank`, `/v1/rerank`, `/v2/rerank` go to a node chosen by the
//! router, unchanged, and come back unchanged. Scoring is idempotent, so a request a node fails
//! (connection refused or reset, timeout, 5xx, 429) is retried on the next node, within
//! `MAX_ATTEMPTS` and `TOTAL_TIMEOUT_MS`, each attempt within `REQUEST_TIMEOUT_MS`; only when
//! every node fails does the client see an error, in the endpoint's own format (see
//! [`super::error`] for which).
//!
//! Before anything goes to a node, the coordinator checks what it can itself: a JSON content
//! type (415), and a body that arrives whole within `HTTP_READ_TIMEOUT_MS` (408) and
//! `PAYLOAD_LIMIT` (413).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rerank_shared::hash_ring::request_key;
use rerank_shared::request_id::RequestId;
use rerank_shared::telemetry::trace_headers;
use serde::Deserialize;
use tracing::{info_span, Instrument};

use super::error::{ApiError, Attempts, GatewayError, Shape};
use crate::actors::Route;
use crate::forward::{forward, ForwardError, ForwardRequest, ForwardedResponse};
use crate::state::CoordinatorState;

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

/// `Retry-After` of a coordinator-made 429 when no node said how long.
const DEFAULT_RETRY_AFTER_S: u64 = 1;

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
) -> Result<HttpResponse, ApiError> {
    proxy(http, body, state, "/rerank")
        .await
        .map_err(|e| e.in_shape(Shape::Tei))
}

/// `POST /v1/rerank`.
pub async fn rerank_v1(
    http: HttpRequest,
    body: web::Payload,
    state: web::Data<CoordinatorState>,
) -> Result<HttpResponse, ApiError> {
    proxy(http, body, state, "/v1/rerank")
        .await
        .map_err(|e| e.in_shape(Shape::Cohere))
}

/// `POST /v2/rerank`.
pub async fn rerank_v2(
    http: HttpRequest,
    body: web::Payload,
    state: web::Data<CoordinatorState>,
) -> Result<HttpResponse, ApiError> {
    proxy(http, body, state, "/v2/rerank")
        .await
        .map_err(|e| e.in_shape(Shape::Cohere))
}

/// Whether the request says its body is JSON (`application/json`, or `application/*+json`),
/// as TEI's JSON extractor requires.
fn is_json(http: &HttpRequest) -> bool {
    match http.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
        }
        Ok(None) | Err(_) => false,
    }
}

/// Reads the whole body, up to `limit` bytes and within `timeout` (a client sending a byte at a
/// time cannot hold a connection past it).
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<web::Bytes, GatewayError> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| GatewayError::UnreadableBody(e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(GatewayError::PayloadTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| GatewayError::BodyTimeout { after: timeout })?
}

/// What the failed attempts add up to, when no node served the request.
fn verdict(failures: Vec<ForwardError>, answers: Vec<(ForwardedResponse, String)>) -> Verdict {
    let retry_after = |a: &ForwardedResponse| {
        a.headers
            .iter()
            .find(|(name, _)| name == "retry-after")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let busy: Vec<&ForwardedResponse> = answers
        .iter()
        .map(|(a, _)| a)
        .filter(|a| a.status == 429)
        .collect();
    // A node that is merely busy is the best news: the client should come back later.
    if !busy.is_empty() {
        let retry_after_s = busy
            .iter()
            .filter_map(|a| retry_after(a))
            .max()
            .unwrap_or(DEFAULT_RETRY_AFTER_S);
        return Verdict::Error(GatewayError::RateLimited { retry_after_s });
    }
    // A node's own 5xx says more than anything the coordinator could make up.
    if let Some((answer, node)) = answers.into_iter().last() {
        tracing::warn!(
            status = answer.status,
            %node,
            others = %Attempts(failures),
            "request failed on every node; relaying the last node's answer"
        );
        return Verdict::Relay(answer, node);
    }
    let all_timed_out = failures
        .iter()
        .all(|f| matches!(f, ForwardError::TimedOut { .. }));
    let any_broken = failures
        .iter()
        .any(|f| matches!(f, ForwardError::BrokenAnswer { .. }));
    let attempts = Attempts(failures);
    Verdict::Error(if attempts.0.is_empty() {
        GatewayError::NoHealthyNode
    } else if all_timed_out {
        GatewayError::GatewayTimeout(attempts)
    } else if any_broken {
        GatewayError::BadGateway(attempts)
    } else {
        GatewayError::Unavailable(attempts)
    })
}

enum Verdict {
    Relay(ForwardedResponse, String),
    Error(GatewayError),
}

async fn proxy(
    http: HttpRequest,
    payload: web::Payload,
    state: web::Data<CoordinatorState>,
    path: &str,
) -> Result<HttpResponse, GatewayError> {
    let cfg = &state.config;
    if !is_json(&http) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let read_timeout = Duration::from_millis(cfg.http_read_timeout_ms.max(1));
    let body = read_body(payload, cfg.payload_limit, read_timeout).await?;
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
        .map_err(|_| GatewayError::ShuttingDown)?;
    if candidates.is_empty() {
        return Err(GatewayError::NoHealthyNode);
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
    let deadline = Instant::now() + Duration::from_millis(cfg.total_timeout_ms.max(1));
    let attempt_timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
    let mut answers: Vec<(ForwardedResponse, String)> = Vec::new();
    let mut failures: Vec<ForwardError> = Vec::new();
    let attempts = &state.metrics.attempts;
    for (attempt, node) in candidates.iter().take(cfg.max_attempts).enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let span = info_span!("forward", node = %node.id, attempt = attempt + 1);
        let mut attempt_headers = headers.clone();
        attempt_headers.extend(trace_headers(&span));
        let request = ForwardRequest {
            path: path.to_string(),
            body: body.clone(),
            headers: attempt_headers,
        };
        let limit = remaining.min(attempt_timeout);
        match forward(node, &state.http, &request, limit)
            .instrument(span)
            .await
        {
            Ok(answer) if answer.status < 500 && answer.status != 429 => {
                attempts.with_label_values(&[node.id.as_str(), "ok"]).inc();
                return Ok(relay(answer, &node.id));
            }
            Ok(answer) => {
                attempts
                    .with_label_values(&[node.id.as_str(), "retry"])
                    .inc();
                answers.push((answer, node.id.clone()));
            }
            Err(e) => {
                let outcome = match e {
                    ForwardError::TimedOut { .. } => "timeout",
                    ForwardError::Unreachable { .. } | ForwardError::BrokenAnswer { .. } => "error",
                };
                attempts
                    .with_label_values(&[node.id.as_str(), outcome])
                    .inc();
                failures.push(e);
            }
        }
    }
    if failures.is_empty() && answers.is_empty() {
        // TOTAL_TIMEOUT_MS ran out before the first attempt could start.
        return Err(GatewayError::GatewayTimeout(Attempts::default()));
    }
    match verdict(failures, answers) {
        Verdict::Relay(answer, node) => Ok(relay(answer, &node)),
        Verdict::Error(e) => Err(e),
    }
}
