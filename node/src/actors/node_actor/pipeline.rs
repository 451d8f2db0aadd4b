//! The request pipeline the node actor runs for each `Rerank`: admission, keys, the local
//! cache, the Redis tier's claims and waits, tokenization (the query once, cancellable),
//! admission by tokens, and the batcher. Kept apart from the actor and its messages so each
//! reads on its own.
//!
//! A request that splits long documents (`max_chunks_per_doc > 1`) is tokenized up front into
//! its documents' windows (how many there are is known only then); from there on, each window
//! is a unit like a document: keyed, cached, deduplicated across nodes and batched on its own.
//! A document's score is its best window's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rerank_shared::api::TruncationDirection;
use rerank_shared::pair_key::{ModelFingerprint, PairKey, TruncationKey};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{info_span, Instrument};

use super::{Rerank, RerankError, RerankOutcome};
use crate::actors::batcher_actor::{BatcherActor, Enqueue};
use crate::admission::{Admission, TokenBudget, TokensRefused};
use crate::cache::shared_tier::HeldLocks;
use crate::cache::{CachedScore, LocalScoreCache, SharedScoreCache};
use crate::metrics::NodeMetrics;
use rerank_engine::{ChunkOptions, DocumentWindow, EncodedPair, RerankBackend, TruncationOptions};
use rerank_shared::api::BestChunk;

/// Everything a request's future needs, shared with the spawned futures.
pub(super) struct Pipeline {
    pub(super) backend: Arc<dyn RerankBackend>,
    pub(super) fingerprint: ModelFingerprint,
    pub(super) cache: LocalScoreCache,
    /// The Redis tier, when `REDIS_ENABLED`.
    pub(super) shared: Option<Arc<SharedScoreCache>>,
    pub(super) batcher: Addr<BatcherActor>,
    pub(super) admission: Admission,
    pub(super) tokens: TokenBudget,
    pub(super) metrics: Arc<NodeMetrics>,
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

/// What a request computes: one key per unit (a document, or a window of one).
struct Work<'a> {
    msg: &'a Rerank,
    keys: Vec<PairKey>,
    /// The windows' inputs, tokenized up front, one per key; `None` when the units are the
    /// documents themselves, tokenized only when they miss the caches.
    windows: Option<Vec<EncodedPair>>,
}

/// A windowed document's windows: where its units start among the request's keys, and each
/// window's place in the document.
struct WindowedDocument {
    first_unit: usize,
    windows: Vec<BestChunk>,
}

/// Splits `documents` into windows (the query once), checking `cancel` between documents and
/// refusing (413) as soon as the windows' tokens pass `token_limit`, so one request cannot
/// build more windows than the node would ever admit.
fn tokenize_windows(
    backend: &dyn RerankBackend,
    msg: (&str, Option<&str>, &[String]),
    opts: &TruncationOptions,
    chunks: &ChunkOptions,
    token_limit: usize,
    cancel: &CancellationToken,
) -> Result<Vec<Vec<DocumentWindow>>, RerankError> {
    let (query, instruction, documents) = msg;
    let prepared = backend.prepare_query(query, instruction, opts)?;
    let mut windowed = Vec::with_capacity(documents.len());
    let mut tokens = 0usize;
    for document in documents {
        if cancel.is_cancelled() {
            return Err(RerankError::Cancelled);
        }
        let windows = backend.encode_windows(&prepared, document, opts, chunks)?;
        tokens += windows.iter().map(|w| w.pair.token_count()).sum::<usize>();
        if tokens > token_limit {
            return Err(TokensRefused::TooLarge {
                tokens,
                limit: token_limit,
            }
            .into());
        }
        windowed.push(windows);
    }
    Ok(windowed)
}

/// The truncation options a request is tokenized under: its own, except that a request split
/// into windows truncates (the query to half the limit; windows never exceed the limit), since
/// splitting is how it asked long input to be handled.
fn windowed_options(msg: &Rerank) -> TruncationOptions {
    TruncationOptions {
        truncate: msg.options.truncate || msg.chunks.is_some(),
        ..msg.options
    }
}

/// The index of the best of `scores` (the first of equals; NaN counts as the lowest).
fn best_of(scores: &[f32]) -> usize {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if key(s) > key(scores[best]) {
            best = i;
        }
    }
    best
}

/// Tokenizes `documents` against `query` (the query once), checking `cancel` between documents
/// so a departed or timed-out request stops costing CPU on the blocking pool.
fn tokenize(
    backend: &dyn RerankBackend,
    query: &str,
    instruction: Option<&str>,
    documents: &[String],
    opts: &TruncationOptions,
    cancel: &CancellationToken,
) -> Result<Vec<EncodedPair>, RerankError> {
    let prepared = backend.prepare_query(query, instruction, opts)?;
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
    /// The task instruction `msg` is scored under: its own, else the model's default; `None`
    /// for models that take none (encoders), whose scores and cache keys ignore it.
    fn instruction<'a>(&'a self, msg: &'a Rerank) -> Option<&'a str> {
        let default = self.backend.info().instruction.as_deref()?;
        Some(msg.instruction.as_deref().unwrap_or(default))
    }

    pub(super) async fn rerank(&self, msg: Rerank) -> Result<RerankOutcome, RerankError> {
        let started = Instant::now();
        let admitted = self.admission.admit().await;
        if admitted.is_err() {
            self.metrics.requests_rejected.inc();
        }
        let _permit = admitted?;
        let opts = windowed_options(&msg);
        let truncation = TruncationKey {
            truncate: opts.truncate,
            direction: match opts.direction {
                rerank_engine::TruncationDirection::Left => TruncationDirection::Left,
                rerank_engine::TruncationDirection::Right => TruncationDirection::Right,
            },
            max_tokens_per_doc: opts.max_tokens_per_doc,
        };
        let document_keys: Vec<PairKey> = msg
            .documents
            .iter()
            .map(|d| {
                PairKey::new(
                    &self.fingerprint,
                    &msg.query,
                    self.instruction(&msg),
                    d,
                    &truncation,
                )
            })
            .collect();
        let mut timings = Timings::default();
        let (work, windowed) = match &msg.chunks {
            None => (
                Work {
                    msg: &msg,
                    keys: document_keys,
                    windows: None,
                },
                None,
            ),
            Some(chunks) => {
                let tokenize_started = Instant::now();
                let windows = self.tokenize_windows(&msg, *chunks).await?;
                timings.tokenization = tokenize_started.elapsed();
                let mut keys = Vec::new();
                let mut pairs = Vec::new();
                let mut documents = Vec::with_capacity(windows.len());
                for (document_key, windows) in document_keys.iter().zip(windows) {
                    documents.push(WindowedDocument {
                        first_unit: keys.len(),
                        windows: windows
                            .iter()
                            .map(|w| BestChunk {
                                index: w.index,
                                start: w.chars.start,
                                end: w.chars.end,
                            })
                            .collect(),
                    });
                    for window in windows {
                        keys.push(document_key.window(window.tokens));
                        pairs.push(window.pair);
                    }
                }
                (
                    Work {
                        msg: &msg,
                        keys,
                        windows: Some(pairs),
                    },
                    Some(documents),
                )
            }
        };
        let keys = &work.keys;
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

        if !missing.is_empty() {
            match &self.shared {
                Some(shared) => {
                    self.resolve_shared(shared, &work, missing, &mut scores, &mut timings)
                        .await?
                }
                None => {
                    let (computed, t) = self.compute(&work, &missing).await?;
                    timings.merge(t);
                    scores.extend(computed);
                }
            }
        }

        let mut unit_scores = Vec::with_capacity(keys.len());
        let mut total_tokens = 0usize;
        for key in keys {
            let found = scores
                .get(key)
                .ok_or_else(|| RerankError::Internal("a pair got no score".into()))?;
            unit_scores.push(found.raw);
            total_tokens += found.tokens as usize;
        }
        let (raw_scores, best_chunks) = match windowed {
            None => (unit_scores, None),
            Some(documents) => {
                let mut raw = Vec::with_capacity(documents.len());
                let mut best = Vec::with_capacity(documents.len());
                for document in documents {
                    let span = document.first_unit..document.first_unit + document.windows.len();
                    let scores = unit_scores
                        .get(span)
                        .ok_or_else(|| RerankError::Internal("a window got no score".into()))?;
                    let i = best_of(scores);
                    raw.push(scores.get(i).copied().unwrap_or(f32::NAN));
                    best.push(document.windows.get(i).copied().ok_or_else(|| {
                        RerankError::Internal("a document without windows".into())
                    })?);
                }
                (raw, Some(best))
            }
        };
        Ok(RerankOutcome {
            raw_scores,
            best_chunks,
            total_tokens,
            tokenization_time: timings.tokenization,
            queue_time: timings.queue,
            inference_time: timings.inference,
            total_time: started.elapsed(),
        })
    }

    /// Tokenizes the request's documents into windows on the blocking pool.
    async fn tokenize_windows(
        &self,
        msg: &Rerank,
        chunks: ChunkOptions,
    ) -> Result<Vec<Vec<DocumentWindow>>, RerankError> {
        let backend = self.backend.clone();
        let query = msg.query.clone();
        let instruction = self.instruction(msg).map(str::to_owned);
        let documents = msg.documents.clone();
        let opts = windowed_options(msg);
        let cancel = msg.cancel.clone();
        let limit = self.tokens.limit();
        let windows = tokio::task::spawn_blocking(move || {
            tokenize_windows(
                &*backend,
                (&query, instruction.as_deref(), &documents),
                &opts,
                &chunks,
                limit,
                &cancel,
            )
        })
        .instrument(info_span!(
            "tokenize.windows",
            documents = msg.documents.len()
        ))
        .await
        .map_err(|e| RerankError::Internal(format!("tokenization task: {e}")))?;
        if matches!(windows, Err(RerankError::Tokens(_))) {
            self.metrics.requests_rejected.inc();
        }
        windows
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
        work: &Work<'_>,
        missing: Vec<usize>,
        scores: &mut Scores,
        timings: &mut Timings,
    ) -> Result<(), RerankError> {
        let keys = &work.keys;
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
            let (computed, t) = self.compute(work, &unresolved).await?;
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
                        running.push(self.compute_shared_job(shared, work, &index_of, job));
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
        work: &Work<'_>,
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
                let (computed, t) = self.compute(work, &indices(locks.keys())).await?;
                locks.store(&computed).await;
                Ok((computed, t))
            }
            SharedJob::Unlocked(pairs) => {
                let (computed, t) = self.compute(work, &indices(&pairs)).await?;
                shared.store(&computed, None).await;
                Ok((computed, t))
            }
        }
    }

    /// Scores the units at `indices` through the batcher, tokenizing them first when they are
    /// documents.
    async fn compute(
        &self,
        work: &Work<'_>,
        indices: &[usize],
    ) -> Result<(Vec<(PairKey, CachedScore)>, Timings), RerankError> {
        let mut timings = Timings::default();
        if indices.is_empty() {
            return Ok((Vec::new(), timings));
        }
        let (msg, keys) = (work.msg, &work.keys);
        let pairs = match &work.windows {
            Some(windows) => indices
                .iter()
                .map(|&i| {
                    windows
                        .get(i)
                        .cloned()
                        .ok_or_else(|| RerankError::Internal("a window without input".into()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                let tokenize_started = Instant::now();
                let pairs = self.tokenize_documents(msg, indices).await?;
                timings.tokenization = tokenize_started.elapsed();
                self.metrics
                    .tokenization_time
                    .observe(timings.tokenization.as_secs_f64());
                pairs
            }
        };

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

    /// Tokenizes the documents at `indices` on the blocking pool (the query once).
    async fn tokenize_documents(
        &self,
        msg: &Rerank,
        indices: &[usize],
    ) -> Result<Vec<EncodedPair>, RerankError> {
        let backend = self.backend.clone();
        let query = msg.query.clone();
        let instruction = self.instruction(msg).map(str::to_owned);
        let opts = msg.options;
        let cancel = msg.cancel.clone();
        let docs: Vec<String> = indices.iter().map(|&i| msg.documents[i].clone()).collect();
        tokio::task::spawn_blocking(move || {
            tokenize(
                &*backend,
                &query,
                instruction.as_deref(),
                &docs,
                &opts,
                &cancel,
            )
        })
        .instrument(info_span!("tokenize", pairs = indices.len()))
        .await
        .map_err(|e| RerankError::Internal(format!("tokenization task: {e}")))?
    }
}
