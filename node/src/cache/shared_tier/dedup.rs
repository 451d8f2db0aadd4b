//! The cross-node dedup protocol on top of the shared tier: which node computes a pair, and how
//! the others get its score.
//!
//! A node *claims* the pairs it misses, one script call per pair so that Redis decides each
//! atomically: the stored score if there is one, else the pair's lock if it is free, else the
//! lock's remaining life (`PTTL`). It computes the pairs it won and stores them as soon as they
//! are computed, independently of any wait, so two nodes that each hold a lock the other
//! wants never wait on each other ([`HeldLocks::store`] publishes on the done channel).
//!
//! An owner that gives its locks up without storing (its client left, its computation failed)
//! deletes them and announces it on the same channel ([`HeldLocks`]'s `Drop`). A [`DedupWait`]
//! re-claims its pairs on every message (a store or a release), every [`WAIT_POLL`] (pub/sub
//! can drop messages) and at the lock's deadline: a pair let go becomes this node's to compute
//! at once ("takeover"); one still locked when its first owner's lock was due to expire is
//! computed here without a lock, as are all of them once Redis stops answering.
//!
//! Locks are leases: an owner renews its locks every third of the lease while it computes
//! ([`HeldLocks`]), so a live owner keeps them however long its forward passes take, while a
//! crashed owner's locks lapse within one lease and its waiters take the pairs over ("expiry").
//! A wait never lasts longer than `REDIS_LOCK_TTL_MS` from when it began.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::task::AbortHandle;

use rerank_shared::pair_key::PairKey;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{decode, SharedScoreCache, WAIT_POLL};
use crate::cache::CachedScore;

/// Claims pairs (`KEYS`: the score and lock key of each pair in turn; `ARGV`: token, lock TTL
/// in ms). Replies per pair `s{value}` when the score is stored, `w` when this call took the
/// lock, `h{pttl}` when another owner holds it.
const CLAIM_SCRIPT: &str = "local out = {} for i = 1, #KEYS, 2 do \
    local v = redis.call('GET', KEYS[i]) \
    if v then out[#out + 1] = 's' .. v \
    elseif redis.call('SET', KEYS[i + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then out[#out + 1] = 'w' \
    else out[#out + 1] = 'h' .. redis.call('PTTL', KEYS[i + 1]) end end return out";

/// Pairs per script call when a waiter re-claims its pairs: one call reads them all at about
/// the cost of an `MGET`, in slices short enough not to hold Redis up.
const RECLAIM_CHUNK: usize = 128;

/// `EVALSHA` name of [`CLAIM_SCRIPT`]; each claim pipeline `SCRIPT LOAD`s it first, so a
/// restarted Redis (empty script cache) needs no retry.
static CLAIM_SHA: LazyLock<String> =
    LazyLock::new(|| redis::Script::new(CLAIM_SCRIPT).get_hash().to_string());

/// What Redis said about one claimed pair.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ClaimReply {
    /// Already computed.
    Stored(CachedScore),
    /// The lock is ours now.
    Won,
    /// Another owner holds the lock for this long (`None`: a lock without expiry). Owners renew
    /// their leases, so this says when to look again, not when the wait ends.
    #[allow(dead_code)]
    Held(Option<Duration>),
}

fn decode_claim(reply: &str) -> Option<ClaimReply> {
    if reply == "w" {
        return Some(ClaimReply::Won);
    }
    if let Some(value) = reply.strip_prefix('s') {
        return decode(value).map(ClaimReply::Stored);
    }
    let pttl: i64 = reply.strip_prefix('h')?.parse().ok()?;
    Some(ClaimReply::Held(match pttl {
        // -1: no expiry; -2 (gone) cannot happen inside the script but means "free now".
        -1 => None,
        ms => Some(Duration::from_millis(ms.max(0) as u64)),
    }))
}

/// Outcome of a first claim.
pub struct Claim {
    /// Pairs another node stored meanwhile.
    pub stored: Vec<(PairKey, CachedScore)>,
    /// Pairs this node must compute and store.
    pub won: HeldLocks,
    /// Pairs another node is computing.
    pub wait: DedupWait,
}

impl SharedScoreCache {
    /// Claims `keys` (see the module docs). `None` when Redis does not answer: then nobody
    /// coordinates, and the caller computes everything itself.
    pub async fn claim(self: &Arc<Self>, keys: &[PairKey]) -> Option<Claim> {
        let token: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        // Subscribed before claiming, so a store or release right after our claim still wakes us.
        let wake = self.wake.subscribe();
        // Armed on every key before the call: if this future is dropped while Redis is taking
        // the locks, whichever it took are released.
        let mut won = HeldLocks::armed(self.clone(), token.clone(), keys.to_vec());
        let replies = self.claim_replies(keys, &token, 1).await?;
        let now = Instant::now();
        let mut stored = Vec::new();
        let mut won_keys = Vec::new();
        let mut deadlines = HashMap::new();
        for (key, reply) in keys.iter().zip(replies) {
            match reply {
                Some(ClaimReply::Stored(value)) => stored.push((*key, value)),
                Some(ClaimReply::Won) => won_keys.push(*key),
                Some(ClaimReply::Held(_)) => {
                    deadlines.insert(*key, now + self.lock_ttl);
                }
                // Unreadable: claimed again at once, then computed here.
                None => {
                    deadlines.insert(*key, now);
                }
            }
        }
        self.metrics.lock_wins.inc_by(won_keys.len() as u64);
        self.metrics.lock_waits.inc_by(deadlines.len() as u64);
        won.keys = won_keys;
        won.keep_renewed();
        Some(Claim {
            stored,
            won,
            wait: DedupWait {
                cache: self.clone(),
                token,
                wake,
                deadlines,
                ended: Ended::default(),
            },
        })
    }

    /// One pipeline: `SCRIPT LOAD`, then [`CLAIM_SCRIPT`] over `per_call` pairs at a time. A
    /// first claim goes pair by pair, as `SET NX` pipelines do: two nodes' claims may then
    /// interleave, which the protocol must (and the tests do) survive.
    async fn claim_replies(
        &self,
        keys: &[PairKey],
        token: &str,
        per_call: usize,
    ) -> Option<Vec<Option<ClaimReply>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let ttl_ms = self.lease().as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(CLAIM_SCRIPT).ignore();
        for chunk in keys.chunks(per_call.max(1)) {
            pipe.cmd("EVALSHA")
                .arg(CLAIM_SHA.as_str())
                .arg(chunk.len() * 2);
            for key in chunk {
                pipe.arg(self.score_key(key)).arg(self.lock_key(key));
            }
            pipe.arg(token).arg(ttl_ms);
        }
        let mut con = self.connection.clone();
        let replies: Vec<Vec<String>> = self.call(pipe.query_async(&mut con)).await?;
        let replies: Vec<Option<ClaimReply>> =
            replies.iter().flatten().map(|r| decode_claim(r)).collect();
        (replies.len() == keys.len()).then_some(replies)
    }
}

/// Locks this node holds on pairs it is computing. [`store`](Self::store) stores the scores,
/// publishes them and releases the locks in one round trip; locks still held when this is
/// dropped (the request was cancelled or failed) are released and the release is announced,
/// so waiting nodes take the pairs over at once instead of waiting for the locks to expire.
pub struct HeldLocks {
    cache: Arc<SharedScoreCache>,
    token: Arc<str>,
    keys: Vec<PairKey>,
    /// The task renewing the leases while the pairs are computed.
    renewal: Option<AbortHandle>,
}

impl HeldLocks {
    fn armed(cache: Arc<SharedScoreCache>, token: Arc<str>, keys: Vec<PairKey>) -> Self {
        Self {
            cache,
            token,
            keys,
            renewal: None,
        }
    }

    /// Renews the leases of `keys` every third of a lease until stored or dropped.
    fn keep_renewed(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cache, token, keys) = (self.cache.clone(), self.token.clone(), self.keys.clone());
        let every = cache.lease() / 3;
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                cache.renew(&keys, &token).await;
            }
        });
        self.renewal = Some(task.abort_handle());
    }

    fn stop_renewal(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
    }

    /// The pairs whose locks these are.
    pub fn keys(&self) -> &[PairKey] {
        &self.keys
    }

    /// Stores `scores` (computed for these locks), publishes them and releases their locks.
    /// Locks of pairs missing from `scores` are released, and announced, on drop.
    pub async fn store(mut self, scores: &[(PairKey, CachedScore)]) {
        self.stop_renewal(); // the store takes well under the two thirds of a lease left
                             // The keys stay armed during the call: dropped midway, the release on drop deletes only
                             // locks that still hold our token, i.e. those this store did not get to.
        self.cache.store(scores, Some(&self.token)).await;
        let stored: HashSet<&PairKey> = scores.iter().map(|(k, _)| k).collect();
        self.keys.retain(|k| !stored.contains(k));
    }
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        self.stop_renewal();
        if self.keys.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: the locks expire by themselves
        };
        let (cache, keys, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.keys),
            self.token.clone(),
        );
        runtime.spawn(async move { cache.release(&keys, &token).await });
    }
}

/// One change in a [`DedupWait`].
#[derive(Default)]
pub struct WaitStep {
    /// Pairs another node stored.
    pub arrived: Vec<(PairKey, CachedScore)>,
    /// Pairs whose owner let its lock go (released or expired) without storing them: their
    /// locks are ours now, compute and store them.
    pub taken_over: Option<HeldLocks>,
    /// Pairs to compute here without a lock: still locked when their first owner's lock was due
    /// to expire, or Redis stopped answering.
    pub expired: Vec<PairKey>,
}

/// How a wait's pairs ended, for `rerank_dedup_waits_total{ended}` (recorded once per wait).
#[derive(Debug, Default)]
struct Ended {
    publish: bool,
    poll: bool,
    takeover: bool,
    expiry: bool,
}

/// Pairs another node holds the locks of (see the module docs).
pub struct DedupWait {
    cache: Arc<SharedScoreCache>,
    token: Arc<str>,
    wake: watch::Receiver<u64>,
    /// Each pending pair with the end of its wait: `REDIS_LOCK_TTL_MS` after it was first seen,
    /// never pushed later (owners renew their leases, so a lock's own expiry is no bound).
    deadlines: HashMap<PairKey, Instant>,
    ended: Ended,
}

impl DedupWait {
    /// Pairs still pending.
    pub fn pending(&self) -> usize {
        self.deadlines.len()
    }

    /// Waits for the next change in the pending pairs; `None` once none is pending. Dropping
    /// the future midway loses nothing: locks it was taking over are released.
    pub async fn next(&mut self) -> Option<WaitStep> {
        while let Some(earliest) = self.deadlines.values().min().copied() {
            let published = tokio::select! {
                changed = self.wake.changed() => changed.is_ok(),
                () = tokio::time::sleep(WAIT_POLL) => false,
                () = tokio::time::sleep_until(earliest) => false,
            };
            let step = self.reclaim(published).await;
            if !step.arrived.is_empty() || step.taken_over.is_some() || !step.expired.is_empty() {
                return Some(step);
            }
        }
        None
    }

    async fn reclaim(&mut self, published: bool) -> WaitStep {
        let keys: Vec<PairKey> = self.deadlines.keys().copied().collect();
        let mut taken = HeldLocks::armed(self.cache.clone(), self.token.clone(), keys.clone());
        // Under the breaker: `None` at once while Redis is known to be down.
        let replies = self
            .cache
            .claim_replies(&keys, &self.token, RECLAIM_CHUNK)
            .await;
        let mut step = WaitStep::default();
        let Some(replies) = replies else {
            // Redis is gone: nobody coordinates any more.
            self.ended.expiry = true;
            step.expired = std::mem::take(&mut self.deadlines).into_keys().collect();
            return step;
        };
        let now = Instant::now();
        let mut won = Vec::new();
        for (key, reply) in keys.into_iter().zip(replies) {
            let Some(deadline) = self.deadlines.get(&key).copied() else {
                continue;
            };
            match reply {
                Some(ClaimReply::Stored(value)) => step.arrived.push((key, value)),
                Some(ClaimReply::Won) => {
                    // Let go and announced: a takeover; found free by a poll: its lease lapsed.
                    if published && now < deadline {
                        self.ended.takeover = true;
                    } else {
                        self.ended.expiry = true;
                    }
                    won.push(key);
                }
                Some(ClaimReply::Held(_)) if now < deadline => continue,
                Some(ClaimReply::Held(_)) | None => {
                    self.ended.expiry = true;
                    step.expired.push(key);
                }
            }
            self.deadlines.remove(&key);
        }
        if !step.arrived.is_empty() {
            if published {
                self.ended.publish = true;
            } else {
                self.ended.poll = true;
            }
        }
        self.cache.metrics.lock_wins.inc_by(won.len() as u64);
        taken.keys = won;
        if !taken.keys.is_empty() {
            taken.keep_renewed();
            step.taken_over = Some(taken);
        }
        step
    }
}

impl Drop for DedupWait {
    fn drop(&mut self) {
        let ended = &self.ended;
        let arrived = if ended.publish {
            Some("publish")
        } else if ended.poll {
            Some("poll")
        } else {
            None
        };
        let labels = arrived.into_iter().chain(
            [("takeover", ended.takeover), ("expiry", ended.expiry)]
                .into_iter()
                .filter_map(|(label, happened)| happened.then_some(label)),
        );
        for label in labels {
            self.cache
                .metrics
                .dedup_waits
                .with_label_values(&[label])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_replies_decode() {
        assert_eq!(decode_claim("w"), Some(ClaimReply::Won));
        assert_eq!(
            decode_claim("s0.5 12"),
            Some(ClaimReply::Stored(CachedScore {
                raw: 0.5,
                tokens: 12
            }))
        );
        assert_eq!(
            decode_claim("h1500"),
            Some(ClaimReply::Held(Some(Duration::from_millis(1500))))
        );
        assert_eq!(decode_claim("h-1"), Some(ClaimReply::Held(None)));
        assert_eq!(
            decode_claim("h-2"),
            Some(ClaimReply::Held(Some(Duration::ZERO)))
        );
        assert_eq!(decode_claim("sgarbage"), None);
        assert_eq!(decode_claim("x"), None);
    }
}
