//! Cache keys: one per (model configuration, query, document, truncation settings).
//!
//! The value cached under a key is a raw score; two nodes with the same weights, quantization
//! and length limit compute the same key for the same pair, so they can share results, and a
//! change to any of those gives new keys, so scores of different models never mix.

use std::fmt;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::api::TruncationDirection;

/// What distinguishes one loaded model from another in cache keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelFingerprint(String);

impl ModelFingerprint {
    /// Combines the model id, a hash of its weights, the precision mode and the length limit.
    pub fn new(model_id: &str, weights_hash: u128, quantization: &str, max_length: usize) -> Self {
        let mut h = Xxh3::new();
        write_field(&mut h, model_id.as_bytes());
        write_field(&mut h, &weights_hash.to_le_bytes());
        write_field(&mut h, quantization.as_bytes());
        write_field(&mut h, &(max_length as u64).to_le_bytes());
        Self(format!("{:032x}", h.digest128()))
    }

    /// The fingerprint as 32 hex digits (used as a Redis key namespace).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Truncation settings that change a pair's score, hence part of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TruncationKey {
    pub truncate: bool,
    pub direction: TruncationDirection,
    pub max_tokens_per_doc: Option<usize>,
}

/// The cache key of one (query, document) pair under one model configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PairKey(pub u128);

impl PairKey {
    /// Hashes the pair with xxh3-128; fields are length-prefixed so no two inputs collide by
    /// concatenation. `instruction` (decoder rerankers) is hashed last and only when present, so
    /// encoders' keys are what they were before instructions existed.
    pub fn new(
        model: &ModelFingerprint,
        query: &str,
        instruction: Option<&str>,
        document: &str,
        t: &TruncationKey,
    ) -> Self {
        let mut h = Xxh3::new();
        write_field(&mut h, model.0.as_bytes());
        write_field(&mut h, query.as_bytes());
        write_field(&mut h, document.as_bytes());
        let direction = match t.direction {
            TruncationDirection::Left => 0u8,
            TruncationDirection::Right => 1u8,
        };
        let cap = t.max_tokens_per_doc.map_or(u64::MAX, |c| c as u64);
        write_field(&mut h, &[u8::from(t.truncate), direction]);
        write_field(&mut h, &cap.to_le_bytes());
        if let Some(instruction) = instruction {
            write_field(&mut h, instruction.as_bytes());
        }
        Self(h.digest128())
    }
}

impl PairKey {
    /// The key of one window of this pair's document (long documents scored by windows): the
    /// pair's key and the window's span of document tokens. With the query, the document and
    /// the model fixed, the span decides the window's input, so windows are shared by requests
    /// with other chunking settings that produce the same span.
    pub fn window(&self, tokens: std::ops::Range<usize>) -> Self {
        let mut h = Xxh3::new();
        write_field(&mut h, &self.0.to_le_bytes());
        write_field(&mut h, b"window");
        write_field(&mut h, &(tokens.start as u64).to_le_bytes());
        write_field(&mut h, &(tokens.end as u64).to_le_bytes());
        Self(h.digest128())
    }
}

impl fmt::Display for PairKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn write_field(h: &mut Xxh3, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TruncationKey {
        TruncationKey {
            truncate: true,
            direction: TruncationDirection::Right,
            max_tokens_per_doc: None,
        }
    }

    #[test]
    fn keys_are_stable_across_processes() {
        let m = ModelFingerprint::new("m", 42, "none", 512);
        let k = PairKey::new(&m, "q", None, "d", &t());
        // A fixed value: a change here would orphan every shared cache entry.
        assert_eq!(k.to_string(), "6ecf5c34362917332017f2ccbcbb65a8");
        assert_eq!(m.as_str().len(), 32);
        assert_eq!(
            k,
            PairKey::new(
                &ModelFingerprint::new("m", 42, "none", 512),
                "q",
                None,
                "d",
                &t()
            )
        );
    }

    #[test]
    fn windows_have_keys_of_their_own() {
        let m = ModelFingerprint::new("m", 42, "none", 512);
        let k = PairKey::new(&m, "q", None, "d", &t());
        assert_ne!(k.window(0..10), k);
        assert_ne!(k.window(0..10), k.window(0..11));
        assert_ne!(k.window(0..10), k.window(1..10));
        assert_eq!(k.window(3..9), k.window(3..9));
        let other = PairKey::new(&m, "q", None, "e", &t());
        assert_ne!(k.window(0..10), other.window(0..10));
    }

    #[test]
    fn every_component_changes_the_key() {
        let m = ModelFingerprint::new("m", 42, "none", 512);
        let base = PairKey::new(&m, "q", None, "d", &t());
        assert_ne!(
            base,
            PairKey::new(
                &ModelFingerprint::new("m", 42, "int8", 512),
                "q",
                None,
                "d",
                &t()
            )
        );
        assert_ne!(
            base,
            PairKey::new(
                &ModelFingerprint::new("m", 43, "none", 512),
                "q",
                None,
                "d",
                &t()
            )
        );
        assert_ne!(base, PairKey::new(&m, "qd", None, "", &t()));
        assert_ne!(
            base,
            PairKey::new(
                &m,
                "q",
                None,
                "d",
                &TruncationKey {
                    truncate: false,
                    ..t()
                }
            )
        );
        assert_ne!(
            base,
            PairKey::new(
                &m,
                "q",
                None,
                "d",
                &TruncationKey {
                    direction: TruncationDirection::Left,
                    ..t()
                }
            )
        );
        assert_ne!(
            base,
            PairKey::new(
                &m,
                "q",
                None,
                "d",
                &TruncationKey {
                    max_tokens_per_doc: Some(5),
                    ..t()
                }
            )
        );
    }

    #[test]
    fn an_instruction_changes_the_key_and_its_absence_keeps_the_old_one() {
        let m = ModelFingerprint::new("m", 42, "none", 512);
        let plain = PairKey::new(&m, "q", None, "d", &t());
        let instructed = PairKey::new(&m, "q", Some("find answers"), "d", &t());
        let other = PairKey::new(&m, "q", Some("find questions"), "d", &t());
        assert_ne!(plain, instructed);
        assert_ne!(instructed, other);
        assert_ne!(PairKey::new(&m, "q", Some(""), "d", &t()), plain);
    }
}
