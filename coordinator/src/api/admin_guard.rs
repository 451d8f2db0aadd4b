//! The one gate in front of `/admin/*`: a middleware on the admin scope, so no admin handler
//! can forget the check and none repeats it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use rerank_shared::admin_auth::is_admin;

use super::error::{ApiError, GatewayError};
use crate::state::CoordinatorState;

/// Lets a request through only with `Authorization: Bearer {ADMIN_TOKEN}`; 401 otherwise.
pub async fn require_admin_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let token = req
        .app_data::<web::Data<CoordinatorState>>()
        .and_then(|s| s.config.admin_token.clone());
    if !is_admin(req.headers(), token.as_deref()) {
        let denied = ApiError::from(GatewayError::Unauthorized).error_response();
        return Ok(req.into_response(denied).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}
