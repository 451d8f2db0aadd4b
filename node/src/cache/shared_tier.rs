//! The Redis tier shared by every node: scores with a TTL, a lock per pair being computed, and
//! a pub/sub channel that wakes nodes waiting for a pair another node computes.
//!
//! Keys live under `rr:{model fingerprint}:` so two models or precision modes never mix:
//! `…:s:{pair}` holds `"{raw} {tokens}"`, `…:l:{pair}` a lock token, and `…:done` is the channel
//! on which an owner announces the pairs it just stored, or the locks it gave up without storing.
//! [`dedup`] holds the protocol built on them: claims, held locks, waits.
//!
//! Redis is an accelerator, never a dependency: every call is bounded by a short timeout, a
//! failure opens a [`CircuitBreaker`] so later requests skip Redis at no cost, and a background
//! probe reconnects and closes it. Callers treat "no answer" as a miss and compute locally.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rerank_shared::api::health::DistributedCacheHealth;
use rerank_shared::pair_key::{ModelFingerprint, PairKey};
use tokio::sync::watch;

use super::breaker::CircuitBreaker;
use super::CachedScore;
use crate::metrics::NodeMetrics;

pub mod dedup;

pub use dedup::{Claim, DedupWait, HeldLocks, WaitStep};

/// Deletes each lock that still holds this owner's token (never someone else's) and, when
/// `ARGV[2]` names a channel and a lock was deleted, announces it there: the owner gave pairs up
/// without storing them, and their waiters may take them over.
const RELEASE_SCRIPT: &str = "local n = 0 for _, k in ipairs(KEYS) do \
    if redis.call('GET', k) == ARGV[1] then n = n + redis.call('DEL', k) end end \
    if n > 0 and ARGV[2] then redis.call('PUBLISH', ARGV[2], 'released ' .. n) end return n";

/// Extends each lock that still holds this owner's token by `ARGV[2]` ms (never someone else's).
const RENEW_SCRIPT: &str = "local n = 0 for _, k in ipairs(KEYS) do \
    if redis.call('GET', k) == ARGV[1] then n = n + redis.call('PEXPIRE', k, ARGV[2]) end end \
    return n";

/// How long a pair lock lives unless its owner renews it (or `REDIS_LOCK_TTL_MS`, if shorter).
/// Owners renew their locks every third of it while they compute, so a live owner keeps its
/// pairs however long its forward passes take, and a crashed owner's pairs are free again —
/// and taken over by a waiter — within one lease instead of the whole lock TTL.
const LOCK_LEASE: Duration = Duration::from_secs(3);

/// How often the probe checks Redis and refreshes `/health` figures.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a waiter re-reads its keys, in case a publish was lost.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Settings of the shared tier.
#[derive(Debug, Clone)]
pub struct SharedCacheSettings {
    pub url: String,
    /// `REDIS_TTL_SECONDS`.
    pub ttl: Duration,
    /// `REDIS_LOCK_TTL_MS`: the longest a node waits for a pair another node computes. Locks
    /// themselves are leases of at most [`LOCK_LEASE`], renewed by their live owners.
    pub lock_ttl: Duration,
    /// Bound on every Redis call.
    pub op_timeout: Duration,
}

/// Why the tier could not be set up (a bad URL; an unreachable server is not an error).
#[derive(Debug, thiserror::Error)]
#[error("REDIS_URL: {0}")]
pub struct SharedCacheError(#[from] redis::RedisError);

/// Figures behind `/health.distributed_cache`, refreshed by the probe.
#[derive(Debug, Default)]
struct Status {
    connected: AtomicBool,
    cached_entries: AtomicU64,
    keyspace_hits: AtomicU64,
    keyspace_misses: AtomicU64,
}

/// See the module docs.
pub struct SharedScoreCache {
    connection: ConnectionManager,
    namespace: String,
    ttl_seconds: u64,
    lock_ttl: Duration,
    op_timeout: Duration,
    breaker: CircuitBreaker,
    /// Bumped on every message on the done channel: waiters watch it to re-claim their pairs.
    wake: Arc<watch::Sender<u64>>,
    status: Status,
    metrics: Arc<NodeMetrics>,
}

impl SharedScoreCache {
    /// Sets up the tier and its background probe and subscriber. Never waits for Redis: an
    /// unreachable server only shows as `connected: false` until it answers.
    pub fn start(
        settings: &SharedCacheSettings,
        fingerprint: &ModelFingerprint,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Arc<Self>, SharedCacheError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let connection = bounded_connection(&client, settings.op_timeout)?;
        let cache = Arc::new(Self {
            connection,
            namespace: format!("rr:{}", fingerprint.as_str()),
            ttl_seconds: settings.ttl.as_secs().max(1),
            lock_ttl: settings.lock_ttl,
            op_timeout: settings.op_timeout,
            breaker: CircuitBreaker::new(Duration::from_millis(250), Duration::from_secs(2)),
            wake: Arc::new(watch::Sender::new(0)),
            status: Status::default(),
            metrics,
        });
        actix_web::rt::spawn(probe_loop(Arc::downgrade(&cache)));
        actix_web::rt::spawn(subscriber_loop(
            client,
            cache.done_channel(),
            Arc::downgrade(&cache.wake),
        ));
        Ok(cache)
    }

    fn score_key(&self, key: &PairKey) -> String {
        format!("{}:s:{key}", self.namespace)
    }

    fn lock_key(&self, key: &PairKey) -> String {
        format!("{}:l:{key}", self.namespace)
    }

    fn done_channel(&self) -> String {
        format!("{}:done", self.namespace)
    }

    /// Runs one Redis call under the breaker and the timeout; `None` means "no answer".
    async fn call<T>(&self, op: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        if !self.breaker.allows() {
            return None;
        }
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(value)) => {
                self.breaker.record_success();
                Some(value)
            }
            Ok(Err(e)) => self.failed(&e.to_string()),
            Err(_) => self.failed("timed out"),
        }
    }

    fn failed<T>(&self, why: &str) -> Option<T> {
        self.breaker.record_failure();
        self.status.connected.store(false, Ordering::Relaxed);
        self.metrics.redis_errors.inc();
        tracing::warn!(
            error = why,
            "redis call failed; serving without the shared cache"
        );
        None
    }

    /// Scores of `keys` in one `MGET`; all misses when Redis does not answer.
    pub async fn get_many(&self, keys: &[PairKey]) -> Vec<Option<CachedScore>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = keys.iter().map(|k| self.score_key(k)).collect();
        let mut con = self.connection.clone();
        let values: Vec<Option<String>> = self
            .call(redis::cmd("MGET").arg(&names).query_async(&mut con))
            .await
            .unwrap_or_else(|| vec![None; keys.len()]);
        let found: Vec<Option<CachedScore>> = values
            .iter()
            .map(|v| v.as_deref().and_then(decode))
            .collect();
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        self.metrics.redis_hits.inc_by(hits);
        self.metrics.redis_misses.inc_by(keys.len() as u64 - hits);
        found
    }

    /// Stores computed scores (`SET … EX ttl`), announces them on the done channel and releases
    /// this owner's locks (when `lock_token` is given) — one pipelined round trip. Pairs
    /// computed without a lock pass `None`.
    pub async fn store(&self, scores: &[(PairKey, CachedScore)], lock_token: Option<&str>) {
        if scores.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, value) in scores {
            pipe.cmd("SET")
                .arg(self.score_key(key))
                .arg(encode(value))
                .arg("EX")
                .arg(self.ttl_seconds)
                .ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(self.done_channel())
            .arg(scores.len())
            .ignore();
        if let Some(token) = lock_token {
            // The scores were just published: nothing to announce.
            self.add_release(&mut pipe, scores.iter().map(|(k, _)| k), token, None);
        }
        let mut con = self.connection.clone();
        let _: Option<()> = self.call(pipe.query_async(&mut con)).await;
    }

    /// A lock's life between renewals.
    fn lease(&self) -> Duration {
        LOCK_LEASE.min(self.lock_ttl).max(Duration::from_millis(1))
    }

    /// Extends this owner's locks on `keys` by one lease.
    async fn renew(&self, keys: &[PairKey], token: &str) {
        if keys.is_empty() {
            return;
        }
        let names: Vec<String> = keys.iter().map(|k| self.lock_key(k)).collect();
        let mut con = self.connection.clone();
        let _: Option<u64> = self
            .call(
                redis::cmd("EVAL")
                    .arg(RENEW_SCRIPT)
                    .arg(names.len())
                    .arg(names)
                    .arg(token)
                    .arg(self.lease().as_millis() as u64)
                    .query_async(&mut con),
            )
            .await;
    }

    /// Releases locks without storing anything (the owner gave up: its client left, its
    /// computation failed) and announces the release, so waiters take the pairs over at once.
    async fn release(&self, keys: &[PairKey], token: &str) {
        if keys.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let channel = self.done_channel();
        self.add_release(&mut pipe, keys.iter(), token, Some(&channel));
        let mut con = self.connection.clone();
        let _: Option<()> = self.call(pipe.query_async(&mut con)).await;
    }

    fn add_release<'a>(
        &self,
        pipe: &mut redis::Pipeline,
        keys: impl Iterator<Item = &'a PairKey>,
        token: &str,
        announce_on: Option<&str>,
    ) {
        let names: Vec<String> = keys.map(|k| self.lock_key(k)).collect();
        pipe.cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(names.len())
            .arg(names)
            .arg(token);
        if let Some(channel) = announce_on {
            pipe.arg(channel);
        }
        pipe.ignore();
    }

    /// `/health.distributed_cache`: `cached_entries` is Redis's `DBSIZE`, the keyspace figures
    /// are the server's `INFO stats` counters, all as of the last probe.
    pub fn health(&self) -> DistributedCacheHealth {
        DistributedCacheHealth {
            enabled: true,
            connected: self.status.connected.load(Ordering::Relaxed),
            cached_entries: self.status.cached_entries.load(Ordering::Relaxed),
            keyspace_hits: self.status.keyspace_hits.load(Ordering::Relaxed),
            keyspace_misses: self.status.keyspace_misses.load(Ordering::Relaxed),
        }
    }

    async fn probe(&self) {
        let mut con = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("DBSIZE").cmd("INFO").arg("stats");
        // The probe bypasses the breaker: it is what closes it.
        let reply: Result<redis::RedisResult<(u64, String)>, _> =
            tokio::time::timeout(self.op_timeout, pipe.query_async(&mut con)).await;
        match reply {
            Ok(Ok((entries, info))) => {
                self.breaker.record_success();
                self.status.connected.store(true, Ordering::Relaxed);
                self.status.cached_entries.store(entries, Ordering::Relaxed);
                let stat = |name: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
                        .unwrap_or(0)
                };
                self.status
                    .keyspace_hits
                    .store(stat("keyspace_hits"), Ordering::Relaxed);
                self.status
                    .keyspace_misses
                    .store(stat("keyspace_misses"), Ordering::Relaxed);
            }
            _ => {
                self.breaker.record_failure();
                self.status.connected.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// A lazily connecting, self-healing connection whose every call is bounded by `op_timeout`:
/// Redis is an accelerator, so nothing may wait on it for long (the score tier and the node's
/// registration share this set-up).
pub fn bounded_connection(
    client: &redis::Client,
    op_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(op_timeout))
        .set_response_timeout(Some(op_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

fn encode(value: &CachedScore) -> String {
    format!("{} {}", value.raw, value.tokens)
}

fn decode(text: &str) -> Option<CachedScore> {
    let (raw, tokens) = text.split_once(' ')?;
    Some(CachedScore {
        raw: raw.parse().ok()?,
        tokens: tokens.parse().ok()?,
    })
}

/// Probes Redis every [`PROBE_INTERVAL`] while the cache is alive.
async fn probe_loop(cache: std::sync::Weak<SharedScoreCache>) {
    loop {
        match cache.upgrade() {
            Some(c) => c.probe().await,
            None => return,
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Keeps a subscription to the done channel and wakes waiters on every message (a store or a
/// release); resubscribes after Redis comes back.
async fn subscriber_loop(
    client: redis::Client,
    channel: String,
    wake: std::sync::Weak<watch::Sender<u64>>,
) {
    let bump = |wake: &watch::Sender<u64>| wake.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        if wake.strong_count() == 0 {
            return;
        }
        if let Ok(Ok(mut pubsub)) =
            tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub()).await
        {
            if pubsub.subscribe(&channel).await.is_ok() {
                // Wake everyone once: messages sent while we were unsubscribed are lost.
                if let Some(w) = wake.upgrade() {
                    bump(&w);
                }
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    match wake.upgrade() {
                        Some(w) => bump(&w),
                        None => return,
                    }
                }
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_exactly() {
        for raw in [0.0f32, -1.2345678, 7.654321e-9, f32::MAX] {
            let v = CachedScore { raw, tokens: 127 };
            assert_eq!(decode(&encode(&v)), Some(v));
        }
        assert_eq!(decode("garbage"), None);
    }
}
