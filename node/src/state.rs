//! What every handler shares: settings, the model and its actor, metrics.

use std::sync::Arc;

use actix::Addr;
use rerank_shared::config::NodeConfig;
use rerank_shared::drain::Draining;

use crate::actors::NodeActor;
use crate::metrics::NodeMetrics;
use rerank_engine::RerankBackend;

/// Shared state of a running node, handed to handlers as `web::Data<NodeState>`.
pub struct NodeState {
    pub config: NodeConfig,
    /// This node's identity in a cluster.
    pub node_id: String,
    /// The loaded model, for its description; scoring goes through `node`.
    pub backend: Arc<dyn RerankBackend>,
    /// The actor every scoring request goes through.
    pub node: Addr<NodeActor>,
    pub metrics: Arc<NodeMetrics>,
    /// Set on SIGTERM/SIGINT: `/health` and new rerank requests answer 503 from then on.
    pub draining: Draining,
}
