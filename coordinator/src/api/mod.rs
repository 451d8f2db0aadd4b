//! The coordinator's HTTP API.
//!
//! - [`proxy_api`]: `/rerank`, `/v1/rerank`, `/v2/rerank`, routed to nodes with failover.
//! - [`admin_api`]: `/admin/nodes`, `/admin/ring` (with `ADMIN_TOKEN` only), behind
//!   [`admin_guard`].
//! - [`service_api`]: `/health`, `/metrics`, `/openapi.json`.
//! - [`error`]: every error the coordinator answers with itself, and its formats.

pub mod admin_api;
pub mod admin_guard;
pub mod error;
pub mod proxy_api;
pub mod service_api;

use actix_web::middleware::from_fn;
use actix_web::web;

use error::{ApiError, GatewayError};

/// Registers every route; admin routes only when `admin`.
pub fn configure(cfg: &mut web::ServiceConfig, admin: bool) {
    // Resources rather than bare routes: another method on a known path is a 405, not a 404.
    cfg.service(web::resource("/rerank").route(web::post().to(proxy_api::rerank_tei)))
        .service(web::resource("/v1/rerank").route(web::post().to(proxy_api::rerank_v1)))
        .service(web::resource("/v2/rerank").route(web::post().to(proxy_api::rerank_v2)))
        .service(web::resource("/health").route(web::get().to(service_api::health)))
        .service(web::resource("/metrics").route(web::get().to(service_api::metrics)))
        .service(web::resource("/openapi.json").route(web::get().to(service_api::openapi)));
    if admin {
        // Admin bodies are small; their errors speak the admin format like every other.
        let json = web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| {
                ApiError::from(GatewayError::InvalidRequest(e.to_string())).into()
            });
        cfg.service(
            web::scope("/admin")
                .wrap(from_fn(admin_guard::require_admin_token))
                .app_data(json)
                .route("/nodes", web::get().to(admin_api::list_nodes))
                .route("/nodes", web::post().to(admin_api::add_node))
                .route("/nodes/{id}", web::delete().to(admin_api::remove_node))
                .route("/ring", web::get().to(admin_api::ring)),
        );
    }
}
