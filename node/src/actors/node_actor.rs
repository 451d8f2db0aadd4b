//! The node's front door: every scoring request and status query from the HTTP layer goes here.
//!
//! A request is admitted (or refused with 429), its pairs are keyed and looked up in the local
//! cache, only the distinct missing ones are tokenized (on the blocking pool) and handed to the
//! batcher, and the scores come back in request order. The work runs in a future the actor
//! spawns; the request's cancellation token — cancelled when the HTTP client goes away — ends
//! the wait early, and the batcher then drops pairs nobody else waits for.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use futures_util::future::join_all;
use rerank_shared::api::health::MicroBatcherHealth;
use rerank_shared::pair_key::{ModelFingerprint, PairKey, TruncationKey};
use tokio_util::sync::CancellationToken;

use super::batcher_actor::{BatcherActor, BatcherSettings, BatcherStats, ComputeError, Enqueue};
use crate::admission::{Admission, Overloaded};
use crate::cache::LocalScoreCache;
use crate::engine::{EngineError, RerankBackend, TruncationOptions};
use crate::metrics::NodeMetrics;

/// Score `documents` against `query`.
pub struct Rerank {
    pub query: String,
    pub documents: Vec<String>,
    pub options: TruncationOptions,
    /// Cancelled when the client is gone.
    pub cancel: CancellationToken,
}

/// Raw scores of a request's pairs and where its time went.
#[derive(Debug, Clone)]
pub struct RerankOutcome {
    /// One raw score per document, in request order.
    pub raw_scores: Vec<f32>,
    /// Tokens of all pairs, special tokens included (`usage.total_tokens`).
    pub total_tokens: usize,
    /// Pairs answered from the local cache.
    pub cache_hits: usize,
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

/// Ask for the micro-batcher's counters.
pub struct GetBatcherHealth;

impl Message for GetBatcherHealth {
    type Result = MicroBatcherHealth;
}

/// Settings of the node actor.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub batcher: BatcherSettings,
    pub max_parallel_requests: usize,
    pub max_queued_requests: usize,
}

/// Everything a request's future needs, shared with the spawned futures.
struct Pipeline {
    backend: Arc<dyn RerankBackend>,
    fingerprint: ModelFingerprint,
    cache: LocalScoreCache,
    batcher: Addr<BatcherActor>,
    admission: Admission,
    metrics: Arc<NodeMetrics>,
}

/// See the module docs.
pub struct NodeActor {
    pipeline: Arc<Pipeline>,
    settings: NodeSettings,
    batcher_stats: Arc<BatcherStats>,
}

impl NodeActor {
    /// Wires a node actor to its batcher.
    pub fn new(
        backend: Arc<dyn RerankBackend>,
        fingerprint: ModelFingerprint,
        cache: LocalScoreCache,
        batcher: Addr<BatcherActor>,
        batcher_stats: Arc<BatcherStats>,
        metrics: Arc<NodeMetrics>,
        settings: NodeSettings,
    ) -> Self {
        let admission =
            Admission::new(settings.max_parallel_requests, settings.max_queued_requests);
        Self {
            pipeline: Arc::new(Pipeline {
                backend,
                fingerprint,
                cache,
                batcher,
                admission,
                metrics,
            }),
            settings,
            batcher_stats,
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
        Box::pin(async move {
            let cancel = msg.cancel.clone();
            tokio::select! {
                outcome = pipeline.rerank(msg) => outcome,
                _ = cancel.cancelled() => Err(RerankError::Cancelled),
            }
        })
    }
}

impl Handler<GetBatcherHealth> for NodeActor {
    type Result = actix::MessageResult<GetBatcherHealth>;

    fn handle(&mut self, _: GetBatcherHealth, _: &mut Context<Self>) -> Self::Result {
        let stats = &self.batcher_stats;
        let b = &self.settings.batcher;
        actix::MessageResult(MicroBatcherHealth {
            enabled: b.enabled,
            total_requests: stats.total_requests.load(Ordering::Relaxed),
            total_batches: stats.total_batches.load(Ordering::Relaxed),
            avg_batch_size: stats.avg_batch_size(),
            window_ms: b.window.as_secs_f64() * 1000.0,
            max_batch_size: b.max_requests,
            pending_requests: stats.pending_requests.load(Ordering::Relaxed)
                + self.pipeline.admission.queued_count() as u64,
        })
    }
}

impl Pipeline {
    async fn rerank(&self, msg: Rerank) -> Result<RerankOutcome, RerankError> {
        let started = Instant::now();
        let admitted = self.admission.admit().await;
        if admitted.is_err() {
            self.metrics.requests_rejected.inc();
        }
        let _permit = admitted?;
        let opts = msg.options;
        let truncation = TruncationKey {
            truncate: opts.truncate,
            direction: opts.direction,
            max_tokens_per_doc: opts.max_tokens_per_doc,
        };
        let keys: Vec<PairKey> = msg
            .documents
            .iter()
            .map(|d| PairKey::new(&self.fingerprint, &msg.query, d, &truncation))
            .collect();
        self.metrics.pairs_requested.inc_by(keys.len() as u64);

        // Cache lookups, then the distinct keys still missing (first document of each).
        let mut scores: HashMap<PairKey, (f32, u32)> = HashMap::new();
        let mut seen: HashSet<PairKey> = HashSet::new();
        let mut missing: Vec<usize> = Vec::new();
        let mut cache_hits = 0;
        for (i, key) in keys.iter().enumerate() {
            if !seen.insert(*key) {
                continue;
            }
            match self.cache.get(key) {
                Some(hit) => {
                    cache_hits += 1;
                    scores.insert(*key, (hit.raw, hit.tokens));
                }
                None => missing.push(i),
            }
        }
        self.metrics.local_cache_hits.inc_by(cache_hits as u64);
        self.metrics.local_cache_misses.inc_by(missing.len() as u64);

        let mut tokenization_time = Duration::ZERO;
        let mut queue_time = Duration::ZERO;
        let mut inference_time = Duration::ZERO;
        if !missing.is_empty() {
            let tokenize_started = Instant::now();
            let backend = self.backend.clone();
            let query = msg.query.clone();
            let docs: Vec<String> = missing.iter().map(|&i| msg.documents[i].clone()).collect();
            let pairs = tokio::task::spawn_blocking(move || {
                let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
                backend.encode(&query, &docs, &opts)
            })
            .await
            .map_err(|e| RerankError::Internal(format!("tokenization task: {e}")))??;
            tokenization_time = tokenize_started.elapsed();
            self.metrics
                .tokenization_time
                .observe(tokenization_time.as_secs_f64());

            let items = missing.iter().map(|&i| keys[i]).zip(pairs).collect();
            let receivers = self
                .batcher
                .send(Enqueue {
                    items,
                    cancel: msg.cancel.clone(),
                })
                .await
                .map_err(|e| RerankError::Internal(format!("batcher unavailable: {e}")))?;
            for (&i, received) in missing.iter().zip(join_all(receivers).await) {
                let scored = received
                    .map_err(|_| RerankError::Internal("batcher dropped a pair".into()))??;
                queue_time = queue_time.max(scored.queue_time);
                inference_time = inference_time.max(scored.inference_time);
                scores.insert(keys[i], (scored.raw_score, scored.tokens));
            }
        }

        let mut raw_scores = Vec::with_capacity(keys.len());
        let mut total_tokens = 0usize;
        for key in &keys {
            let (raw, tokens) = scores
                .get(key)
                .copied()
                .ok_or_else(|| RerankError::Internal("a pair got no score".into()))?;
            raw_scores.push(raw);
            total_tokens += tokens as usize;
        }
        Ok(RerankOutcome {
            raw_scores,
            total_tokens,
            cache_hits,
            tokenization_time,
            queue_time,
            inference_time,
            total_time: started.elapsed(),
        })
    }
}
