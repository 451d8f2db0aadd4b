//! The rerank-cluster coordinator: the one address clients use for a cluster of nodes.
//!
//! # Layout
//!
//! - [`actors`]: the `RouterActor` (ring, membership, candidate order) and one `NodeClient` per
//!   node (pooled HTTP, in-flight count, latency window, health checks, passive failure
//!   detection).
//! - [`api`]: the client API routed with failover, the admin API, health/metrics/OpenAPI.
//! - [`registry`]: nodes joining and leaving through their Redis registrations.
//! - [`metrics`]: Prometheus metrics (HTTP ones recorded by `rerank_shared::telemetry`).
//! - [`state`]: what handlers share; [`server`]: start-up.
//!
//! The ring itself (consistent hashing with bounded load) lives in `rerank_shared::hash_ring`.

pub mod actors;
pub mod api;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod state;
