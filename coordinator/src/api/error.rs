//! Every error the coordinator answers with itself, rendered in one place.
//!
//! A node's own answers (its 4xx, and its 5xx when nothing better came) pass through unchanged;
//! what is built here is what the coordinator makes up: a client that sent a bad request, no
//! node to serve it, every node timing out, every node refusing with 429. Each such answer
//! carries [`ERROR_SOURCE_HEADER`], so clients and operators can tell "the gateway said so"
//! from "a node said so". [`GatewayError::status`] is the one mapping from error to status,
//! an exhaustive match: a new variant must be given a status, not fall into a default. The
//! body speaks the endpoint's format ([`Shape`]), and each 5xx's cause is logged once, here.

use std::time::Duration;

use actix_web::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rerank_shared::api::cohere::CohereError;
use rerank_shared::api::tei::{ErrorResponse, ErrorType};
use serde_json::json;

use crate::forward::ForwardError;

/// Present (with the error's [`GatewayError::name`]) on every answer the coordinator made up.
pub const ERROR_SOURCE_HEADER: &str = "x-coordinator-error";

/// Which error format an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /rerank`: `{"error", "error_type"}` with TEI's error types.
    Tei,
    /// `POST /v1|v2/rerank`: `{"message"}`.
    Cohere,
    /// `/admin/*`: `{"error", "error_type"}` with the admin API's own types.
    Admin,
}

/// The attempts a failed request made, for messages and logs.
#[derive(Debug, Clone, Default)]
pub struct Attempts(pub Vec<ForwardError>);

impl std::fmt::Display for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// What went wrong, as the coordinator saw it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// An admin call without the right bearer token.
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// An admin call naming a node that is not a member.
    #[error("no node {0}")]
    NoSuchNode(String),
    /// A request the coordinator can tell is wrong without asking a node.
    #[error("{0}")]
    InvalidRequest(String),
    /// The rerank endpoints take JSON only (a browser's cross-site `text/plain` POST is not).
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body is over `PAYLOAD_LIMIT`.
    #[error("request body is over the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive within `HTTP_READ_TIMEOUT_MS`.
    #[error("the request body was not received within {} ms", .after.as_millis())]
    BodyTimeout { after: Duration },
    /// The body could not be read (the client broke off).
    #[error("unreadable body: {0}")]
    UnreadableBody(String),
    /// No member is healthy: nothing was tried.
    #[error("no healthy node to serve the request")]
    NoHealthyNode,
    /// Every node tried was unreachable (refused, reset before answering).
    #[error("no node could serve the request: {0}")]
    Unavailable(Attempts),
    /// Every node tried was too slow (`REQUEST_TIMEOUT_MS` per attempt, `TOTAL_TIMEOUT_MS` in
    /// all).
    #[error("no node answered in time: {0}")]
    GatewayTimeout(Attempts),
    /// A node answered with something that is not an HTTP answer (cut off, unreadable).
    #[error("no node gave a usable answer: {0}")]
    BadGateway(Attempts),
    /// Every node that answered was at its admission limit (429).
    #[error("every node is busy; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// The router is gone: the coordinator is shutting down.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
}

impl GatewayError {
    /// The one mapping from error to HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NoSuchNode(_) => StatusCode::NOT_FOUND,
            Self::InvalidRequest(_) | Self::UnreadableBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::NoHealthyNode | Self::Unavailable(_) | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A stable name, sent in [`ERROR_SOURCE_HEADER`] and used as the admin `error_type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NoSuchNode(_) => "not_found",
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::NoHealthyNode => "no_healthy_node",
            Self::Unavailable(_) => "unavailable",
            Self::GatewayTimeout(_) => "gateway_timeout",
            Self::BadGateway(_) => "bad_gateway",
            Self::RateLimited { .. } => "rate_limited",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// TEI's error type for `POST /rerank`.
    fn tei_type(&self) -> ErrorType {
        match self {
            Self::Unauthorized
            | Self::NoSuchNode(_)
            | Self::InvalidRequest(_)
            | Self::UnsupportedMediaType
            | Self::PayloadTooLarge { .. }
            | Self::BodyTimeout { .. }
            | Self::UnreadableBody(_) => ErrorType::Validation,
            Self::NoHealthyNode
            | Self::Unavailable(_)
            | Self::GatewayTimeout(_)
            | Self::ShuttingDown => ErrorType::Unhealthy,
            Self::BadGateway(_) => ErrorType::Backend,
            Self::RateLimited { .. } => ErrorType::Overloaded,
        }
    }

    /// This error, answered in `shape`.
    pub fn in_shape(self, shape: Shape) -> ApiError {
        ApiError { error: self, shape }
    }
}

/// A [`GatewayError`] in the format of the endpoint that answers it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct ApiError {
    pub error: GatewayError,
    pub shape: Shape,
}

/// Admin handlers answer in the admin format.
impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        error.in_shape(Shape::Admin)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.error.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self.error, "request failed");
        }
        let mut builder = HttpResponse::build(status);
        builder.insert_header((ERROR_SOURCE_HEADER, self.error.name()));
        match &self.error {
            GatewayError::Unauthorized => {
                builder.insert_header((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            GatewayError::RateLimited { retry_after_s } => {
                builder.insert_header((RETRY_AFTER, retry_after_s.to_string()));
            }
            // The rest of the body may still be on its way: this connection cannot be reused.
            GatewayError::BodyTimeout { .. } => {
                builder.force_close();
            }
            GatewayError::NoSuchNode(_)
            | GatewayError::InvalidRequest(_)
            | GatewayError::UnsupportedMediaType
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::UnreadableBody(_)
            | GatewayError::NoHealthyNode
            | GatewayError::Unavailable(_)
            | GatewayError::GatewayTimeout(_)
            | GatewayError::BadGateway(_)
            | GatewayError::ShuttingDown => {}
        }
        let message = self.error.to_string();
        match self.shape {
            Shape::Tei => builder.json(ErrorResponse {
                error: message,
                error_type: self.error.tei_type(),
            }),
            Shape::Cohere => builder.json(CohereError { message }),
            Shape::Admin => {
                builder.json(json!({"error": message, "error_type": self.error.name()}))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use actix_web::http::header::HeaderMap;

    async fn render(
        error: GatewayError,
        shape: Shape,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = error.in_shape(shape).error_response();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = to_bytes(response.into_body())
            .await
            .ok()
            .unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or_default(),
        )
    }

    #[actix_web::test]
    async fn each_endpoint_gets_its_own_format_and_the_source_is_marked() {
        let timeout = GatewayError::GatewayTimeout(Attempts::default());
        let (status, head, body) = render(timeout.clone(), Shape::Tei).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error_type"], "unhealthy");
        assert!(body["error"].is_string());
        assert_eq!(
            head.get(ERROR_SOURCE_HEADER).map(|v| v.as_bytes()),
            Some(&b"gateway_timeout"[..])
        );
        let (_, _, body) = render(timeout, Shape::Cohere).await;
        assert!(
            body["message"].is_string() && body.get("error").is_none(),
            "{body}"
        );
        let (status, head, body) = render(GatewayError::Unauthorized, Shape::Admin).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error_type"], "unauthorized");
        assert_eq!(
            head.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let (status, head, _) = render(
            GatewayError::RateLimited { retry_after_s: 3 },
            Shape::Cohere,
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            head.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
}
