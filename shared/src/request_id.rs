//! Request ids: every response of a node or the coordinator carries `x-request-id`, the
//! client's own or a fresh UUID, and the coordinator passes it on to the node it calls, so one
//! id follows a request end to end.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};

/// The header that carries a request's id end to end.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_client_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Keeps the client's `x-request-id` (when printable and ≤ 128 bytes) or assigns a UUID, and
/// echoes it on the response, errors included.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_client_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res)
}
