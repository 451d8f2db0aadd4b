//! API errors and their two wire formats.
//!
//! Every failure a handler can meet becomes an [`ApiError`]; its [`ApiErrorKind`] decides the
//! HTTP status in exactly one place ([`ApiErrorKind::status`]). The endpoint picks the body
//! format: TEI's `{error, error_type}` ([`TeiError`]) or Cohere's `{message}` ([`CohereApiError`]).

use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rerank_shared::api::cohere::CohereError;
use rerank_shared::api::health::DRAINING_HEADER;
use rerank_shared::api::tei::{ErrorResponse, ErrorType};

use crate::actors::RerankError;
use crate::admission::TokensRefused;
use rerank_engine::EngineError;

/// Seconds a client is asked to wait after a 429.
const RETRY_AFTER_SECONDS: &str = "1";

fn error_builder(error: &ApiError) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::build(error.kind.status());
    if matches!(
        error.kind,
        ApiErrorKind::Overloaded | ApiErrorKind::DeadlineExceeded | ApiErrorKind::Draining
    ) {
        builder.insert_header(("retry-after", RETRY_AFTER_SECONDS));
    }
    if error.kind == ApiErrorKind::Draining {
        // Tells a coordinator to stop routing here at once; closing the connection sends any
        // other client to reconnect, and so to another server.
        builder
            .insert_header((DRAINING_HEADER, "true"))
            .force_close();
    }
    builder
}

/// What went wrong, independent of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// The body is not JSON (syntax error, truncated, invalid UTF-8).
    MalformedBody,
    /// The JSON does not fit the request schema (missing field, wrong type).
    InvalidSchema,
    /// A field's value is out of range (`top_n < 1`, …).
    InvalidField,
    /// A required list is empty.
    Empty,
    /// The body, the document list or an input is larger than allowed.
    TooLarge,
    /// The body did not arrive within `HTTP_READ_TIMEOUT_MS` (the connection is closed after).
    BodyTimeout,
    /// The body is not declared as JSON.
    NotJson,
    /// The tokenizer could not encode the input.
    Tokenizer,
    /// Admission limits were reached.
    Overloaded,
    /// The request did not finish within the node's deadline (`REQUEST_TIMEOUT_MS`).
    DeadlineExceeded,
    /// The model failed.
    Backend,
    /// The node cannot serve.
    Unhealthy,
    /// The node is shutting down (SIGTERM): it finishes what it has, takes nothing new.
    Draining,
    /// The client went away before its answer was ready (nobody reads this response).
    ClientClosed,
}

impl ApiErrorKind {
    /// The one mapping from error kind to HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedBody | Self::InvalidField | Self::Empty => StatusCode::BAD_REQUEST,
            Self::InvalidSchema | Self::Tokenizer => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Backend => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unhealthy | Self::Draining | Self::DeadlineExceeded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // nginx's "client closed request"; a valid status code, so this cannot fail.
            Self::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn tei_type(self) -> ErrorType {
        match self {
            Self::MalformedBody
            | Self::InvalidSchema
            | Self::InvalidField
            | Self::TooLarge
            | Self::BodyTimeout
            | Self::NotJson => ErrorType::Validation,
            Self::Empty => ErrorType::Empty,
            Self::ClientClosed => ErrorType::Validation,
            Self::Tokenizer => ErrorType::Tokenizer,
            Self::Overloaded | Self::DeadlineExceeded => ErrorType::Overloaded,
            Self::Backend => ErrorType::Backend,
            Self::Unhealthy | Self::Draining => ErrorType::Unhealthy,
        }
    }
}

/// A failed request: a kind and a message for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ApiErrorKind,
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        // No catch-all arm: a new engine error must be given its status here.
        let kind = match &e {
            EngineError::InputTooLong { .. } => ApiErrorKind::TooLarge,
            EngineError::InvalidChunking(_) => ApiErrorKind::InvalidField,
            EngineError::Tokenizer(_) => ApiErrorKind::Tokenizer,
            EngineError::ModelNotFound(_)
            | EngineError::InvalidModel(_)
            | EngineError::UnsupportedArchitecture { .. }
            | EngineError::Candle(_)
            | EngineError::Io(_)
            | EngineError::Internal(_) => ApiErrorKind::Backend,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<RerankError> for ApiError {
    fn from(e: RerankError) -> Self {
        match e {
            RerankError::Engine(engine) => engine.into(),
            RerankError::Overloaded(o) => Self::new(ApiErrorKind::Overloaded, o.to_string()),
            RerankError::Tokens(refused @ TokensRefused::Busy { .. }) => {
                Self::new(ApiErrorKind::Overloaded, refused.to_string())
            }
            RerankError::Tokens(refused @ TokensRefused::TooLarge { .. }) => {
                Self::new(ApiErrorKind::TooLarge, refused.to_string())
            }
            RerankError::DeadlineExceeded(_) => {
                Self::new(ApiErrorKind::DeadlineExceeded, e.to_string())
            }
            RerankError::Cancelled => Self::new(ApiErrorKind::ClientClosed, e.to_string()),
            RerankError::Compute(_) | RerankError::Internal(_) => {
                Self::new(ApiErrorKind::Backend, e.to_string())
            }
        }
    }
}

impl From<&JsonPayloadError> for ApiError {
    fn from(e: &JsonPayloadError) -> Self {
        match e {
            JsonPayloadError::OverflowKnownLength { length, limit } => Self::new(
                ApiErrorKind::TooLarge,
                format!("request body of {length} bytes is over the limit of {limit} bytes"),
            ),
            JsonPayloadError::Overflow { limit } => Self::new(
                ApiErrorKind::TooLarge,
                format!("request body is over the limit of {limit} bytes"),
            ),
            JsonPayloadError::Deserialize(inner) if inner.is_data() => Self::new(
                ApiErrorKind::InvalidSchema,
                format!("invalid request: {inner}"),
            ),
            JsonPayloadError::Deserialize(inner) => Self::new(
                ApiErrorKind::MalformedBody,
                format!("malformed JSON body: {inner}"),
            ),
            other => Self::new(
                ApiErrorKind::MalformedBody,
                format!("unreadable body: {other}"),
            ),
        }
    }
}

/// An [`ApiError`] rendered in TEI's format.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TeiError(#[from] pub ApiError);

impl ResponseError for TeiError {
    fn status_code(&self) -> StatusCode {
        self.0.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        error_builder(&self.0).json(ErrorResponse {
            error: self.0.message.clone(),
            error_type: self.0.kind.tei_type(),
        })
    }
}

/// An [`ApiError`] rendered in Cohere's format.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CohereApiError(#[from] pub ApiError);

impl ResponseError for CohereApiError {
    fn status_code(&self) -> StatusCode {
        self.0.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        error_builder(&self.0).json(CohereError {
            message: self.0.message.clone(),
        })
    }
}
