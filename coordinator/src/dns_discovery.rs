//! Membership by DNS: with `COORDINATOR_NODES_DNS=name:port`, every address the name resolves to
//! (A and AAAA) is a node at `http://ADDR:PORT`. That is how a compose service scaled to N
//! (`--scale node=N`: the service name resolves to every replica) or a Kubernetes headless
//! Service (one record per ready pod) names its nodes.
//!
//! The name is resolved again every `COORDINATOR_NODES_DNS_INTERVAL_MS`, and each successful
//! answer becomes the router's DNS members ([`SyncDns`]): new addresses join, vanished ones
//! leave. A failed or empty answer changes nothing — a resolver hiccup must not empty the
//! cluster — and is logged once per streak. Resolution goes through the system resolver
//! (`getaddrinfo`, so `/etc/hosts` and `nsswitch.conf` apply), off the event loop.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use actix::WeakAddr;

use crate::actors::{RouterActor, SyncDns};

/// The name to resolve and the port its nodes serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    pub name: String,
    pub port: u16,
}

impl std::fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// Why a resolution gave no node set.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve: {0}")]
    Failed(#[from] std::io::Error),
    #[error("no answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the name has no addresses")]
    Empty,
}

/// The node URLs of `addrs`: `http://ADDR:PORT` (IPv6 in brackets), each once, in a stable
/// order.
pub fn node_urls(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<String> {
    let unique: BTreeSet<SocketAddr> = addrs.into_iter().collect();
    unique.into_iter().map(|a| format!("http://{a}")).collect()
}

/// Resolves `target` to its node URLs, within `limit`.
pub async fn resolve(target: &DnsTarget, limit: Duration) -> Result<Vec<String>, ResolveError> {
    let lookup = tokio::net::lookup_host((target.name.as_str(), target.port));
    let addrs = tokio::time::timeout(limit, lookup)
        .await
        .map_err(|_| ResolveError::TimedOut(limit))??;
    let urls = node_urls(addrs);
    if urls.is_empty() {
        return Err(ResolveError::Empty);
    }
    Ok(urls)
}

/// The last set a resolution gave, kept through failures.
#[derive(Debug, Default)]
pub struct LastGoodSet {
    urls: Option<Vec<String>>,
    failing: bool,
}

impl LastGoodSet {
    /// The set to apply after `answer`: its URLs when it succeeded, `None` (keep what is there)
    /// when it failed. Logs changes, and the first failure of a streak.
    pub fn update(
        &mut self,
        target: &DnsTarget,
        answer: Result<Vec<String>, ResolveError>,
    ) -> Option<Vec<String>> {
        match answer {
            Ok(urls) => {
                if self.failing {
                    tracing::info!(%target, "node DNS name resolves again");
                }
                self.failing = false;
                if self.urls.as_ref() != Some(&urls) {
                    tracing::info!(%target, nodes = ?urls, "node set from DNS");
                    self.urls = Some(urls.clone());
                }
                Some(urls)
            }
            Err(error) => {
                if !self.failing {
                    tracing::warn!(
                        %target,
                        %error,
                        kept = self.urls.as_ref().map_or(0, Vec::len),
                        "node DNS name did not resolve; keeping the last good node set"
                    );
                }
                self.failing = true;
                None
            }
        }
    }
}

/// Resolves `target` every `interval`, telling the router each good answer, until the router
/// stops.
pub async fn watch(target: DnsTarget, interval: Duration, router: WeakAddr<RouterActor>) {
    // Long enough for a slow resolver, short enough not to hold up the next round much.
    let limit = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut last = LastGoodSet::default();
    loop {
        if router.upgrade().is_none() {
            return;
        }
        let answer = resolve(&target, limit).await;
        if let Some(urls) = last.update(&target, answer) {
            match router.upgrade() {
                Some(router) => router.do_send(SyncDns { urls }),
                None => return,
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> DnsTarget {
        DnsTarget {
            name: name.into(),
            port: 8000,
        }
    }

    #[test]
    fn urls_are_unique_sorted_and_bracket_ipv6() {
        let addrs: Vec<SocketAddr> = [
            "127.0.0.3:8000",
            "[::1]:8000",
            "127.0.0.2:8000",
            "127.0.0.3:8000",
        ]
        .iter()
        .map(|a| a.parse().expect("addr"))
        .collect();
        assert_eq!(
            node_urls(addrs),
            vec![
                "http://127.0.0.2:8000",
                "http://127.0.0.3:8000",
                "http://[::1]:8000"
            ]
        );
    }

    /// Failures and empty answers keep what was there; the next good answer replaces it.
    #[test]
    fn failures_keep_the_last_good_set() {
        let t = target("nodes");
        let mut last = LastGoodSet::default();
        assert_eq!(last.update(&t, Err(ResolveError::Empty)), None);
        let two = vec![
            "http://10.0.0.1:8000".to_string(),
            "http://10.0.0.2:8000".into(),
        ];
        assert_eq!(last.update(&t, Ok(two.clone())), Some(two.clone()));
        assert_eq!(last.update(&t, Err(ResolveError::Empty)), None);
        assert_eq!(
            last.update(&t, Err(ResolveError::TimedOut(Duration::from_secs(1)))),
            None
        );
        assert!(last.failing);
        assert_eq!(last.urls.as_ref(), Some(&two));
        let one = vec!["http://10.0.0.2:8000".to_string()];
        assert_eq!(last.update(&t, Ok(one.clone())), Some(one));
        assert!(!last.failing);
    }

    /// The system resolver answers for `localhost` and an IP literal, and fails for a name
    /// under `.invalid` (RFC 6761: never resolves).
    #[tokio::test]
    async fn the_system_resolver_is_asked() {
        let limit = Duration::from_secs(5);
        let local = resolve(&target("localhost"), limit)
            .await
            .expect("localhost");
        assert!(
            local.iter().any(|u| u == "http://127.0.0.1:8000"),
            "{local:?}"
        );
        let literal = resolve(&target("::1"), limit).await.expect("a literal");
        assert_eq!(literal, vec!["http://[::1]:8000".to_string()]);
        let missing = resolve(&target("no-such-node.invalid"), limit).await;
        assert!(missing.is_err(), "{missing:?}");
    }
}
