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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rerank_shared::api::health::{DistributedCacheHealth, MicroBatcherHealth};
use rerank_shared::pair_key::{ModelFingerprint, PairKey, TruncationKey};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{info_span, Instrument};

use super::batcher_actor::{BatcherActor, BatcherSettings, BatcherStats, ComputeError, Enqueue};
use crate::admission::{Admission, Overloaded, TokenBudget, TokensRefused};
use crate::cache::shared_tier::HeldLocks;
use crate::cache::{CachedScore, LocalScoreCache, SharedScoreCache};
use crate::engine::{EncodedPair, EngineError, RerankBackend, TruncationOptions};
use crate::metrics::NodeMetrics;

/// Score `documents` against `query`.
pub struct Rerank {
    pub query: String,
    pub documents: Vec<String>,
    pub options: TruncationOptions,
    /// Cancelled when the client is gone.
    pub cancel: CancellationToken,
    /// The HTTP request's span: the pipeline's spans (cache, dedup wait, batch queue, model
    /// forward) are its children.
    pub span: tracing::Span,
}

/// Raw scores of a request's pairs and where its time went.
#[derive(Debug, Clone)]
pub struct RerankOutcome {
    /// One raw score per document, in request order.
    pub raw_scores: Vec<f32>,
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

/// Everything a request's future needs, shared with the spawned futures.
struct Pipeline {
    backend: Arc<dyn RerankBackend>,
    fingerprint: ModelFingerprint,
    cache: LocalScoreCache,
    /// The Redis tier, when `REDIS_ENABLED`.
    shared: Option<Arc<SharedScoreCache>>,
    batcher: Addr<BatcherActor>,
    admission: Admission,
    tokens: TokenBudget,
    metrics: Arc<NodeMetrics>,
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

/// Where a request's time went, merged over its computations.
#[derive(Debug, Clone, Copy, Default)]
struct Timings {
    tokenization: Duration,
    queue: Duration,
    inference: Duration,
}

impl Timings {
    fn merge(&mut self, other: Timings) {
        self.tokenization += other.tokenization;
        self.queue = self.queue.max(other.queue);
        self.inference = self.inference.max(other.inference);
    }
}

/// What a request computes for the Redis tier: pairs whose locks it holds, or pairs it computes
/// without a lock (their owner's lock outlived its deadline, or Redis stopped answering).
enum SharedJob {
    Locked(HeldLocks),
    Unlocked(Vec<PairKey>),
}

type Scores = HashMap<PairKey, CachedScore>;

/// Tokenizes `documents` against `query` (the query once), checking `cancel` between documents
/// so a departed or timed-out request stops costing CPU on the blocking pool.
fn tokenize(
    backend: &dyn RerankBackend,
    query: &str,
    documents: &[String],
    opts: &TruncationOptions,
    cancel: &CancellationToken,
) -> Result<Vec<EncodedPair>, RerankError> {
    let prepared = backend.prepare_query(query, opts)?;
    let mut pairs = Vec::with_capacity(documents.len());
    for document in documents {
        if cancel.is_cancelled() {
            return Err(RerankError::Cancelled);
        }
        pairs.push(backend.encode_document(&prepared, document, opts)?);
    }
    Ok(pairs)
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

        // Local cache first; `missing` holds the first document index of each distinct miss.
        let mut scores: Scores = HashMap::new();
        let mut seen: HashSet<PairKey> = HashSet::new();
        let mut missing: Vec<usize> = Vec::new();
        let local_span = info_span!("cache.local", pairs = keys.len(), hits = Empty).entered();
        for (i, key) in keys.iter().enumerate() {
            if !seen.insert(*key) {
                continue;
            }
            match self.cache.get(key) {
                Some(hit) => {
                    scores.insert(*key, hit);
                }
                None => missing.push(i),
            }
        }
        let cache_hits = scores.len();
        local_span.record("hits", cache_hits);
        drop(local_span);
        self.metrics.local_cache_hits.inc_by(cache_hits as u64);
        self.metrics.local_cache_misses.inc_by(missing.len() as u64);

        let mut timings = Timings::default();
        if !missing.is_empty() {
            match &self.shared {
                Some(shared) => {
                    self.resolve_shared(shared, &msg, &keys, missing, &mut scores, &mut timings)
                        .await?
                }
                None => {
                    let (computed, t) = self.compute(&msg, &keys, &missing).await?;
                    timings.merge(t);
                    scores.extend(computed);
                }
            }
        }

        let mut raw_scores = Vec::with_capacity(keys.len());
        let mut total_tokens = 0usize;
        for key in &keys {
            let found = scores
                .get(key)
                .ok_or_else(|| RerankError::Internal("a pair got no score".into()))?;
            raw_scores.push(found.raw);
            total_tokens += found.tokens as usize;
        }
        Ok(RerankOutcome {
            raw_scores,
            total_tokens,
            tokenization_time: timings.tokenization,
            queue_time: timings.queue,
            inference_time: timings.inference,
            total_time: started.elapsed(),
        })
    }

    /// Resolves local misses through Redis (the protocol: `cache/shared_tier/dedup.rs`):
    /// stored pairs are read; free pairs are locked, computed here and stored (and published)
    /// as soon as they are computed, whatever else this request waits for; pairs another node
    /// is computing are awaited, and taken over (computed here) when their owner gives them up
    /// or its lock expires. A failed computation fails the request and, by dropping its
    /// [`HeldLocks`], hands its pairs to the waiting nodes.
    async fn resolve_shared(
        &self,
        shared: &Arc<SharedScoreCache>,
        msg: &Rerank,
        keys: &[PairKey],
        missing: Vec<usize>,
        scores: &mut Scores,
        timings: &mut Timings,
    ) -> Result<(), RerankError> {
        let missing_keys: Vec<PairKey> = missing.iter().map(|&i| keys[i]).collect();
        let mut unresolved = Vec::new();
        let lookup = shared
            .get_many(&missing_keys)
            .instrument(info_span!("cache.redis", pairs = missing_keys.len()));
        for (&i, found) in missing.iter().zip(lookup.await) {
            match found {
                Some(value) => {
                    self.cache.insert(keys[i], value);
                    scores.insert(keys[i], value);
                }
                None => unresolved.push(i),
            }
        }
        if unresolved.is_empty() {
            return Ok(());
        }
        let unresolved_keys: Vec<PairKey> = unresolved.iter().map(|&i| keys[i]).collect();
        let claim = shared
            .claim(&unresolved_keys)
            .instrument(info_span!(
                "cache.redis.lock",
                pairs = unresolved_keys.len()
            ))
            .await;
        let Some(claim) = claim else {
            // Redis did not answer: nobody coordinates, compute everything here.
            let (computed, t) = self.compute(msg, keys, &unresolved).await?;
            timings.merge(t);
            shared.store(&computed, None).await;
            scores.extend(computed);
            return Ok(());
        };
        for (key, value) in claim.stored {
            self.cache.insert(key, value);
            scores.insert(key, value);
        }
        let index_of: HashMap<PairKey, usize> = unresolved.iter().map(|&i| (keys[i], i)).collect();
        let (jobs, mut job_queue) = tokio::sync::mpsc::unbounded_channel();
        if !claim.won.keys().is_empty() {
            let _ = jobs.send(SharedJob::Locked(claim.won));
        }
        let mut wait = claim.wait;
        let wait_span = info_span!("cache.redis.wait", pairs = wait.pending());
        let waiting = async move {
            let mut arrived = Vec::new();
            while let Some(step) = wait.next().await {
                arrived.extend(step.arrived);
                if let Some(locks) = step.taken_over {
                    let _ = jobs.send(SharedJob::Locked(locks));
                }
                if !step.expired.is_empty() {
                    let _ = jobs.send(SharedJob::Unlocked(step.expired));
                }
            }
            Ok::<_, RerankError>(arrived)
        }
        .instrument(wait_span);
        // Each job is computed and stored on its own, as soon as it is known: never after a wait.
        let computing = async {
            let mut running = FuturesUnordered::new();
            let mut computed = Vec::new();
            let mut t = Timings::default();
            loop {
                tokio::select! {
                    Some(job) = job_queue.recv() => {
                        running.push(self.compute_shared_job(shared, msg, keys, &index_of, job));
                    }
                    Some(done) = running.next() => {
                        let (c, jt) = done?;
                        computed.extend(c);
                        t.merge(jt);
                    }
                    else => break,
                }
            }
            Ok::<_, RerankError>((computed, t))
        };
        let ((computed, t), arrived) = tokio::try_join!(computing, waiting)?;
        timings.merge(t);
        scores.extend(computed);
        for (key, value) in arrived {
            self.cache.insert(key, value);
            scores.insert(key, value);
        }
        Ok(())
    }

    /// Computes one [`SharedJob`] and stores (and publishes) its scores at once; locked pairs'
    /// locks go with the store. On failure the job's locks are released and announced.
    async fn compute_shared_job(
        &self,
        shared: &SharedScoreCache,
        msg: &Rerank,
        keys: &[PairKey],
        index_of: &HashMap<PairKey, usize>,
        job: SharedJob,
    ) -> Result<(Vec<(PairKey, CachedScore)>, Timings), RerankError> {
        let indices = |pairs: &[PairKey]| -> Vec<usize> {
            pairs
                .iter()
                .filter_map(|k| index_of.get(k).copied())
                .collect()
        };
        match job {
            SharedJob::Locked(locks) => {
                let (computed, t) = self.compute(msg, keys, &indices(locks.keys())).await?;
                locks.store(&computed).await;
                Ok((computed, t))
            }
            SharedJob::Unlocked(pairs) => {
                let (computed, t) = self.compute(msg, keys, &indices(&pairs)).await?;
                shared.store(&computed, None).await;
                Ok((computed, t))
            }
        }
    }

    /// Tokenizes the documents at `indices` and scores them through the batcher.
    async fn compute(
        &self,
        msg: &Rerank,
        keys: &[PairKey],
        indices: &[usize],
    ) -> Result<(Vec<(PairKey, CachedScore)>, Timings), RerankError> {
        let mut timings = Timings::default();
        if indices.is_empty() {
            return Ok((Vec::new(), timings));
        }
        let tokenize_started = Instant::now();
        let backend = self.backend.clone();
        let query = msg.query.clone();
        let opts = msg.options;
        let cancel = msg.cancel.clone();
        let docs: Vec<String> = indices.iter().map(|&i| msg.documents[i].clone()).collect();
        let pairs =
            tokio::task::spawn_blocking(move || tokenize(&*backend, &query, &docs, &opts, &cancel))
                .instrument(info_span!("tokenize", pairs = indices.len()))
                .await
                .map_err(|e| RerankError::Internal(format!("tokenization task: {e}")))??;
        timings.tokenization = tokenize_started.elapsed();
        self.metrics
            .tokenization_time
            .observe(timings.tokenization.as_secs_f64());

        // Admission by work: the reservation is held until these pairs are scored.
        let tokens: usize = pairs.iter().map(EncodedPair::token_count).sum();
        let _reservation = self.tokens.reserve(tokens).inspect_err(|_| {
            self.metrics.requests_rejected.inc();
        })?;

        let items = indices.iter().map(|&i| keys[i]).zip(pairs).collect();
        let receivers = self
            .batcher
            .send(Enqueue {
                items,
                cancel: msg.cancel.clone(),
                span: tracing::Span::current(),
            })
            .await
            .map_err(|e| RerankError::Internal(format!("batcher unavailable: {e}")))?;
        let mut computed = Vec::with_capacity(indices.len());
        let received_all = join_all(receivers)
            .instrument(info_span!("batch.queue", pairs = indices.len()))
            .await;
        for (&i, received) in indices.iter().zip(received_all) {
            let scored =
                received.map_err(|_| RerankError::Internal("batcher dropped a pair".into()))??;
            timings.queue = timings.queue.max(scored.queue_time);
            timings.inference = timings.inference.max(scored.inference_time);
            computed.push((
                keys[i],
                CachedScore {
                    raw: scored.raw_score,
                    tokens: scored.tokens,
                },
            ));
        }
        Ok((computed, timings))
    }
}
