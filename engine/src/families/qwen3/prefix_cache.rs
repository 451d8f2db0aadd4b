//! A small cache of prefixes' keys and values across forward passes.
//!
//! Every document of a request shares the same prefix ids (prompt, instruction, query). A pass
//! computes them once; the batcher may still split one request's documents over several passes,
//! and clients repeat queries, so the last few prefixes are kept, bounded by bytes. Entries are
//! matched on their exact ids, so a hit is the same computation, not an approximation.

use std::sync::Arc;

/// What the cache needs to know about a value.
pub trait CacheBytes {
    fn bytes(&self) -> usize;
}

/// Least-recently-used entries, keyed by prefix ids, holding at most `capacity` bytes.
pub struct PrefixCache<V> {
    /// Most recently used last.
    entries: Vec<(Vec<u32>, Arc<V>)>,
    capacity: usize,
    held: usize,
}

impl<V: CacheBytes> PrefixCache<V> {
    /// `capacity` 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity,
            held: 0,
        }
    }

    /// The entry for exactly `ids`, marked as just used.
    pub fn get(&mut self, ids: &[u32]) -> Option<Arc<V>> {
        let at = self.entries.iter().position(|(k, _)| k.as_slice() == ids)?;
        let entry = self.entries.remove(at);
        let value = Arc::clone(&entry.1);
        self.entries.push(entry);
        Some(value)
    }

    /// Keeps `value` for `ids`, evicting the least recently used entries to fit; a value larger
    /// than the whole capacity is not kept.
    pub fn insert(&mut self, ids: &[u32], value: Arc<V>) {
        let bytes = value.bytes();
        if bytes > self.capacity {
            return;
        }
        if let Some(at) = self.entries.iter().position(|(k, _)| k.as_slice() == ids) {
            let (_, old) = self.entries.remove(at);
            self.held -= old.bytes();
        }
        while self.held + bytes > self.capacity && !self.entries.is_empty() {
            let (_, old) = self.entries.remove(0);
            self.held -= old.bytes();
        }
        self.held += bytes;
        self.entries.push((ids.to_vec(), value));
    }

    /// Entries held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Blob(usize);
    impl CacheBytes for Blob {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn keeps_the_most_recently_used_within_its_bytes() {
        let mut cache = PrefixCache::new(10);
        cache.insert(&[1], Arc::new(Blob(4)));
        cache.insert(&[2], Arc::new(Blob(4)));
        assert!(cache.get(&[1]).is_some(), "hit marks [1] as recent");
        cache.insert(&[3], Arc::new(Blob(4)));
        assert!(cache.get(&[2]).is_none(), "the least recently used went");
        assert!(cache.get(&[1]).is_some() && cache.get(&[3]).is_some());
        assert!(cache.get(&[1, 3]).is_none(), "exact ids only");
        cache.insert(&[4], Arc::new(Blob(11)));
        assert!(cache.get(&[4]).is_none(), "larger than the capacity");
        assert_eq!(cache.len(), 2);
        let mut off = PrefixCache::new(0);
        off.insert(&[1], Arc::new(Blob(1)));
        assert_eq!(off.len(), 0);
    }
}
