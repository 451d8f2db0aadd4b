//! Prometheus metrics of the coordinator.

use std::sync::Arc;

use prometheus::{IntCounterVec, Opts, Registry};
use rerank_shared::telemetry::{render, HttpMetrics};

/// The coordinator's metrics, prefixed `rerank_coordinator_`.
pub struct CoordinatorMetrics {
    registry: Registry,
    /// Client requests by route and final status, and their wall time.
    pub http: Arc<HttpMetrics>,
    /// Attempts at nodes by node and outcome (`ok`; `retry`: the node answered 5xx or 429;
    /// `error`: unreachable or a broken answer; `timeout`).
    pub attempts: IntCounterVec,
}

impl CoordinatorMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http = Arc::new(HttpMetrics::register(&registry, "rerank_coordinator")?);
        let attempts = IntCounterVec::new(
            Opts::new(
                "rerank_coordinator_node_attempts_total",
                "Attempts at nodes by outcome",
            ),
            &["node", "outcome"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(Self {
            registry,
            http,
            attempts,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}
