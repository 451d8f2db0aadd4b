//! The coordinator's actors, one per file with its messages.
//!
//! - [`router_actor`]: owns the ring and the membership; answers "which nodes, in what order".
//! - [`node_client`]: one per node — forwards requests over a pooled HTTP client, counts
//!   in-flight requests, keeps a latency window, runs health checks and opens on failures.

pub mod node_client;
pub mod router_actor;

pub use node_client::{
    Forward, ForwardError, ForwardedResponse, NodeClient, NodeShared, NodeState,
};
pub use router_actor::{
    AddNode, Candidate, DrainNode, ForgetNode, GetRing, ListNodes, NodeSnapshot, NodeSource,
    RingView, Route, RouterActor, RouterSettings, SyncRegistry,
};
