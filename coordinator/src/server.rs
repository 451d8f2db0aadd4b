//! Start-up: the router with its static nodes, the registry and DNS watchers, HTTP with its
//! bounds (`HTTP_READ_TIMEOUT_MS` for a request's head, `MAX_CONNECTIONS` per worker), and the
//! drain on SIGTERM/SIGINT (`rerank_shared::drain`).

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::{middleware::from_fn, web, App, HttpServer};
use rerank_shared::config::{ConfigError, CoordinatorConfig};
use rerank_shared::drain::{serve_until_drained, DrainTiming, Draining, StopRequests};
use rerank_shared::registry::ClusterKey;

use crate::actors::{AddNode, NodeSource, RouterActor, RouterSettings};
use crate::api;
use crate::dns_discovery::{self, DnsTarget};
use crate::metrics::CoordinatorMetrics;
use crate::state::CoordinatorState;

/// Why the coordinator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Runs each request in a `gateway.request` span (continuing the client's trace, if any).
async fn traced_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    rerank_shared::telemetry::traced("gateway.request", req, next).await
}

/// Serves until SIGTERM or SIGINT, then drains: `/health` answers 503 `draining` while client
/// requests are still routed for `SHUTDOWN_NOTICE_MS` (nobody else would retry them), then the
/// listener closes and in-flight requests finish within `SHUTDOWN_GRACE_MS`.
pub async fn serve(config: CoordinatorConfig) -> Result<(), CoordinatorError> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        // Shorter than a node's keep-alive (HTTP_KEEP_ALIVE_MS, 15 s by default), so the pool
        // never hands out a connection the node is closing.
        .pool_idle_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let router = RouterActor::new(
        RouterSettings {
            routing: config.routing,
            epsilon: config.load_bound_epsilon,
            virtual_nodes: config.virtual_nodes,
            health_interval: Duration::from_millis(config.health_check_interval_ms.max(50)),
        },
        http.clone(),
    )
    .start();
    for url in config.static_nodes() {
        let _ = router
            .send(AddNode {
                url,
                source: NodeSource::Static,
            })
            .await;
    }
    if let Some((name, port)) = config.dns_nodes()? {
        let interval = Duration::from_millis(config.coordinator_nodes_dns_interval_ms);
        actix_web::rt::spawn(dns_discovery::watch(
            DnsTarget { name, port },
            interval,
            router.downgrade(),
        ));
    }
    if config.redis_enabled {
        match config.cluster_secret.as_deref().and_then(ClusterKey::new) {
            Some(key) => {
                let client = redis::Client::open(config.redis_url.as_str())?;
                actix_web::rt::spawn(crate::registry::watch(client, key, router.downgrade()));
            }
            None => tracing::warn!(
                "REDIS_ENABLED without CLUSTER_SECRET: node registrations in Redis are ignored \
                 (only COORDINATOR_NODES and the admin API add nodes)"
            ),
        }
    }
    let metrics = Arc::new(CoordinatorMetrics::new()?);
    let http_metrics = web::Data::from(metrics.http.clone());
    let draining = Draining::default();
    let state = web::Data::new(CoordinatorState {
        config: config.clone(),
        router,
        http,
        metrics,
        draining: draining.clone(),
    });
    let timing = DrainTiming::from_millis(config.shutdown_notice_ms, config.shutdown_grace_ms);
    let admin = config.admin_token.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(http_metrics.clone())
            .wrap(from_fn(rerank_shared::telemetry::http_metrics))
            .wrap(from_fn(traced_request))
            .wrap(from_fn(rerank_shared::request_id::request_id))
            .configure(|cfg| api::configure(cfg, admin))
    })
    // The head of a request within HTTP_READ_TIMEOUT_MS (408 and closed beyond); the proxy
    // bounds the body by the same setting.
    .client_request_timeout(Duration::from_millis(config.http_read_timeout_ms.max(1)))
    .max_connections(config.max_connections.max(1))
    // SIGTERM and SIGINT drain through `serve_until_drained`, not actix-web's own handling.
    .disable_signals()
    .shutdown_timeout(timing.server_shutdown_timeout_secs())
    .bind((config.host.as_str(), config.port))?;
    for addr in server.addrs() {
        tracing::info!(%addr, "coordinator listening");
    }
    // A coordinator registers nowhere: it has nothing to leave but the load balancer's view,
    // which its `/health` takes care of.
    let stops = StopRequests::from_signals()?;
    serve_until_drained(server.run(), &draining, timing, async {}, stops).await?;
    Ok(())
}
