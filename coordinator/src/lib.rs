//! The rerank-cluster coordinator: the one address clients use for a cluster of nodes.
//!
//! # Layout
//!
//! - [`actors`]: the `RouterActor` (ring, membership, candidate order) and one `NodeClient` per
//!   node (in-flight count, latency window, health checks, passive failure detection).
//! - [`forward`]: one attempt at one node, bounded in time, counted in flight exactly while it
//!   runs.
//! - [`api`]: the client API routed with failover, the admin API behind its token guard,
//!   health/metrics/OpenAPI, and the one error type all of them answer with.
//! - [`registry`]: nodes joining and leaving through Redis registrations signed with
//!   `CLUSTER_SECRET`.
//! - [`dns_discovery`]: nodes as the addresses a name resolves to (`COORDINATOR_NODES_DNS`),
//!   re-resolved periodically, the last good set kept through resolver failures.
//! - [`metrics`]: Prometheus metrics (HTTP ones recorded by `rerank_shared::telemetry`).
//! - [`state`]: what handlers share; [`server`]: start-up.
//!
//! The ring itself (consistent hashing with bounded load) lives in `rerank_shared::hash_ring`.

pub mod actors;
pub mod api;
pub mod dns_discovery;
pub mod forward;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod state;
