//! The coordinator's HTTP API.
//!
//! - [`proxy_api`]: `/rerank`, `/v1/rerank`, `/v2/rerank`, routed to nodes with failover.
//! - [`admin_api`]: `/admin/nodes`, `/admin/ring` (with `ADMIN_TOKEN` only).
//! - [`service_api`]: `/health`, `/metrics`, `/openapi.json`.

pub mod admin_api;
pub mod proxy_api;
pub mod service_api;

use actix_web::web;

/// Registers every route; admin routes only when `admin`.
pub fn configure(cfg: &mut web::ServiceConfig, payload_limit: usize, admin: bool) {
    let body_limit = web::PayloadConfig::new(payload_limit);
    cfg.service(
        web::resource("/rerank")
            .app_data(body_limit.clone())
            .route(web::post().to(proxy_api::rerank_tei)),
    )
    .service(
        web::resource("/v1/rerank")
            .app_data(body_limit.clone())
            .route(web::post().to(proxy_api::rerank_v1)),
    )
    .service(
        web::resource("/v2/rerank")
            .app_data(body_limit)
            .route(web::post().to(proxy_api::rerank_v2)),
    )
    .route("/health", web::get().to(service_api::health))
    .route("/metrics", web::get().to(service_api::metrics))
    .route("/openapi.json", web::get().to(service_api::openapi));
    if admin {
        cfg.route("/admin/nodes", web::get().to(admin_api::list_nodes))
            .route("/admin/nodes", web::post().to(admin_api::add_node))
            .route(
                "/admin/nodes/{id}",
                web::delete().to(admin_api::remove_node),
            )
            .route("/admin/ring", web::get().to(admin_api::ring));
    }
}
