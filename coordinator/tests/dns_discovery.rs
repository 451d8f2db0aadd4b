//! Membership by DNS, for real: one name that resolves to two loopback addresses (lines in
//! `/etc/hosts`, which the system resolver reads on every lookup), a node listening on each at
//! the same port, a coordinator told only `COORDINATOR_NODES_DNS=name:port` (plus one static
//! node, to show the sources combine). It routes to both; when the name loses an address the
//! coordinator drops that node within a few intervals; when the name stops resolving it keeps
//! the last good set; when the address is back, so is the node.
//!
//! The test writes `/etc/hosts` (so it must run as root, as CI does) and removes its lines
//! afterwards, also when it fails. Every socket is on 127.0.0.0/8; every wait is bounded.

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, minilm_dir, NodeProcess};
use serde_json::{json, Value};

const TOKEN: &str = "dns-admin-token";
const HOSTS: &str = "/etc/hosts";
/// `COORDINATOR_NODES_DNS_INTERVAL_MS` of the test's coordinator.
const INTERVAL: Duration = Duration::from_millis(300);

/// This test's lines in `/etc/hosts`, each tagged with a marker; removed when dropped (a panic
/// included), leaving every other line as it was.
struct HostsEntries {
    name: String,
    marker: String,
}

impl HostsEntries {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            marker: format!("# rerank-dns-test {}", std::process::id()),
        }
    }

    /// Makes `name` resolve to `addrs` (none: to nothing, so it does not resolve).
    fn resolve_to(&self, addrs: &[&str]) {
        let current = std::fs::read_to_string(HOSTS)
            .unwrap_or_else(|e| panic!("this test needs to read {HOSTS}: {e}"));
        let mut text: String = current
            .lines()
            .filter(|l| !l.ends_with(&self.marker))
            .map(|l| format!("{l}\n"))
            .collect();
        for addr in addrs {
            text.push_str(&format!("{addr} {} {}\n", self.name, self.marker));
        }
        // Written in place: /etc/hosts is often a bind mount that cannot be replaced by rename.
        std::fs::write(HOSTS, text).unwrap_or_else(|e| {
            panic!("this test maps a name to loopback addresses in {HOSTS} and must be able to write it (run it as root): {e}")
        });
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        if let Ok(current) = std::fs::read_to_string(HOSTS) {
            let kept: String = current
                .lines()
                .filter(|l| !l.ends_with(&self.marker))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(HOSTS, kept);
        }
    }
}

async fn ring(coordinator: &NodeProcess) -> BTreeSet<String> {
    let view: Value = match reqwest::Client::new()
        .get(format!("{}/admin/ring", coordinator.base))
        .bearer_auth(TOKEN)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    view["shares"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Waits until the ring is exactly `want`; how long it took.
async fn wait_for_ring(coordinator: &NodeProcess, want: &[&String], what: &str) -> Duration {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let started = Instant::now();
    loop {
        let now = ring(coordinator).await;
        if now == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: the ring is {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `count` requests with distinct queries (spread over the ring); the nodes that served
/// them. Every one must succeed.
async fn spread(coordinator: &NodeProcess, tag: &str, count: usize) -> BTreeSet<String> {
    let http = reqwest::Client::new();
    let mut served = BTreeSet::new();
    for i in 0..count {
        let r = http
            .post(format!("{}/rerank", coordinator.base))
            .json(&json!({"query": format!("{tag} {i}: where is paris?"),
                          "texts": ["Paris is in France.", "Berlin is in Germany."]}))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the coordinator answers");
        assert_eq!(r.status().as_u16(), 200, "{tag} {i}");
        if let Some(node) = r.headers().get("x-served-by").and_then(|v| v.to_str().ok()) {
            served.insert(node.to_string());
        }
    }
    served
}

#[tokio::test]
async fn a_name_with_many_addresses_is_the_node_set_and_the_last_good_set_survives_failures() {
    let model = minilm_dir().to_string_lossy().to_string();
    let name = format!("rerank-dns-test-{}", std::process::id());
    let hosts = HostsEntries::new(&name);
    hosts.resolve_to(&["127.0.0.2", "127.0.0.3"]);

    let port = free_port();
    let env = [
        ("MODEL_PATH", model.as_str()),
        ("ADMIN_TOKEN", TOKEN),
        ("OMP_NUM_THREADS", "1"),
    ];
    let node = common::node_binary();
    let _a = NodeProcess::start_binary_at(&node, "127.0.0.2", port, &env).await;
    let _b = NodeProcess::start_binary_at(&node, "127.0.0.3", port, &env).await;
    let stat = NodeProcess::start_binary(&node, free_port(), &env).await;
    let (a, b, s) = (
        format!("127.0.0.2:{port}"),
        format!("127.0.0.3:{port}"),
        format!("127.0.0.1:{}", stat.port),
    );

    let target = format!("{name}:{port}");
    let interval = INTERVAL.as_millis().to_string();
    let coordinator = NodeProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
        free_port(),
        &[
            ("COORDINATOR_NODES_DNS", target.as_str()),
            ("COORDINATOR_NODES_DNS_INTERVAL_MS", interval.as_str()),
            ("COORDINATOR_NODES", stat.base.as_str()),
            ("HEALTH_CHECK_INTERVAL_MS", "200"),
            ("ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;

    let joined = wait_for_ring(&coordinator, &[&a, &b, &s], "both addresses join").await;
    let served = spread(&coordinator, "two addresses", 60).await;
    assert!(
        served.contains(&a) && served.contains(&b),
        "requests reach both addresses of the name: {served:?}"
    );

    hosts.resolve_to(&["127.0.0.2"]);
    let dropped = wait_for_ring(&coordinator, &[&a, &s], "the vanished address leaves").await;
    let served = spread(&coordinator, "one address", 30).await;
    assert!(!served.contains(&b), "{b} still served: {served:?}");

    hosts.resolve_to(&[]);
    let unresolvable = Instant::now();
    tokio::time::sleep(INTERVAL * 10).await;
    assert_eq!(
        ring(&coordinator).await,
        [a.clone(), s.clone()].into_iter().collect(),
        "the last good set stays while the name does not resolve"
    );
    let served = spread(&coordinator, "unresolvable", 30).await;
    assert!(served.contains(&a), "{served:?}");
    let kept_for = unresolvable.elapsed();

    hosts.resolve_to(&["127.0.0.2", "127.0.0.3"]);
    let back = wait_for_ring(&coordinator, &[&a, &b, &s], "the address comes back").await;
    drop(hosts);
    let restored = std::fs::read_to_string(HOSTS).expect("read");
    assert!(
        !restored.contains(&name),
        "{HOSTS} still names {name}: {restored}"
    );
    eprintln!(
        "DNS membership ({target}, every {} ms, beside a static node): both addresses in the \
         ring {} ms after the coordinator first answered, requests on both; an address removed from the name left in \
         {} ms; the name unresolvable for {} ms kept the last good set and served; the address \
         back in {} ms",
        INTERVAL.as_millis(),
        joined.as_millis(),
        dropped.as_millis(),
        kept_for.as_millis(),
        back.as_millis()
    );
}
