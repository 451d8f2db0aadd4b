//! The in-process tier: a bounded LRU with a TTL (moka), shared by every request of a node.

use std::time::Duration;

use moka::sync::Cache;
use rerank_shared::pair_key::PairKey;

use super::CachedScore;

/// Raw scores of recently computed pairs. Bounded by entries and by age; a size of 0 turns it
/// off (every lookup misses).
#[derive(Clone)]
pub struct LocalScoreCache {
    inner: Option<Cache<PairKey, CachedScore>>,
}

impl LocalScoreCache {
    /// A cache of at most `entries` pairs, each kept for at most `ttl`.
    pub fn new(entries: u64, ttl: Duration) -> Self {
        let inner = (entries > 0).then(|| {
            Cache::builder()
                .max_capacity(entries)
                .time_to_live(ttl)
                .build()
        });
        Self { inner }
    }

    /// The cached score of `key`, if present and fresh.
    pub fn get(&self, key: &PairKey) -> Option<CachedScore> {
        self.inner.as_ref().and_then(|c| c.get(key))
    }

    /// Remembers the score of `key`.
    pub fn insert(&self, key: PairKey, value: CachedScore) {
        if let Some(c) = &self.inner {
            c.insert(key, value);
        }
    }

    /// Approximate number of entries.
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.entry_count())
    }

    /// True when the cache holds nothing (or is disabled).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_bounds_entries() {
        let cache = LocalScoreCache::new(10, Duration::from_secs(60));
        let v = CachedScore {
            raw: 1.5,
            tokens: 12,
        };
        cache.insert(PairKey(1), v);
        assert_eq!(cache.get(&PairKey(1)), Some(v));
        assert_eq!(cache.get(&PairKey(2)), None);
        for k in 0..100 {
            cache.insert(PairKey(k), v);
        }
        if let Some(c) = &cache.inner {
            c.run_pending_tasks();
        }
        assert!(cache.len() <= 10, "{}", cache.len());
    }

    #[test]
    fn size_zero_disables_the_cache() {
        let cache = LocalScoreCache::new(0, Duration::from_secs(60));
        cache.insert(
            PairKey(1),
            CachedScore {
                raw: 1.0,
                tokens: 1,
            },
        );
        assert_eq!(cache.get(&PairKey(1)), None);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = LocalScoreCache::new(10, Duration::from_millis(50));
        cache.insert(
            PairKey(1),
            CachedScore {
                raw: 1.0,
                tokens: 1,
            },
        );
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(cache.get(&PairKey(1)), None);
    }
}
