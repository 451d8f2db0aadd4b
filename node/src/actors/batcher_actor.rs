//! The micro-batcher: gathers the pairs of concurrent requests into forward passes.
//!
//! # When a batch is sent to the model
//! - At once when batching is off (one request per forward pass), when `max_requests` requests
//!   are waiting, or when their tokens reach `max_tokens`.
//! - At once for a lone request: the model is idle, nothing else waits, and no other request
//!   arrived within the last window — under low load nobody waits for company that is not coming.
//! - Otherwise when the oldest waiting request has waited one window.
//! - While the model is busy, requests accumulate; when it finishes they go at once (they have
//!   already waited a forward pass). So the window bounds the wait only while the model is idle.
//!
//! # Dedup and cancellation
//! Every pair is tracked by its key from arrival until its score is out: a pair that arrives
//! while an identical one waits or computes joins it (within a request or across requests) and
//! gets the same result. A waiter whose request was cancelled (client gone) is dropped at flush
//! time, and a pair nobody waits for any more is not computed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, Recipient, SpawnHandle,
    WrapFuture,
};
use rerank_shared::pair_key::PairKey;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::model_actor::{ScorePairs, ScoredPairs};
use crate::cache::{CachedScore, LocalScoreCache};
use crate::engine::EncodedPair;
use crate::metrics::NodeMetrics;

/// How the batcher groups work.
#[derive(Debug, Clone, Copy)]
pub struct BatcherSettings {
    /// `MICRO_BATCH_ENABLED`: off means one request per forward pass.
    pub enabled: bool,
    /// `MICRO_BATCH_WINDOW_MS`: the longest a request waits for company while the model is idle.
    pub window: Duration,
    /// `MICRO_BATCH_MAX_SIZE`: requests per flush.
    pub max_requests: usize,
    /// `MAX_BATCH_TOKENS`: tokens per flush (the engine splits a flush into forward passes of
    /// the same budget).
    pub max_tokens: usize,
}

/// A pair's score with the time it spent waiting and computing.
#[derive(Debug, Clone, Copy)]
pub struct ScoredPair {
    pub raw_score: f32,
    pub tokens: u32,
    /// From arrival at the batcher to the start of its forward pass.
    pub queue_time: Duration,
    /// The forward passes of its flush.
    pub inference_time: Duration,
}

/// Why a pair got no score.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ComputeError {
    #[error("model failed: {0}")]
    Model(String),
    #[error("model actor unavailable: {0}")]
    Unavailable(String),
}

/// What each waiter receives.
pub type PairOutcome = Result<ScoredPair, ComputeError>;

/// Queue pairs (already tokenized, keyed) for scoring; one receiver per item, in order.
pub struct Enqueue {
    pub items: Vec<(PairKey, EncodedPair)>,
    /// Cancelled when the requesting client is gone.
    pub cancel: CancellationToken,
    /// The requester's span; the forward pass that computes its pairs is traced under the
    /// span of the flush's first request.
    pub span: tracing::Span,
}

impl Message for Enqueue {
    type Result = Vec<oneshot::Receiver<PairOutcome>>;
}

/// Counters behind `/health.micro_batcher`, readable without a message round trip.
#[derive(Debug, Default)]
pub struct BatcherStats {
    pub total_requests: AtomicU64,
    pub total_batches: AtomicU64,
    /// Requests summed over all flushes (for the average batch size).
    pub batched_requests: AtomicU64,
    pub pending_requests: AtomicU64,
}

impl BatcherStats {
    /// Mean requests per flush.
    pub fn avg_batch_size(&self) -> f64 {
        let batches = self.total_batches.load(Ordering::Relaxed);
        if batches == 0 {
            0.0
        } else {
            self.batched_requests.load(Ordering::Relaxed) as f64 / batches as f64
        }
    }
}

struct Waiter {
    tx: oneshot::Sender<PairOutcome>,
    cancel: CancellationToken,
    arrived: Instant,
}

impl Waiter {
    fn is_gone(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }
}

struct Entry {
    /// `Some` while queued, `None` once handed to the model.
    pair: Option<EncodedPair>,
    waiters: Vec<Waiter>,
}

struct QueuedRequest {
    keys: Vec<PairKey>,
    tokens: usize,
    arrived: Instant,
    span: tracing::Span,
}

/// See the module docs.
pub struct BatcherActor {
    settings: BatcherSettings,
    model: Recipient<ScorePairs>,
    cache: LocalScoreCache,
    metrics: Arc<NodeMetrics>,
    stats: Arc<BatcherStats>,
    entries: HashMap<PairKey, Entry>,
    queue: VecDeque<QueuedRequest>,
    pending_tokens: usize,
    busy: bool,
    last_arrival: Option<Instant>,
    timer: Option<SpawnHandle>,
}

impl BatcherActor {
    /// A batcher sending work to `model` and recording finished scores in `cache`.
    pub fn new(
        settings: BatcherSettings,
        model: Recipient<ScorePairs>,
        cache: LocalScoreCache,
        metrics: Arc<NodeMetrics>,
        stats: Arc<BatcherStats>,
    ) -> Self {
        Self {
            settings,
            model,
            cache,
            metrics,
            stats,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            pending_tokens: 0,
            busy: false,
            last_arrival: None,
            timer: None,
        }
    }

    fn should_flush_now(&self, lone: bool) -> bool {
        let s = &self.settings;
        let waited_window = self
            .queue
            .front()
            .is_some_and(|r| r.arrived.elapsed() >= s.window);
        !s.enabled
            || lone
            || self.queue.len() >= s.max_requests
            || self.pending_tokens >= s.max_tokens
            || waited_window
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, lone: bool) {
        if self.busy || self.queue.is_empty() {
            return;
        }
        if self.should_flush_now(lone) {
            self.flush(ctx);
        } else if self.timer.is_none() {
            let waited = self
                .queue
                .front()
                .map_or(Duration::ZERO, |r| r.arrived.elapsed());
            let wait = self.settings.window.saturating_sub(waited);
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.schedule(ctx, false);
            }));
        }
    }

    /// Takes the requests of the next flush off the queue.
    fn take_flush(&mut self) -> Vec<QueuedRequest> {
        let mut taken = Vec::new();
        let mut tokens = 0;
        while let Some(next) = self.queue.front() {
            let limit = if self.settings.enabled {
                self.settings.max_requests
            } else {
                1
            };
            let over_budget = !taken.is_empty() && tokens + next.tokens > self.settings.max_tokens;
            if taken.len() >= limit || over_budget {
                break;
            }
            tokens += next.tokens;
            if let Some(request) = self.queue.pop_front() {
                taken.push(request);
            }
        }
        self.pending_tokens = self.pending_tokens.saturating_sub(tokens);
        taken
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        loop {
            let requests = self.take_flush();
            if requests.is_empty() {
                break;
            }
            let started = Instant::now();
            let mut keys = Vec::new();
            let mut pairs = Vec::new();
            for key in requests.iter().flat_map(|r| r.keys.iter()) {
                let Some(entry) = self.entries.get_mut(key) else {
                    continue;
                };
                entry.waiters.retain(|w| !w.is_gone());
                if entry.waiters.is_empty() {
                    self.entries.remove(key);
                    self.metrics.pairs_dropped.inc();
                    continue;
                }
                if let Some(pair) = entry.pair.take() {
                    keys.push(*key);
                    pairs.push(pair);
                }
            }
            self.stats
                .pending_requests
                .store(self.queue.len() as u64, Ordering::Relaxed);
            if pairs.is_empty() {
                continue; // every waiter of this flush left; try the next requests
            }
            let pair_tokens: Vec<u32> = pairs
                .iter()
                .map(|p| u32::try_from(p.token_count()).unwrap_or(u32::MAX))
                .collect();
            let tokens: usize = pair_tokens.iter().map(|&t| t as usize).sum();
            self.stats.total_batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .batched_requests
                .fetch_add(requests.len() as u64, Ordering::Relaxed);
            self.metrics.batch_requests.observe(requests.len() as f64);
            self.metrics.batch_pairs.observe(pairs.len() as f64);
            self.metrics.batch_tokens.observe(tokens as f64);
            self.busy = true;
            let forward_span = tracing::info_span!(
                parent: &requests[0].span,
                "model.forward",
                batch.requests = requests.len(),
                batch.pairs = pairs.len(),
                batch.tokens = tokens,
            );
            let send = self.model.send(ScorePairs {
                pairs,
                enqueued_at: std::time::Instant::now(),
            });
            ctx.spawn(send.into_actor(self).map(move |result, act, ctx| {
                drop(forward_span); // the span covers the model's queue and its forward passes
                let outcome = match result {
                    Ok(Ok(scored)) => Ok(scored),
                    Ok(Err(e)) => Err(ComputeError::Model(e.to_string())),
                    Err(e) => Err(ComputeError::Unavailable(e.to_string())),
                };
                act.finish(keys, pair_tokens, started, outcome);
                act.busy = false;
                // Whatever queued during the forward pass goes now.
                if !act.queue.is_empty() {
                    act.flush(ctx);
                }
            }));
            return;
        }
    }

    fn finish(
        &mut self,
        keys: Vec<PairKey>,
        pair_tokens: Vec<u32>,
        started: Instant,
        outcome: Result<ScoredPairs, ComputeError>,
    ) {
        match outcome {
            Ok(scored) => {
                self.metrics.pairs_computed.inc_by(keys.len() as u64);
                self.metrics
                    .inference_time
                    .observe(scored.inference_time.as_secs_f64());
                for ((key, raw), tokens) in keys.iter().zip(&scored.raw_scores).zip(&pair_tokens) {
                    let tokens = *tokens;
                    // Cache before releasing the key, so no request can miss both.
                    self.cache.insert(*key, CachedScore { raw: *raw, tokens });
                    let Some(entry) = self.entries.remove(key) else {
                        continue;
                    };
                    for w in entry.waiters {
                        let queue_time = started.duration_since(w.arrived) + scored.queue_time;
                        self.metrics.queue_time.observe(queue_time.as_secs_f64());
                        let _ = w.tx.send(Ok(ScoredPair {
                            raw_score: *raw,
                            tokens,
                            queue_time,
                            inference_time: scored.inference_time,
                        }));
                    }
                }
            }
            Err(e) => {
                for key in &keys {
                    let Some(entry) = self.entries.remove(key) else {
                        continue;
                    };
                    for w in entry.waiters {
                        let _ = w.tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

impl Actor for BatcherActor {
    type Context = Context<Self>;
}

impl Handler<Enqueue> for BatcherActor {
    type Result = Vec<oneshot::Receiver<PairOutcome>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let mut receivers = Vec::with_capacity(msg.items.len());
        let mut new_keys = Vec::new();
        let mut tokens = 0;
        for (key, pair) in msg.items {
            let (tx, rx) = oneshot::channel();
            receivers.push(rx);
            let waiter = Waiter {
                tx,
                cancel: msg.cancel.clone(),
                arrived: now,
            };
            match self.entries.get_mut(&key) {
                Some(entry) => {
                    entry.waiters.push(waiter);
                    self.metrics.dedup_hits.inc();
                }
                None => {
                    tokens += pair.token_count();
                    self.entries.insert(
                        key,
                        Entry {
                            pair: Some(pair),
                            waiters: vec![waiter],
                        },
                    );
                    new_keys.push(key);
                }
            }
        }
        self.stats.total_requests.fetch_add(1, Ordering::Relaxed);
        if !new_keys.is_empty() {
            self.queue.push_back(QueuedRequest {
                keys: new_keys,
                tokens,
                arrived: now,
                span: msg.span,
            });
            self.pending_tokens += tokens;
        }
        self.stats
            .pending_requests
            .store(self.queue.len() as u64, Ordering::Relaxed);
        let quiet = self
            .last_arrival
            .is_none_or(|t| now.duration_since(t) >= self.settings.window);
        let lone = quiet && self.queue.len() == 1;
        self.last_arrival = Some(now);
        self.schedule(ctx, lone);
        receivers
    }
}
