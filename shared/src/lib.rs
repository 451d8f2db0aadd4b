//! Types shared by the rerank-cluster node and coordinator.
//!
//! # Layout
//!
//! - [`api`]: the client API's wire types, one module per shape: [`api::tei`] for
//!   text-embeddings-inference's `POST /rerank`, [`api::cohere`] for the Cohere/Jina
//!   `POST /v1/rerank` and `/v2/rerank`, and [`api::health`] for `GET /health` and `GET /info`.
//!   The coordinator forwards these unchanged, so both sides must agree on them exactly.
//! - [`config`]: node settings, layered defaults → TOML file → the environment names of the
//!   original guide (`PORT`, `REDIS_ENABLED`, …), validated at start-up.
//! - [`hash_ring`]: the coordinator's consistent-hash ring with bounded loads.
//! - [`admin_auth`]: the bearer-token check of admin endpoints.
//! - [`telemetry`]: logging set-up and the HTTP metrics middleware both servers run.
//! - [`request_id`]: the `x-request-id` middleware both servers run.
//! - [`registry`]: cluster membership in Redis, signed with `CLUSTER_SECRET` so that a Redis
//!   writer without it cannot add a node; read with one `HGETALL`, shared by node and coordinator.
//! - [`drain`]: graceful shutdown on SIGTERM/SIGINT for both servers: `/health` says
//!   `draining`, the server leaves, waits for others to notice, stops accepting and finishes
//!   in-flight requests within the grace period.
//! - [`pair_key`]: cache keys of (model configuration, query, document, truncation) pairs,
//!   identical on every node so that nodes can share results.

pub mod admin_auth;
pub mod api;
pub mod config;
pub mod drain;
pub mod hash_ring;
pub mod pair_key;
pub mod registry;
pub mod request_id;
pub mod telemetry;
