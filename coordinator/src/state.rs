//! What the coordinator's handlers share.

use std::sync::Arc;

use actix::Addr;
use rerank_shared::config::CoordinatorConfig;
use rerank_shared::drain::Draining;

use crate::actors::RouterActor;
use crate::metrics::CoordinatorMetrics;

/// Shared state of a running coordinator, handed to handlers as `web::Data<CoordinatorState>`.
pub struct CoordinatorState {
    pub config: CoordinatorConfig,
    pub router: Addr<RouterActor>,
    /// The pooled client every request to a node goes through (forwards, `/admin/stats`).
    pub http: reqwest::Client,
    pub metrics: Arc<CoordinatorMetrics>,
    /// Set on SIGTERM/SIGINT: `/health` answers 503 `draining` from then on.
    pub draining: Draining,
}
