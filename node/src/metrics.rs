//! Prometheus metrics of a node, registered in one registry that `GET /metrics` renders.

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};
use rerank_shared::telemetry::{render, seconds_buckets, HttpMetrics};

/// The node's metrics. Names are prefixed `rerank_` and documented in the README.
pub struct NodeMetrics {
    registry: Registry,
    /// HTTP requests and their wall time (`rerank_http_*`).
    pub http: Arc<HttpMetrics>,
    /// (query, document) pairs asked for.
    pub pairs_requested: IntCounter,
    /// Pairs that went through the model.
    pub pairs_computed: IntCounter,
    /// Tokens that went through the model (without padding).
    pub tokens_computed: IntCounter,
    /// Time a pair waited from arrival at the batcher to its forward pass.
    pub queue_time: Histogram,
    /// Time of each forward pass.
    pub inference_time: Histogram,
    /// Time spent tokenizing a request.
    pub tokenization_time: Histogram,
    /// Requests refused by admission control (429 by count or tokens, 413 over the budget).
    pub requests_rejected: IntCounter,
    /// Requests that passed `REQUEST_TIMEOUT_MS` (their remaining work dropped).
    pub requests_timed_out: IntCounter,
    /// Tokens admitted and not yet scored (against `MAX_QUEUED_TOKENS`).
    pub queued_tokens: IntGauge,
    /// Pairs answered from the in-process cache.
    pub local_cache_hits: IntCounter,
    /// Distinct pairs missing from the in-process cache.
    pub local_cache_misses: IntCounter,
    /// Pairs that joined an identical pair already waiting or computing.
    pub dedup_hits: IntCounter,
    /// Pairs dropped before computing because their clients went away.
    pub pairs_dropped: IntCounter,
    /// Requests per forward pass.
    pub batch_requests: Histogram,
    /// Distinct pairs per forward pass.
    pub batch_pairs: Histogram,
    /// Tokens per forward pass.
    pub batch_tokens: Histogram,
    /// Pairs found in Redis.
    pub redis_hits: IntCounter,
    /// Pairs looked up in Redis and not found.
    pub redis_misses: IntCounter,
    /// Failed or timed-out Redis calls.
    pub redis_errors: IntCounter,
    /// Pair locks this node won (it computes those pairs for the cluster).
    pub lock_wins: IntCounter,
    /// Pairs whose lock another node held (this node waited for them).
    pub lock_waits: IntCounter,
    /// Waits for other nodes' pairs, by how they ended (a wait may end several ways, one count
    /// each): `publish` / `poll` (pairs arrived, woken by the done channel or by the periodic
    /// re-read), `takeover` (an owner let its locks go unstored: computed here), `expiry` (a lock
    /// expired, or Redis failed: computed here).
    pub dedup_waits: IntCounterVec,
}

impl NodeMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http = Arc::new(HttpMetrics::register(&registry, "rerank_http")?);
        let pairs_requested = IntCounter::new(
            "rerank_pairs_requested_total",
            "Query-document pairs requested",
        )?;
        let pairs_computed =
            IntCounter::new("rerank_pairs_computed_total", "Pairs scored by the model")?;
        let tokens_computed = IntCounter::new(
            "rerank_tokens_computed_total",
            "Tokens run through the model",
        )?;
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(seconds_buckets()))
        };
        let queue_time = histogram(
            "rerank_queue_seconds",
            "Wait from batcher arrival to forward pass",
        )?;
        let inference_time = histogram("rerank_inference_seconds", "Time per forward pass")?;
        let tokenization_time = histogram(
            "rerank_tokenization_seconds",
            "Tokenization time per request",
        )?;
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let requests_rejected = counter(
            "rerank_requests_rejected_total",
            "Requests refused by admission (429 by count or tokens, 413 over the token budget)",
        )?;
        let requests_timed_out = counter(
            "rerank_requests_timed_out_total",
            "Requests past REQUEST_TIMEOUT_MS, their remaining work dropped",
        )?;
        let queued_tokens = IntGauge::new(
            "rerank_queued_tokens",
            "Tokens admitted and not yet scored (MAX_QUEUED_TOKENS bounds them)",
        )?;
        registry.register(Box::new(queued_tokens.clone()))?;
        let local_cache_hits = counter(
            "rerank_cache_hits_total",
            "Pairs answered from the local cache",
        )?;
        let local_cache_misses = counter(
            "rerank_cache_misses_total",
            "Distinct pairs missing from the local cache",
        )?;
        let dedup_hits = counter(
            "rerank_dedup_hits_total",
            "Pairs that joined an identical in-flight pair",
        )?;
        let pairs_dropped = counter(
            "rerank_pairs_dropped_total",
            "Pairs dropped because their clients left",
        )?;
        let sized = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        };
        let batch_requests = sized(
            "rerank_batch_requests",
            "Requests per forward pass",
            exponential_buckets(1.0, 2.0, 10)?,
        )?;
        let batch_pairs = sized(
            "rerank_batch_pairs",
            "Distinct pairs per forward pass",
            exponential_buckets(1.0, 2.0, 14)?,
        )?;
        let batch_tokens = sized(
            "rerank_batch_tokens",
            "Tokens per forward pass",
            exponential_buckets(16.0, 2.0, 16)?,
        )?;
        for c in [
            &requests_rejected,
            &requests_timed_out,
            &local_cache_hits,
            &local_cache_misses,
            &dedup_hits,
            &pairs_dropped,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        let redis_hits = counter("rerank_redis_hits_total", "Pairs found in Redis")?;
        let redis_misses = counter(
            "rerank_redis_misses_total",
            "Pairs looked up in Redis and not found",
        )?;
        let redis_errors = counter(
            "rerank_redis_errors_total",
            "Failed or timed-out Redis calls",
        )?;
        let lock_wins = counter(
            "rerank_lock_wins_total",
            "Pair locks won (computed here for the cluster)",
        )?;
        let lock_waits = counter(
            "rerank_lock_waits_total",
            "Pairs whose lock another node held",
        )?;
        let dedup_waits = IntCounterVec::new(
            Opts::new(
                "rerank_dedup_waits_total",
                "Waits for pairs computed by other nodes, by how they ended",
            ),
            &["ended"],
        )?;
        registry.register(Box::new(dedup_waits.clone()))?;
        for c in [
            &redis_hits,
            &redis_misses,
            &redis_errors,
            &lock_wins,
            &lock_waits,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        for h in [&batch_requests, &batch_pairs, &batch_tokens] {
            registry.register(Box::new(h.clone()))?;
        }
        registry.register(Box::new(pairs_requested.clone()))?;
        registry.register(Box::new(pairs_computed.clone()))?;
        registry.register(Box::new(tokens_computed.clone()))?;
        registry.register(Box::new(queue_time.clone()))?;
        registry.register(Box::new(inference_time.clone()))?;
        registry.register(Box::new(tokenization_time.clone()))?;
        Ok(Self {
            registry,
            http,
            pairs_requested,
            pairs_computed,
            tokens_computed,
            queue_time,
            inference_time,
            tokenization_time,
            requests_rejected,
            requests_timed_out,
            queued_tokens,
            local_cache_hits,
            local_cache_misses,
            dedup_hits,
            pairs_dropped,
            batch_requests,
            batch_pairs,
            batch_tokens,
            redis_hits,
            redis_misses,
            redis_errors,
            lock_wins,
            lock_waits,
            dedup_waits,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}
