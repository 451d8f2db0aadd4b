//! The node's front door: every scoring request and status query from the HTTP layer goes here.
//!
//! A request is admitted by count (or refused with 429), its pairs are keyed and looked up in
//! the local cache, only the distinct missing ones are tokenized (on the blocking pool, the
//! query once, stopping early if the request is cancelled), their tokens are admitted against
//! `MAX_QUEUED_TOKENS` (429, or 413 for a request over the whole budget), and they go to the
//! batcher; the scores come back in request order. The work runs in a future the actor spawns
//! under the request's deadline (`REQUEST_TIMEOUT_MS`); the request's cancellation token —
//! cancelled when the HTTP client goes away or the deadline passes — ends the wait early, and
//! the batcher then drops the pairs nobody else waits for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use rerank_shared::api::health::{DistributedCacheHealth, MicroBatcherHealth};
use rerank_shared::pair_key::ModelFingerprint;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod pipeline;

use pipeline::Pipeline;

use super::batcher_actor::{BatcherActor, BatcherSettings, BatcherStats, ComputeError};
use crate::admission::{Admission, Overloaded, TokenBudget, TokensRefused};
use crate::cache::{LocalScoreCache, SharedScoreCache};
use crate::metrics::NodeMetrics;
use rerank_engine::{ChunkOptions, EngineError, RerankBackend, TruncationOptions};
use rerank_shared::api::BestChunk;

/// Score `documents` against `query`.
pub struct Rerank {
    pub query: String,
    pub documents: Vec<String>,
    /// A decoder reranker's task instruction for this request (encoders ignore it).
    pub instruction: Option<String>,
    pub options: TruncationOptions,
    /// Score each document by its best window (`max_chunks_per_doc > 1`); `None` truncates.
    pub chunks: Option<ChunkOptions>,
    /// Cancelled when the client is gone.
    pub cancel: CancellationToken,
    /// The HTTP request's span: the pipeline's spans (cache, dedup wait, batch queue, model
    /// forward) are its children.
    pub span: tracing::Span,
}

/// Raw scores of a request's pairs and where its time went.
#[derive(Debug, Clone)]
pub struct RerankOutcome {
    /// One raw score per document, in request order (a windowed document's best window's).
    pub raw_scores: Vec<f32>,
    /// Where each document's best window lies, in request order, when documents were split.
    pub best_chunks: Option<Vec<BestChunk>>,
    /// Tokens of all pairs, special tokens included (`usage.total_tokens`).
    pub total_tokens: usize,
    pub tokenization_time: Duration,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub total_time: Duration,
}

/// Why a request got no scores.
#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// Admission by work (`MAX_QUEUED_TOKENS`) refused the request's tokens.
    #[error(transparent)]
    Tokens(#[from] TokensRefused),
    /// The request was not finished within `REQUEST_TIMEOUT_MS`; its remaining work was dropped.
    #[error(
        "the request did not finish within {}ms (REQUEST_TIMEOUT_MS); its remaining work was \
         dropped", .0.as_millis()
    )]
    DeadlineExceeded(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error("the client went away")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Message for Rerank {
    type Result = Result<RerankOutcome, RerankError>;
}

/// Ask for the `/health` blocks of the pipeline: the micro-batcher and the shared cache.
pub struct GetPipelineHealth;

/// The pipeline's part of `/health`.
pub struct PipelineHealth {
    pub micro_batcher: MicroBatcherHealth,
    pub distributed_cache: DistributedCacheHealth,
    pub local_cache_entries: u64,
    pub running_requests: u64,
    pub queued_requests: u64,
}

impl Message for GetPipelineHealth {
    type Result = PipelineHealth;
}

/// Settings of the node actor.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub batcher: BatcherSettings,
    pub max_parallel_requests: usize,
    pub max_queued_requests: usize,
    /// `MAX_QUEUED_TOKENS`: tokens admitted and not yet scored.
    pub max_queued_tokens: usize,
    /// `REQUEST_TIMEOUT_MS`: a request's deadline, from its arrival at this actor.
    pub request_timeout: Duration,
}

/// See the module docs.
pub struct NodeActor {
    pipeline: Arc<Pipeline>,
    settings: NodeSettings,
    batcher_stats: Arc<BatcherStats>,
}

/// The components a node actor wires together.
pub struct NodeParts {
    pub backend: Arc<dyn RerankBackend>,
    pub fingerprint: ModelFingerprint,
    pub cache: LocalScoreCache,
    /// The Redis tier, when `REDIS_ENABLED`.
    pub shared: Option<Arc<SharedScoreCache>>,
    pub batcher: Addr<BatcherActor>,
    pub batcher_stats: Arc<BatcherStats>,
    pub metrics: Arc<NodeMetrics>,
}

impl NodeActor {
    /// Wires a node actor to its batcher and caches.
    pub fn new(parts: NodeParts, settings: NodeSettings) -> Self {
        let admission =
            Admission::new(settings.max_parallel_requests, settings.max_queued_requests);
        Self {
            pipeline: Arc::new(Pipeline {
                backend: parts.backend,
                fingerprint: parts.fingerprint,
                cache: parts.cache,
                shared: parts.shared,
                batcher: parts.batcher,
                admission,
                tokens: TokenBudget::new(
                    settings.max_queued_tokens,
                    parts.metrics.queued_tokens.clone(),
                ),
                metrics: parts.metrics,
            }),
            settings,
            batcher_stats: parts.batcher_stats,
        }
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;
}

impl Handler<Rerank> for NodeActor {
    type Result = ResponseFuture<Result<RerankOutcome, RerankError>>;

    fn handle(&mut self, msg: Rerank, _: &mut Context<Self>) -> Self::Result {
        let pipeline = self.pipeline.clone();
        let span = msg.span.clone();
        let timeout = self.settings.request_timeout;
        Box::pin(
            async move {
                let cancel = msg.cancel.clone();
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout(timeout, pipeline.rerank(msg)) => outcome,
                    _ = cancel.cancelled() => return Err(RerankError::Cancelled),
                };
                outcome.unwrap_or_else(|_| {
                    // Whatever of it still waits in the batcher is dropped before the next pass.
                    cancel.cancel();
                    pipeline.metrics.requests_timed_out.inc();
                    Err(RerankError::DeadlineExceeded(timeout))
                })
            }
            .instrument(span),
        )
    }
}

impl Handler<GetPipelineHealth> for NodeActor {
    type Result = actix::MessageResult<GetPipelineHealth>;

    fn handle(&mut self, _: GetPipelineHealth, _: &mut Context<Self>) -> Self::Result {
        let stats = &self.batcher_stats;
        let b = &self.settings.batcher;
        let micro_batcher = MicroBatcherHealth {
            enabled: b.enabled,
            total_requests: stats.total_requests.load(Ordering::Relaxed),
            total_batches: stats.total_batches.load(Ordering::Relaxed),
            avg_batch_size: stats.avg_batch_size(),
            window_ms: b.window.as_secs_f64() * 1000.0,
            max_batch_size: b.max_requests,
            pending_requests: stats.pending_requests.load(Ordering::Relaxed)
                + self.pipeline.admission.queued_count() as u64,
        };
        let distributed_cache = self
            .pipeline
            .shared
            .as_ref()
            .map(|s| s.health())
            .unwrap_or_default();
        let admission = &self.pipeline.admission;
        actix::MessageResult(PipelineHealth {
            micro_batcher,
            distributed_cache,
            local_cache_entries: self.pipeline.cache.len(),
            running_requests: admission.running_count() as u64,
            queued_requests: admission.queued_count() as u64,
        })
    }
}
