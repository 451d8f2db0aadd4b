//! The scheduler: turns the pairs of concurrent requests into forward passes, one at a time.
//!
//! # One forward pass at a time, drawn fairly
//! The model thread is sent one forward pass (at most `MAX_BATCH_TOKENS` tokens) and the next
//! is chosen only when it returns. Each pass is drawn across the waiting requests in turn: every
//! request in the pass gets an equal share of the token budget first (at least one pair), then
//! the leftover goes to whoever has more, and the requests served move to the back of the line.
//! So a small request that arrives while a big one is being scored waits at most about one pass,
//! however big the other is, and no request starves: each gets its share of every pass it is in.
//!
//! # When a pass is sent to the model
//! - At once when batching is off (one request per forward pass), when `max_requests` requests
//!   are waiting, or when their tokens reach `max_tokens`.
//! - At once for a lone request: the model is idle, nothing else waits, and no other request
//!   arrived within the last window — under low load nobody waits for company that is not coming.
//! - Otherwise when the oldest waiting request has waited one window.
//! - While the model is busy, requests accumulate; when a pass returns, the next goes at once
//!   (they have already waited a forward pass). So the window bounds the wait only while the
//!   model is idle.
//!
//! # Dedup and cancellation
//! Every pair is tracked by its key from arrival until its score is out: a pair that arrives
//! while an identical one waits or computes joins it (within a request or across requests) and
//! gets the same result. A request whose client left (its cancellation token fired, or it
//! stopped listening) has its remaining pairs dropped before the next pass, except those another
//! request still waits for; `rerank_pairs_dropped_total` counts them.

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
use crate::metrics::NodeMetrics;
use rerank_engine::EncodedPair;

/// How the batcher groups work.
#[derive(Debug, Clone, Copy)]
pub struct BatcherSettings {
    /// `MICRO_BATCH_ENABLED`: off means one request per forward pass.
    pub enabled: bool,
    /// `MICRO_BATCH_WINDOW_MS`: the longest a request waits for company while the model is idle.
    pub window: Duration,
    /// `MICRO_BATCH_MAX_SIZE`: requests per forward pass.
    pub max_requests: usize,
    /// `MAX_BATCH_TOKENS`: tokens per forward pass.
    pub max_tokens: usize,
}

/// A pair's score with the time it spent waiting and computing.
#[derive(Debug, Clone, Copy)]
pub struct ScoredPair {
    pub raw_score: f32,
    pub tokens: u32,
    /// From arrival at the batcher to the start of its forward pass.
    pub queue_time: Duration,
    /// Its forward pass.
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
    /// The requester's span; a forward pass is traced under the span of the first request
    /// it serves.
    pub span: tracing::Span,
}

impl Message for Enqueue {
    type Result = Vec<oneshot::Receiver<PairOutcome>>;
}

/// Counters behind `/health.micro_batcher`, readable without a message round trip.
#[derive(Debug, Default)]
pub struct BatcherStats {
    pub total_requests: AtomicU64,
    /// Forward passes sent to the model.
    pub total_batches: AtomicU64,
    /// Requests summed over all passes (for the average batch size).
    pub batched_requests: AtomicU64,
    pub pending_requests: AtomicU64,
}

impl BatcherStats {
    /// Mean requests per forward pass.
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

/// A request's pairs not yet sent to the model, in its order.
struct PendingRequest {
    keys: VecDeque<PairKey>,
    arrived: Instant,
    span: tracing::Span,
    cancel: CancellationToken,
    /// The last pass that carried some of its pairs.
    served_in: Option<u64>,
}

/// What one forward pass carries.
#[derive(Default)]
struct Pass {
    keys: Vec<PairKey>,
    pairs: Vec<EncodedPair>,
    tokens: usize,
    requests: usize,
    span: Option<tracing::Span>,
}

impl Pass {
    fn push(&mut self, key: PairKey, pair: EncodedPair) {
        self.tokens += pair.token_count();
        self.keys.push(key);
        self.pairs.push(pair);
    }
}

/// See the module docs.
pub struct BatcherActor {
    settings: BatcherSettings,
    model: Recipient<ScorePairs>,
    cache: LocalScoreCache,
    metrics: Arc<NodeMetrics>,
    stats: Arc<BatcherStats>,
    entries: HashMap<PairKey, Entry>,
    /// Requests with pairs still to send, in the order they are served next.
    queue: VecDeque<PendingRequest>,
    pending_tokens: usize,
    /// Forward passes drawn so far (the id of the last one).
    passes: u64,
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
            passes: 0,
            busy: false,
            last_arrival: None,
            timer: None,
        }
    }

    fn should_send_now(&self, lone: bool) -> bool {
        let s = &self.settings;
        let waited_window = self.queue.iter().any(|r| r.arrived.elapsed() >= s.window);
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
        if self.should_send_now(lone) {
            self.send_next_pass(ctx);
        } else if self.timer.is_none() {
            let waited = self
                .queue
                .iter()
                .map(|r| r.arrived.elapsed())
                .max()
                .unwrap_or(Duration::ZERO);
            let wait = self.settings.window.saturating_sub(waited);
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.schedule(ctx, false);
            }));
        }
    }

    /// Whether `key` still has someone waiting for it. A pair nobody waits for any more is
    /// dropped here — the one place that counts `pairs_dropped` and gives back its tokens.
    fn keep_if_awaited(&mut self, key: &PairKey) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        entry.waiters.retain(|w| !w.is_gone());
        if !entry.waiters.is_empty() {
            return true;
        }
        if let Some(pair) = self.entries.remove(key).and_then(|e| e.pair) {
            self.pending_tokens = self.pending_tokens.saturating_sub(pair.token_count());
        }
        self.metrics.pairs_dropped.inc();
        false
    }

    /// Drops the keys nobody waits for any more from the requests whose clients left (keeping
    /// those another request shares); removes requests with nothing left to send.
    fn drop_departed(&mut self) {
        for index in 0..self.queue.len() {
            if !self.queue[index].cancel.is_cancelled() {
                continue;
            }
            let keys = std::mem::take(&mut self.queue[index].keys);
            let kept = keys
                .into_iter()
                .filter(|key| self.keep_if_awaited(key))
                .collect();
            self.queue[index].keys = kept;
        }
        self.queue.retain(|r| !r.keys.is_empty());
    }

    /// Takes the next pair of the `index`-th waiting request if it fits: within `share` for the
    /// request (its first pair always does) and within the pass's budget (the pass's first pair
    /// always does). Pairs nobody waits for are dropped on the way. `false` when nothing more
    /// of this request fits.
    fn take_next(
        &mut self,
        index: usize,
        share: usize,
        taken: &mut usize,
        pass: &mut Pass,
    ) -> bool {
        loop {
            let Some(&key) = self.queue.get(index).and_then(|r| r.keys.front()) else {
                return false;
            };
            if !self.keep_if_awaited(&key) {
                self.queue[index].keys.pop_front();
                continue;
            }
            let Some(entry) = self.entries.get_mut(&key) else {
                return false; // kept above, so present
            };
            let tokens = entry.pair.as_ref().map_or(0, EncodedPair::token_count);
            let over_share = *taken > 0 && *taken + tokens > share;
            let over_budget =
                !pass.keys.is_empty() && pass.tokens + tokens > self.settings.max_tokens;
            if over_share || over_budget {
                return false;
            }
            if let Some(pair) = entry.pair.take() {
                *taken += tokens;
                pass.push(key, pair);
            }
            self.queue[index].keys.pop_front();
            self.pending_tokens = self.pending_tokens.saturating_sub(tokens);
            return true;
        }
    }

    /// Draws the next forward pass across the waiting requests (see the module docs).
    fn take_pass(&mut self) -> Pass {
        // The requests the last pass served go behind those that waited meanwhile — including
        // any that arrived during it, so a newcomer's turn comes with the very next pass.
        for _ in 0..self.queue.len() {
            match self.queue.front() {
                Some(r) if r.served_in == Some(self.passes) => {
                    if let Some(r) = self.queue.pop_front() {
                        self.queue.push_back(r);
                    }
                }
                _ => break,
            }
        }
        self.drop_departed();
        self.passes += 1;
        let limit = if self.settings.enabled {
            self.settings.max_requests.max(1)
        } else {
            1
        };
        let served = self.queue.len().min(limit);
        let mut pass = Pass::default();
        if served == 0 {
            return pass;
        }
        let share = (self.settings.max_tokens / served).max(1);
        let mut taken = vec![0usize; served];
        for (index, taken) in taken.iter_mut().enumerate() {
            while self.take_next(index, share, taken, &mut pass) {}
        }
        // The leftover of the budget, to the same requests in the same order.
        for (index, taken) in taken.iter_mut().enumerate() {
            while self.take_next(index, usize::MAX, taken, &mut pass) {}
        }
        for (index, &t) in taken.iter().enumerate() {
            let Some(request) = self.queue.get_mut(index) else {
                continue;
            };
            if t > 0 {
                request.served_in = Some(self.passes);
                pass.requests += 1;
                if pass.span.is_none() {
                    pass.span = Some(request.span.clone());
                }
            }
        }
        self.queue.retain(|r| !r.keys.is_empty());
        pass
    }

    fn send_next_pass(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        loop {
            let pass = self.take_pass();
            self.stats
                .pending_requests
                .store(self.queue.len() as u64, Ordering::Relaxed);
            if pass.keys.is_empty() {
                if self.queue.is_empty() {
                    return;
                }
                continue; // every pair drawn had lost its waiters; draw again
            }
            let started = Instant::now();
            let pair_tokens: Vec<u32> = pass
                .pairs
                .iter()
                .map(|p| u32::try_from(p.token_count()).unwrap_or(u32::MAX))
                .collect();
            self.stats.total_batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .batched_requests
                .fetch_add(pass.requests as u64, Ordering::Relaxed);
            self.metrics.batch_requests.observe(pass.requests as f64);
            self.metrics.batch_pairs.observe(pass.pairs.len() as f64);
            self.metrics.batch_tokens.observe(pass.tokens as f64);
            self.busy = true;
            let forward_span = tracing::info_span!(
                parent: pass.span.as_ref().and_then(|s| s.id()),
                "model.forward",
                batch.requests = pass.requests,
                batch.pairs = pass.pairs.len(),
                batch.tokens = pass.tokens,
            );
            let keys = pass.keys;
            let send = self.model.send(ScorePairs {
                pairs: pass.pairs,
                enqueued_at: std::time::Instant::now(),
            });
            ctx.spawn(send.into_actor(self).map(move |result, act, ctx| {
                drop(forward_span); // the span covers the model's queue and its forward pass
                let outcome = match result {
                    Ok(Ok(scored)) => Ok(scored),
                    Ok(Err(e)) => Err(ComputeError::Model(e.to_string())),
                    Err(e) => Err(ComputeError::Unavailable(e.to_string())),
                };
                act.finish(keys, pair_tokens, started, outcome);
                act.busy = false;
                // Whatever waits goes now: it has waited a forward pass already.
                if !act.queue.is_empty() {
                    act.send_next_pass(ctx);
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
            self.queue.push_back(PendingRequest {
                keys: new_keys.into(),
                arrived: now,
                span: msg.span,
                cancel: msg.cancel,
                served_in: None,
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
