//! A rerank-cluster node: one complete reranking server.
//!
//! # Layout
//!
//! - The model itself (loading, tokenization, forward passes) is the `rerank-engine` crate, seen
//!   only through its `RerankBackend` trait and `load`.
//! - [`actors`]: the actix pipeline `NodeActor` (admission, cache, keys) → `BatcherActor`
//!   (micro-batching, in-flight dedup) → `ModelActor` (the model on its own thread, so forward
//!   passes never block the HTTP event loop).
//! - [`admission`]: the running/queued request limits behind 429s.
//! - [`cache`]: the in-process score cache.
//! - [`scoring`]: what both API shapes share: limits, the call into the node actor, ranking.
//! - [`api`]: the HTTP resources (TEI and Cohere shapes, health, info, metrics, OpenAPI), their
//!   error formats and middleware.
//! - [`metrics`]: the Prometheus registry.
//! - [`registration`]: this node's signed registration in the cluster registry (Redis), kept
//!   while it runs and withdrawn first thing when it drains (SIGTERM: `rerank_shared::drain`).
//! - [`state`]: what handlers share.
//! - [`server`]: how a node starts: model, actors, HTTP.
//! - [`bench`]: the engine benchmark, with PyTorch (and with `--peers` ONNX Runtime and
//!   OpenVINO) measured beside it.
//! - [`eval`]: the accuracy report: each precision mode's scores and rankings against f32's,
//!   with weight memory, peak RSS and speed, every mode in a process of its own.

pub mod actors;
pub mod admission;
pub mod api;
pub mod bench;
pub mod cache;
pub mod eval;
pub mod metrics;
pub mod registration;
pub mod scoring;
pub mod server;
pub mod state;
