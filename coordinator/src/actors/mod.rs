//! The coordinator's actors, one per file with its messages.
//!
//! - [`router_actor`]: owns the ring and the membership; answers "which nodes, in what order".
//! - [`node_client`]: one per node — its counters (in-flight requests, latency window, state)
//!   and its health checks; it stops when the node leaves.

pub mod node_client;
pub mod router_actor;

pub use node_client::{NodeClient, NodeShared, NodeState, Retire};
pub use router_actor::{
    AddNode, DrainNode, ForgetNode, GetRing, ListNodes, NodeSnapshot, NodeSource, RingView, Route,
    RouterActor, RouterSettings, SyncDns, SyncRegistry,
};
