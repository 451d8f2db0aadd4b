//! A rerank-cluster node: one complete reranking server.
//!
//! # Layout
//!
//! - [`engine`]: model loading (local directory or hub), tokenization, the candle forward pass
//!   of BERT/XLM-RoBERTa cross-encoders and sentence-transformers bi-encoders, behind the
//!   [`engine::RerankBackend`] trait.
//! - [`actors`]: the actix actors; today the [`actors::ModelActor`], which owns the model on its
//!   own thread so forward passes never block the HTTP event loop.
//! - [`scoring`]: one request's path through tokenization and the model actor, shared by both
//!   API shapes.
//! - [`api`]: the HTTP resources (TEI and Cohere shapes, health, info, metrics, OpenAPI), their
//!   error formats and middleware.
//! - [`metrics`]: the Prometheus registry.
//! - [`state`]: what handlers share.
//! - [`server`]: how a node starts: model, actors, HTTP.
//! - [`bench`]: the engine benchmark, with PyTorch measured beside it.

pub mod actors;
pub mod api;
pub mod bench;
pub mod engine;
pub mod metrics;
pub mod scoring;
pub mod server;
pub mod state;
