//! What the rerank endpoints refuse before their handlers run: any request while the node
//! drains (503, so a coordinator retries it on another node), bodies that are not JSON (415,
//! before a byte of them is read) and bodies that do not arrive within `HTTP_READ_TIMEOUT_MS`
//! (408, and the connection is closed), each in the endpoint's own error format.
//!
//! The JSON rule is text-embeddings-inference's (axum's): `application/json` or an
//! `application/*+json` type, parameters such as `charset` allowed. It is also what keeps a
//! browser's cross-site form or `text/plain` POST from reaching a node: a JSON content type makes
//! the browser ask first (CORS preflight), and the node answers no preflight.
//!
//! actix-web bounds only the time to receive a request's head; the body is read by the JSON
//! extractor at whatever pace the client sends it. [`rerank_edge`] gives the body stream a
//! deadline, and the extractor's error handler turns its expiry into the 408.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::ConnectionType;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::ResponseError;
use actix_web::{mime, web, HttpMessage, HttpResponse};
use futures_util::Stream;

use super::error::{ApiError, ApiErrorKind, CohereApiError, TeiError};
use crate::state::NodeState;
use tokio::time::{Instant, Sleep};

/// The time a client has to send a request body once its head has arrived (`HTTP_READ_TIMEOUT_MS`),
/// shared with the handlers as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// A request body as actix-web streams it (actix-http's `BoxedPayloadStream`).
type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// The message of a 415, as text-embeddings-inference words it.
const JSON_REQUIRED: &str = "Expected request with `Content-Type: application/json`";

/// Which error body an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{error, error_type}` (`/rerank`).
    Tei,
    /// `{message}` (`/v1/rerank`, `/v2/rerank`).
    Cohere,
}

/// A refusal of the HTTP edge, outside the handlers' own error kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeRefusal {
    /// The body did not arrive in time (408; the connection is closed).
    BodyTimeout(Duration),
    /// The body is not declared as JSON (415).
    NotJson,
    /// The node is draining (503, with the draining header; the connection is closed).
    Draining,
}

impl EdgeRefusal {
    /// The refusal a JSON extractor error stands for, if it is one of ours.
    pub fn of(error: &JsonPayloadError) -> Option<Self> {
        match error {
            JsonPayloadError::ContentType => Some(Self::NotJson),
            JsonPayloadError::Payload(PayloadError::Io(e))
                if e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Some(Self::BodyTimeout(timeout_of(e)))
            }
            _ => None,
        }
    }

    fn kind(&self) -> ApiErrorKind {
        match self {
            Self::BodyTimeout(_) => ApiErrorKind::BodyTimeout,
            Self::NotJson => ApiErrorKind::NotJson,
            Self::Draining => ApiErrorKind::Draining,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::BodyTimeout(limit) => format!(
                "the request body did not arrive within {} ms (HTTP_READ_TIMEOUT_MS)",
                limit.as_millis()
            ),
            Self::NotJson => JSON_REQUIRED.to_string(),
            Self::Draining => {
                "the node is shutting down and takes no new requests; retry on another node"
                    .to_string()
            }
        }
    }

    /// The refusal as a response in `format`. A slow body's connection is closed after it:
    /// its client has shown it cannot be trusted to send the next request any faster.
    pub fn response(&self, format: ErrorFormat) -> HttpResponse {
        let error = ApiError::new(self.kind(), self.message());
        let mut response = match format {
            ErrorFormat::Tei => TeiError(error).error_response(),
            ErrorFormat::Cohere => CohereApiError(error).error_response(),
        };
        if matches!(self, Self::BodyTimeout(_)) {
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        response
    }

    /// The refusal as an actix error (for a JSON extractor's error handler).
    pub fn into_error(self, cause: JsonPayloadError, format: ErrorFormat) -> actix_web::Error {
        actix_web::error::InternalError::from_response(cause, self.response(format)).into()
    }
}

/// The timeout a [`DeadlineBody`] error carries in its message (0 when unreadable).
fn timeout_of(error: &std::io::Error) -> Duration {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<BodyTimedOut>())
        .map_or(Duration::ZERO, |t| t.0)
}

/// The error a body stream yields past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
struct BodyTimedOut(Duration);

/// Whether `req` declares a JSON body: `application/json` or `application/*+json`.
fn declares_json(req: &ServiceRequest) -> bool {
    match req.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == mime::APPLICATION
                && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
        }
        _ => false,
    }
}

/// Middleware of the TEI rerank endpoint; see [`rerank_edge`].
pub async fn tei_edge(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    rerank_edge(req, next, ErrorFormat::Tei).await
}

/// Middleware of the Cohere rerank endpoints; see [`rerank_edge`].
pub async fn cohere_edge(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    rerank_edge(req, next, ErrorFormat::Cohere).await
}

/// Refuses every request while the node drains (503) and a POST whose body is not declared as
/// JSON (415), in `format`, and gives the body of the others a deadline of [`BodyReadTimeout`]
/// from now (the head has just arrived).
async fn rerank_edge<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
    format: ErrorFormat,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let draining = req
        .app_data::<web::Data<NodeState>>()
        .is_some_and(|state| state.draining.is_draining());
    if draining {
        let response = EdgeRefusal::Draining.response(format);
        return Ok(req.into_response(response).map_into_right_body());
    }
    if req.method() == Method::POST && !declares_json(&req) {
        let response = EdgeRefusal::NotJson.response(format);
        return Ok(req.into_response(response).map_into_right_body());
    }
    if let Some(&BodyReadTimeout(limit)) = req.app_data::<BodyReadTimeout>() {
        let body = req.parts_mut().1.take();
        req.set_payload(Payload::from(
            Box::pin(DeadlineBody::new(body, limit)) as BodyStream
        ));
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes.
pub struct DeadlineBody {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    expired: bool,
}

impl DeadlineBody {
    /// `inner`, to be read within `limit` from now.
    pub fn new(inner: Payload, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            limit,
            expired: false,
        }
    }
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        // The deadline first: a client that keeps a trickle going must not outrun it.
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let error = std::io::Error::new(std::io::ErrorKind::TimedOut, BodyTimedOut(self.limit));
            return Poll::Ready(Some(Err(PayloadError::Io(error))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;
    use futures_util::StreamExt;

    /// A body that keeps coming, a byte at a time, fails at its deadline with the error the
    /// extractor's handler recognises as a timeout.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_its_deadline() {
        let trickle = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, PayloadError>(Bytes::from_static(b" ")), ()))
        });
        let payload = Payload::from(Box::pin(trickle) as BodyStream);
        let started = Instant::now();
        let mut body = DeadlineBody::new(payload, Duration::from_secs(1));
        let mut bytes = 0;
        let error = loop {
            match body.next().await {
                Some(Ok(chunk)) => bytes += chunk.len(),
                Some(Err(e)) => break e,
                None => panic!("the body ended instead of timing out"),
            }
        };
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            (9..=10).contains(&bytes),
            "{bytes} bytes before the deadline"
        );
        let refusal = EdgeRefusal::of(&JsonPayloadError::Payload(error));
        assert_eq!(
            refusal,
            Some(EdgeRefusal::BodyTimeout(Duration::from_secs(1)))
        );
        assert!(body.next().await.is_none(), "nothing after the timeout");
    }

    /// A body that arrives in time passes through whole.
    #[tokio::test(start_paused = true)]
    async fn a_prompt_body_passes_through() {
        let payload = Payload::from(Bytes::from_static(b"{\"query\": \"a\"}"));
        let mut body = DeadlineBody::new(payload, Duration::from_secs(1));
        let chunk = body.next().await.and_then(Result::ok);
        assert_eq!(chunk.as_deref(), Some(&b"{\"query\": \"a\"}"[..]));
    }

    /// Each refusal renders in each format with its status, and a slow body's closes the
    /// connection.
    #[test]
    fn refusals_render_in_the_endpoint_format() {
        let timeout = EdgeRefusal::BodyTimeout(Duration::from_millis(1500));
        let tei = timeout.response(ErrorFormat::Tei);
        assert_eq!(tei.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(tei.head().connection_type() == actix_web::http::ConnectionType::Close);
        let cohere = EdgeRefusal::NotJson.response(ErrorFormat::Cohere);
        assert_eq!(cohere.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(timeout.message().contains("1500 ms"));
    }
}
