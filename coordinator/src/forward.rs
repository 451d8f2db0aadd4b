//! One attempt at one node: the client's request sent on, the node's answer read back, all
//! within the attempt's time limit.
//!
//! The attempt runs inside the client's own request handler, not in a task of its own: when it
//! ends — answered, timed out (the HTTP client's per-request timeout), or dropped because the
//! client went away — its connection to the node is closed or returned to the pool and the
//! node's in-flight count goes down, exactly once. Nothing keeps working on behalf of a request
//! nobody waits for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;

use crate::actors::node_client::{says_draining, Attempt};
use crate::actors::NodeShared;

/// The client's request as it goes to a node.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    /// Path and query, e.g. `/v1/rerank`.
    pub path: String,
    pub body: Bytes,
    /// Headers passed through (content type, request id, trace context).
    pub headers: Vec<(String, String)>,
}

/// A node's answer, passed back to the client as is.
#[derive(Debug, Clone)]
pub struct ForwardedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The node refused because it is shutting down (its draining header): the request is
    /// retried elsewhere and the node gets no more until it is healthy again.
    pub draining: bool,
}

/// Why an attempt got no answer (the request may be retried elsewhere: scoring is idempotent).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// No complete answer within the attempt's limit.
    #[error("{node}: no answer within {} ms", .after.as_millis())]
    TimedOut { node: String, after: Duration },
    /// No connection (refused, unresolvable, connect timeout).
    #[error("{node}: unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    /// Connected, but the answer was cut off or is not HTTP.
    #[error("{node}: broken answer: {reason}")]
    BrokenAnswer { node: String, reason: String },
}

/// Response headers worth passing back to clients.
const PASSED_BACK: &[&str] = &[
    "content-type",
    "retry-after",
    "x-compute-time",
    "x-tokenization-time",
    "x-queue-time",
    "x-inference-time",
];

/// Counts a request in flight at a node until dropped, however the attempt ends.
struct InFlight(Arc<NodeShared>);

impl InFlight {
    fn enter(node: &Arc<NodeShared>) -> Self {
        node.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(node.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An error's message with its causes (reqwest's own message rarely says what happened).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

fn classify(node: &str, e: &reqwest::Error, limit: Duration) -> ForwardError {
    let node = node.to_string();
    if e.is_timeout() {
        ForwardError::TimedOut { node, after: limit }
    } else if e.is_connect() {
        ForwardError::Unreachable {
            node,
            reason: with_causes(e),
        }
    } else {
        ForwardError::BrokenAnswer {
            node,
            reason: with_causes(e),
        }
    }
}

/// Sends `request` to `node` and reads its whole answer, within `limit`.
pub async fn forward(
    node: &Arc<NodeShared>,
    http: &reqwest::Client,
    request: &ForwardRequest,
    limit: Duration,
) -> Result<ForwardedResponse, ForwardError> {
    let _in_flight = InFlight::enter(node);
    let started = Instant::now();
    let mut builder = http
        .post(format!("{}{}", node.url, request.path))
        .timeout(limit)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let outcome = async {
        let response = builder
            .send()
            .await
            .map_err(|e| classify(&node.id, &e, limit))?;
        let status = response.status().as_u16();
        let draining = says_draining(response.headers());
        let headers = PASSED_BACK
            .iter()
            .filter_map(|h| {
                let v = response.headers().get(*h)?.to_str().ok()?;
                Some((h.to_string(), v.to_string()))
            })
            .collect();
        let body = response
            .bytes()
            .await
            .map_err(|e| classify(&node.id, &e, limit))?;
        Ok(ForwardedResponse {
            status,
            headers,
            body,
            draining,
        })
    }
    .await;
    let attempt = match &outcome {
        Ok(r) => Attempt::Answered {
            status: r.status,
            draining: r.draining,
        },
        Err(_) => Attempt::Failed,
    };
    node.record(started.elapsed(), attempt);
    outcome
}
