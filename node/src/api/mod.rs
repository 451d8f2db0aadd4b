//! The HTTP API: one file per resource, errors and middleware beside them.
//!
//! - [`tei_api`]: `POST /rerank` (text-embeddings-inference shape).
//! - [`cohere_api`]: `POST /v1/rerank`, `POST /v2/rerank` (Cohere/Jina shape).
//! - [`service_api`]: `/health`, `/info`, `/metrics`, `/openapi.json`.
//! - [`admin_api`]: `GET /admin/stats`, only with `ADMIN_TOKEN`.
//! - [`error`]: error kinds → status codes, and the two error body formats.
//! - [`edge`]: what the rerank endpoints refuse before their handlers run: non-JSON bodies (415)
//!   and bodies that arrive too slowly (408).
//! - [`disconnect`]: watching each connection: clients that went away, so their queued pairs
//!   can be dropped, and connections that stall between requests.

pub mod admin_api;
pub mod cohere_api;
pub mod disconnect;
pub mod edge;
pub mod error;
pub mod service_api;
pub mod tei_api;

use actix_web::error::JsonPayloadError;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest};

use edge::{EdgeRefusal, ErrorFormat};
use error::{ApiError, CohereApiError, TeiError};

/// Registers every route. `payload_limit` bounds request bodies (larger → 413); admin routes
/// exist only when `admin` (an admin token is configured). The rerank endpoints take JSON only
/// (415 otherwise) and their bodies must arrive within the [`edge::BodyReadTimeout`] in the app
/// data (408 otherwise).
pub fn configure(cfg: &mut web::ServiceConfig, payload_limit: usize, admin: bool) {
    if admin {
        cfg.route("/admin/stats", web::get().to(admin_api::stats));
    }
    // Each shape renders body errors in its own format, so each gets its own JSON config.
    // The edge middleware checks the content type first; the extractor's own check stays as a
    // second line.
    let tei_json = web::JsonConfig::default()
        .limit(payload_limit)
        .content_type_required(true)
        .error_handler(
            |e: JsonPayloadError, _: &HttpRequest| match EdgeRefusal::of(&e) {
                Some(refusal) => refusal.into_error(e, ErrorFormat::Tei),
                None => TeiError(ApiError::from(&e)).into(),
            },
        );
    let cohere_json = web::JsonConfig::default()
        .limit(payload_limit)
        .content_type_required(true)
        .error_handler(
            |e: JsonPayloadError, _: &HttpRequest| match EdgeRefusal::of(&e) {
                Some(refusal) => refusal.into_error(e, ErrorFormat::Cohere),
                None => CohereApiError(ApiError::from(&e)).into(),
            },
        );
    cfg.service(
        web::resource("/rerank")
            .app_data(tei_json)
            .wrap(from_fn(edge::tei_edge))
            .route(web::post().to(tei_api::rerank)),
    )
    .service(
        web::resource("/v1/rerank")
            .app_data(cohere_json.clone())
            .wrap(from_fn(edge::cohere_edge))
            .route(web::post().to(cohere_api::rerank_v1)),
    )
    .service(
        web::resource("/v2/rerank")
            .app_data(cohere_json)
            .wrap(from_fn(edge::cohere_edge))
            .route(web::post().to(cohere_api::rerank_v2)),
    )
    // Resources rather than bare routes: another method on a known path is a 405, not a 404.
    .service(web::resource("/health").route(web::get().to(service_api::health)))
    .service(web::resource("/info").route(web::get().to(service_api::info)))
    .service(web::resource("/metrics").route(web::get().to(service_api::metrics)))
    .service(web::resource("/openapi.json").route(web::get().to(service_api::openapi)));
}
