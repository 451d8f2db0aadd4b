//! `GET /health` and `GET /info` bodies. `/health` keeps the field names of the original guide,
//! which operators already script against.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Routing;

/// The model block of `/health`: what is in effect, not what was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelHealth {
    pub id: String,
    /// The model family: `bert`, `roberta`, `xlm-roberta`, `modernbert`, `deberta-v2`, `qwen3`.
    pub family: String,
    pub architecture: String,
    /// `cross-encoder` or `bi-encoder`.
    pub kind: String,
    pub device: String,
    pub dtype: String,
    pub quantization: String,
}

/// The micro-batcher block of `/health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MicroBatcherHealth {
    pub enabled: bool,
    pub total_requests: u64,
    pub total_batches: u64,
    pub avg_batch_size: f64,
    pub window_ms: f64,
    pub max_batch_size: usize,
    pub pending_requests: u64,
}

/// The shared-cache block of `/health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DistributedCacheHealth {
    pub enabled: bool,
    pub connected: bool,
    pub cached_entries: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the node can score.
    pub status: String,
    pub node_id: String,
    pub model: ModelHealth,
    pub micro_batcher: MicroBatcherHealth,
    pub distributed_cache: DistributedCacheHealth,
}

/// Present (`true`) on a node's answers while it drains after SIGTERM: its `/health` 503 and
/// its refusals of rerank requests. A coordinator that sees it stops routing to the node at
/// once, without waiting for its next health check or for the node's registration to lapse.
pub const DRAINING_HEADER: &str = "x-node-draining";

/// Why a node's `/health` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableStatus {
    /// Its pipeline did not respond.
    Unavailable,
    /// It is shutting down (SIGTERM/SIGINT): it takes no new requests and finishes those in
    /// flight within `SHUTDOWN_GRACE_MS`.
    Draining,
}

/// `GET /health` when the node cannot take requests (503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthUnavailable {
    /// `unavailable` or `draining`.
    pub status: UnavailableStatus,
    /// Why, for a person to read.
    pub error: String,
}

/// One node in the coordinator's `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorNodeSummary {
    pub id: String,
    pub url: String,
    /// Routing's view of the node: `healthy`, `unhealthy` or `draining`.
    pub state: String,
}

/// The coordinator's `GET /health`: 200 with `ok` (every node healthy) or `degraded` (some),
/// 503 with `unavailable` (none) or `draining` (the coordinator is shutting down).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CoordinatorHealth {
    /// `ok`, `degraded`, `unavailable` or `draining`.
    pub status: String,
    /// Always `coordinator`: tells a coordinator's answer from a node's.
    pub role: String,
    /// How requests are spread: `consistent_hash` or `round_robin`.
    #[schema(value_type = String)]
    pub routing: Routing,
    pub nodes_total: usize,
    pub nodes_healthy: usize,
    pub nodes: Vec<CoordinatorNodeSummary>,
}

/// `GET /info`: TEI's fields plus our model details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Info {
    pub model_id: String,
    pub model_type: String,
    /// The model family: `bert`, `roberta`, `xlm-roberta`, `modernbert`, `deberta-v2`, `qwen3`.
    pub family: String,
    pub architecture: String,
    pub kind: String,
    pub dtype: String,
    pub quantization: String,
    pub device: String,
    pub max_input_length: usize,
    pub max_client_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_parallel_requests: usize,
    pub num_labels: Option<usize>,
    pub pooling: Option<String>,
    /// Bytes of the encoder's weights as stored (depends on `QUANTIZATION`).
    pub weight_bytes: usize,
    /// What runs the encoder layers: `candle`, or `onednn (<kernel family>)`.
    pub kernels: String,
    pub version: String,
    pub node_id: String,
}

/// A node's `GET /admin/stats`: what the coordinator's `GET /admin/nodes` shows per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeStats {
    pub node_id: String,
    pub model: ModelHealth,
    pub micro_batcher: MicroBatcherHealth,
    pub distributed_cache: DistributedCacheHealth,
    pub local_cache_entries: u64,
    pub running_requests: u64,
    pub queued_requests: u64,
    pub pairs_requested: u64,
    pub pairs_computed: u64,
    pub local_cache_hits: u64,
    pub redis_hits: u64,
    pub dedup_hits: u64,
    pub requests_rejected: u64,
}
