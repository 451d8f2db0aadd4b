//! Nodes that register themselves in Redis join the ring; when a registration expires, the node
//! leaves. Only registrations signed with this coordinator's `CLUSTER_SECRET` count (the
//! protocol is `rerank_shared::registry`): an entry anyone else wrote is ignored, and logged
//! once. A Redis outage changes nothing: the last known membership stays.

use std::collections::HashMap;
use std::time::Duration;

use actix::WeakAddr;
use rerank_shared::registry::{self, now_ms, ClusterKey, Registration, REFRESH_INTERVAL};

use crate::actors::{RouterActor, SyncRegistry};

/// Bound on each Redis call of the watcher.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Sorts the registry's entries into verified registrations, remembering what it rejected so
/// that each rejected entry is logged once, not every second.
#[derive(Debug)]
pub struct RegistryReader {
    key: ClusterKey,
    /// Field → the rejected value last logged for it.
    rejected: HashMap<String, String>,
}

impl RegistryReader {
    /// A reader accepting registrations signed with `key`.
    pub fn new(key: ClusterKey) -> Self {
        Self {
            key,
            rejected: HashMap::new(),
        }
    }

    /// The registrations among `entries` (field, value) valid at `now_ms`, and the entries
    /// stale enough to delete.
    pub fn sort(
        &mut self,
        entries: Vec<(String, String)>,
        now_ms: u64,
    ) -> (Vec<Registration>, Vec<(String, String)>) {
        let mut valid = Vec::new();
        let mut stale = Vec::new();
        self.rejected
            .retain(|field, _| entries.iter().any(|(f, _)| f == field));
        for (field, value) in entries {
            match self.key.verify(&field, &value, now_ms) {
                Ok(registration) => {
                    self.rejected.remove(&field);
                    valid.push(registration);
                }
                Err(registry::Rejection::Expired { .. }) => {
                    if self.key.is_stale(&value, now_ms) {
                        stale.push((field, value));
                    }
                }
                Err(rejection) => {
                    if self.rejected.get(&field) != Some(&value) {
                        tracing::warn!(
                            field = %field,
                            %rejection,
                            "ignoring a node registration that this cluster's secret did not sign"
                        );
                        self.rejected.insert(field, value);
                    }
                }
            }
        }
        (valid, stale)
    }
}

/// Reads the registry every [`REFRESH_INTERVAL`], telling the router what it finds, until the
/// router stops.
pub async fn watch(client: redis::Client, key: ClusterKey, router: WeakAddr<RouterActor>) {
    let mut reader = RegistryReader::new(key);
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        let Some(router) = router.upgrade() else {
            return;
        };
        if connection.is_none() {
            connection =
                tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
                    .await
                    .ok()
                    .and_then(Result::ok);
        }
        if let Some(con) = connection.as_mut() {
            match tokio::time::timeout(REDIS_TIMEOUT, registry::read_all(con)).await {
                Ok(Ok(entries)) => {
                    let (registrations, stale) = reader.sort(entries, now_ms());
                    router.do_send(SyncRegistry { registrations });
                    for (field, value) in stale {
                        let pruned = tokio::time::timeout(
                            REDIS_TIMEOUT,
                            registry::remove_if_unchanged(con, &field, &value),
                        )
                        .await;
                        if let Ok(Ok(true)) = pruned {
                            tracing::debug!(node = %field, "pruned a long-expired registration");
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "node registry unreadable; keeping the last membership");
                    connection = None;
                }
                Err(_) => {
                    tracing::warn!("node registry read timed out; keeping the last membership");
                    connection = None;
                }
            }
        }
        drop(router);
        tokio::time::sleep(REFRESH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signed_registrations_pass_and_stale_ones_are_marked_for_pruning() {
        let key = ClusterKey::new("s3cret").expect("key");
        let now = 1_800_000_000_000;
        let good = Registration::new("a", "http://127.0.0.1:1", now);
        let old = Registration::new("b", "http://127.0.0.1:2", now - 120_000);
        let forged = ClusterKey::new("guess")
            .expect("key")
            .sign(&Registration::new("c", "http://attacker:1", now));
        let entries = vec![
            ("a".to_string(), key.sign(&good)),
            ("b".to_string(), key.sign(&old)),
            ("c".to_string(), forged),
            ("x".to_string(), "http://attacker:2".to_string()),
        ];
        let mut reader = RegistryReader::new(key);
        let (valid, stale) = reader.sort(entries.clone(), now);
        assert_eq!(valid, vec![good]);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "b");
        assert_eq!(reader.rejected.len(), 2, "c and x, logged once each");
        let _ = reader.sort(entries[..1].to_vec(), now);
        assert!(reader.rejected.is_empty(), "forgotten once gone");
    }
}
