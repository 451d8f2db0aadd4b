//! Cluster membership through Redis that a Redis writer cannot forge.
//!
//! A node announces itself with a [`Registration`] (node id, base URL, an incarnation, an
//! expiry) signed with HMAC-SHA256 under `CLUSTER_SECRET` ([`ClusterKey`]). Coordinators add a
//! node only for a registration whose signature and expiry check out, so whoever can write to
//! Redis but lacks the secret can neither steer client traffic to an address of their choosing
//! nor, through it, collect the admin token the coordinator sends its members.
//!
//! All registrations live in one Redis hash, [`REGISTRY_KEY`] (field = node id, value = the
//! signed registration), read with one `HGETALL` instead of a `KEYS` scan over a keyspace full
//! of cached scores. A hash field has no TTL of its own, so the expiry is inside the signed
//! value: readers ignore expired entries and delete long-expired ones ([`prune`]), atomically
//! and only if unchanged, so a node's concurrent refresh is never lost.
//!
//! The incarnation is random per registrar (per node process) and stays the same across the
//! refreshes of one registration: it tells "the same registration, renewed" from "the node
//! registered anew", which is how a coordinator keeps a drained node out until it re-registers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The Redis hash holding every node's signed registration (field = node id).
pub const REGISTRY_KEY: &str = "rr:registry";

/// How long a registration stays valid after it is signed; nodes renew it every
/// [`REFRESH_INTERVAL`], so a node that stops renewing leaves within this time.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(5);

/// How often a node renews its registration.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Registrations valid for longer than this are refused: a captured registration can be
/// replayed only until it expires, so no signer may make one that lives long.
pub const MAX_REGISTRATION_LIFETIME: Duration = Duration::from_secs(60);

/// How long past its expiry an entry stays before a reader deletes it. Generous, so that a
/// reader whose clock runs ahead never deletes live registrations.
pub const PRUNE_AFTER: Duration = Duration::from_secs(60);

/// What the MAC covers before the payload, so that a signature made for anything else under
/// the same secret can never pass as a registration.
const DOMAIN: &[u8] = b"rerank-cluster registration v1\n";

/// The version tag that opens every stored value: `v1.{payload}.{mac}`, both base64url.
const VERSION: &str = "v1";

/// Deletes a hash field only if it still holds the value read (never a fresher one).
const DELETE_IF_UNCHANGED: &str = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
    return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";

/// One node's announcement: where it serves, which incarnation this is, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// `NODE_ID`; also the hash field the registration is stored under.
    pub node_id: String,
    /// Base URL clients' requests are forwarded to (`http://host:port`).
    pub url: String,
    /// Random per registrar; the same across renewals of one registration.
    pub incarnation: String,
    /// When this incarnation first registered (Unix milliseconds).
    pub since_ms: u64,
    /// After this instant (Unix milliseconds) the registration is void.
    pub expires_ms: u64,
}

impl Registration {
    /// A fresh incarnation for `node_id` at `url`, valid for [`REGISTRATION_TTL`] from `now_ms`.
    pub fn new(node_id: &str, url: &str, now_ms: u64) -> Self {
        Self {
            node_id: node_id.to_string(),
            url: url.trim_end_matches('/').to_string(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            since_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms(REGISTRATION_TTL)),
        }
    }

    /// The same incarnation, valid for [`REGISTRATION_TTL`] from `now_ms`.
    pub fn renewed(&self, now_ms: u64) -> Self {
        Self {
            expires_ms: now_ms.saturating_add(ttl_ms(REGISTRATION_TTL)),
            ..self.clone()
        }
    }
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock in Unix milliseconds: registrations cross machines, so they carry wall time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, ttl_ms)
}

/// Why a stored entry is not a registration this reader accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not of the form `v1.{payload}.{mac}` (e.g. a bare URL written by hand).
    #[error("not a signed registration")]
    Unsigned,
    /// The MAC does not match: signed with another secret, or altered after signing.
    #[error("signature does not match this cluster's secret")]
    BadSignature,
    /// Signed, but the payload is not a registration (a signer bug, not an attack).
    #[error("signed payload is not a registration: {0}")]
    Malformed(String),
    /// Stored under another node's field.
    #[error("stored under {field:?} but registers node {node_id:?}")]
    WrongField { field: String, node_id: String },
    /// The URL is not an http(s) base URL.
    #[error("url {0:?} is not http:// or https://")]
    BadUrl(String),
    /// Past its expiry.
    #[error("expired {ago_ms} ms ago")]
    Expired { ago_ms: u64 },
    /// Valid for longer than [`MAX_REGISTRATION_LIFETIME`].
    #[error("valid for {lifetime_ms} ms, over the maximum of {max_ms} ms")]
    TooLong { lifetime_ms: u64, max_ms: u64 },
}

/// The HMAC key derived from `CLUSTER_SECRET`: signs registrations (nodes) and verifies them
/// (coordinators).
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

impl ClusterKey {
    /// The key of `secret`; `None` for an empty secret, which proves nothing.
    pub fn new(secret: &str) -> Option<Self> {
        if secret.is_empty() {
            return None;
        }
        // HMAC takes keys of any length, so this cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
        Some(Self { mac })
    }

    fn tag(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// The value to store under the registration's node id.
    pub fn sign(&self, registration: &Registration) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let payload = serde_json::to_vec(registration).unwrap_or_default();
        let tag = self.tag(&payload).finalize().into_bytes();
        format!(
            "{VERSION}.{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The registration stored as `value` under `field`, if it is signed with this key, names
    /// `field` as its node, has an http(s) URL, and is valid at `now_ms`.
    pub fn verify(&self, field: &str, value: &str, now_ms: u64) -> Result<Registration, Rejection> {
        let registration = self.authentic(value)?;
        if registration.node_id != field {
            return Err(Rejection::WrongField {
                field: field.to_string(),
                node_id: registration.node_id,
            });
        }
        if !(registration.url.starts_with("http://") || registration.url.starts_with("https://")) {
            return Err(Rejection::BadUrl(registration.url));
        }
        if registration.expires_ms <= now_ms {
            return Err(Rejection::Expired {
                ago_ms: now_ms - registration.expires_ms,
            });
        }
        let max_ms = ttl_ms(MAX_REGISTRATION_LIFETIME);
        let lifetime_ms = registration.expires_ms - now_ms;
        if lifetime_ms > max_ms {
            return Err(Rejection::TooLong {
                lifetime_ms,
                max_ms,
            });
        }
        Ok(registration)
    }

    /// The payload of `value` if its MAC is this key's, whatever its expiry.
    fn authentic(&self, value: &str) -> Result<Registration, Rejection> {
        let mut parts = value.split('.');
        let (Some(VERSION), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejection::Unsigned);
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Rejection::Unsigned)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Rejection::Unsigned)?;
        // `verify_slice` compares in constant time.
        self.tag(&payload)
            .verify_slice(&tag)
            .map_err(|_| Rejection::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|e| Rejection::Malformed(e.to_string()))
    }

    /// Whether `value` is an authentic registration that expired more than [`PRUNE_AFTER`]
    /// before `now_ms`: safe for any reader to delete.
    pub fn is_stale(&self, value: &str, now_ms: u64) -> bool {
        self.authentic(value)
            .is_ok_and(|r| r.expires_ms.saturating_add(ttl_ms(PRUNE_AFTER)) < now_ms)
    }
}

/// Stores (or renews) a signed registration under its node id.
pub async fn publish<C: redis::aio::ConnectionLike>(
    con: &mut C,
    node_id: &str,
    signed: &str,
) -> redis::RedisResult<()> {
    redis::cmd("HSET")
        .arg(REGISTRY_KEY)
        .arg(node_id)
        .arg(signed)
        .query_async(con)
        .await
}

/// Every stored entry as `(field, value)`, unverified: see [`ClusterKey::verify`].
pub async fn read_all<C: redis::aio::ConnectionLike>(
    con: &mut C,
) -> redis::RedisResult<Vec<(String, String)>> {
    redis::cmd("HGETALL")
        .arg(REGISTRY_KEY)
        .query_async(con)
        .await
}

/// Deletes the entry `field` only if it still holds `value`: a node withdrawing its own
/// registration, or a reader pruning a stale one, never deletes a fresher write.
pub async fn remove_if_unchanged<C: redis::aio::ConnectionLike>(
    con: &mut C,
    field: &str,
    value: &str,
) -> redis::RedisResult<bool> {
    let removed: u64 = redis::Script::new(DELETE_IF_UNCHANGED)
        .key(REGISTRY_KEY)
        .arg(field)
        .arg(value)
        .invoke_async(con)
        .await?;
    Ok(removed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn key(secret: &str) -> ClusterKey {
        ClusterKey::new(secret).expect("a non-empty secret")
    }

    #[test]
    fn a_signed_registration_verifies_under_the_same_secret_only() {
        let r = Registration::new("node-a", "http://10.0.0.1:8000/", NOW);
        assert_eq!(r.url, "http://10.0.0.1:8000");
        let signed = key("s3cret").sign(&r);
        assert_eq!(key("s3cret").verify("node-a", &signed, NOW + 1), Ok(r));
        assert_eq!(
            key("other").verify("node-a", &signed, NOW + 1),
            Err(Rejection::BadSignature)
        );
        assert!(
            ClusterKey::new("").is_none(),
            "an empty secret proves nothing"
        );
    }

    #[test]
    fn unsigned_altered_or_misplaced_entries_are_rejected() {
        let k = key("s3cret");
        let r = Registration::new("node-a", "http://10.0.0.1:8000", NOW);
        let signed = k.sign(&r);
        for junk in ["http://attacker:1", "", "v1.abc", "v1.a.b.c", "v2.x.y"] {
            assert_eq!(
                k.verify("node-a", junk, NOW),
                Err(Rejection::Unsigned),
                "{junk}"
            );
        }
        // The URL swapped in the payload, the MAC kept: the signature no longer matches.
        let forged_payload = serde_json::to_vec(&Registration {
            url: "http://attacker:1".into(),
            ..r.clone()
        })
        .expect("json");
        let tag = signed.rsplit('.').next().expect("a tag");
        let forged = format!("v1.{}.{tag}", URL_SAFE_NO_PAD.encode(forged_payload));
        assert_eq!(
            k.verify("node-a", &forged, NOW),
            Err(Rejection::BadSignature)
        );
        assert!(matches!(
            k.verify("node-b", &signed, NOW),
            Err(Rejection::WrongField { .. })
        ));
        let ftp = k.sign(&Registration::new("node-a", "ftp://x", NOW));
        assert!(matches!(
            k.verify("node-a", &ftp, NOW),
            Err(Rejection::BadUrl(_))
        ));
    }

    #[test]
    fn registrations_expire_and_renewals_keep_their_incarnation() {
        let k = key("s3cret");
        let r = Registration::new("node-a", "http://h:1", NOW);
        let ttl = ttl_ms(REGISTRATION_TTL);
        let signed = k.sign(&r);
        assert!(k.verify("node-a", &signed, NOW + ttl - 1).is_ok());
        assert_eq!(
            k.verify("node-a", &signed, NOW + ttl + 5),
            Err(Rejection::Expired { ago_ms: 5 })
        );
        let renewed = r.renewed(NOW + ttl);
        assert_eq!(renewed.incarnation, r.incarnation);
        assert!(k.verify("node-a", &k.sign(&renewed), NOW + ttl + 5).is_ok());
        assert_ne!(
            Registration::new("node-a", "http://h:1", NOW).incarnation,
            r.incarnation,
            "a new registration is a new incarnation"
        );
        assert!(!k.is_stale(&signed, NOW + ttl + 5));
        assert!(k.is_stale(&signed, NOW + ttl + ttl_ms(PRUNE_AFTER) + 1));
        assert!(
            !k.is_stale("http://attacker:1", u64::MAX),
            "only authentic entries"
        );
    }

    #[test]
    fn long_lived_registrations_are_refused() {
        let k = key("s3cret");
        let mut r = Registration::new("node-a", "http://h:1", NOW);
        r.expires_ms = NOW + ttl_ms(MAX_REGISTRATION_LIFETIME) + 1;
        assert!(matches!(
            k.verify("node-a", &k.sign(&r), NOW),
            Err(Rejection::TooLong { .. })
        ));
    }
}
