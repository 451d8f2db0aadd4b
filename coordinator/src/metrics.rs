//! Prometheus metrics of the coordinator.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// The coordinator's metrics, prefixed `rerank_coordinator_`.
pub struct CoordinatorMetrics {
    registry: Registry,
    /// Client requests by route and final status.
    pub requests: IntCounterVec,
    /// Client request wall time by route.
    pub request_duration: HistogramVec,
    /// Attempts at nodes by node and outcome (`ok`, `retry`, `error`).
    pub attempts: IntCounterVec,
}

impl CoordinatorMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "rerank_coordinator_requests_total",
                "Client requests by route and status",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "rerank_coordinator_request_duration_seconds",
                "Client request wall time",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 17)?),
            &["route"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "rerank_coordinator_node_attempts_total",
                "Attempts at nodes by outcome",
            ),
            &["node", "outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_duration,
            attempts,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
