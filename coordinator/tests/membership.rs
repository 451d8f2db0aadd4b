//! Membership you can trust: only registrations signed with `CLUSTER_SECRET` join (whoever else
//! writes to Redis gets neither client traffic nor the admin token), a drained self-registered
//! node stays out until it registers anew, and a removed node's background work stops. Real
//! Redis, real node and coordinator processes, on 127.0.0.1.

#[path = "../../node/tests/common/mod.rs"]
mod common;
mod fake_node;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{free_port, minilm_dir, NodeProcess, RedisProcess};
use fake_node::{FakeNode, OnPost};
use rerank_shared::registry::{self, now_ms, ClusterKey, Registration};
use serde_json::{json, Value};

const TOKEN: &str = "membership-admin-token";
const SECRET: &str = "membership-cluster-secret";

async fn coordinator(env: &[(&str, &str)]) -> NodeProcess {
    let mut all = vec![("ADMIN_TOKEN", TOKEN), ("HEALTH_CHECK_INTERVAL_MS", "100")];
    all.extend_from_slice(env);
    NodeProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
        free_port(),
        &all,
    )
    .await
}

async fn admin(coordinator: &NodeProcess, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", coordinator.base))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the coordinator answers");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn ring(coordinator: &NodeProcess) -> Vec<String> {
    let (_, view) = admin(coordinator, reqwest::Method::GET, "/admin/ring").await;
    view["shares"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Polls until `ring` satisfies `want`, for at most `limit`.
async fn wait_for_ring(
    coordinator: &NodeProcess,
    limit: Duration,
    what: &str,
    want: impl Fn(&[String]) -> bool,
) {
    let started = Instant::now();
    loop {
        let now = ring(coordinator).await;
        if want(&now) {
            return;
        }
        assert!(started.elapsed() < limit, "{what}: ring is {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn redis_connection(redis: &RedisProcess) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers")
}

async fn rerank(coordinator: &NodeProcess, query: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/rerank", coordinator.base))
        .json(&json!({"query": query, "texts": ["Paris is in France.", "Berlin is in Germany."]}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn forged_registrations_get_no_traffic_and_never_the_admin_token() {
    let redis = RedisProcess::start();
    let model = minilm_dir();
    let model = model.to_string_lossy().to_string();
    let url = redis.url();
    let node = NodeProcess::start(&[
        ("MODEL_PATH", model.as_str()),
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
        ("CLUSTER_SECRET", SECRET),
        ("ADMIN_TOKEN", TOKEN),
    ])
    .await;
    let coordinator = coordinator(&[
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
        ("CLUSTER_SECRET", SECRET),
    ])
    .await;
    let real = format!("127.0.0.1:{}", node.port);
    wait_for_ring(
        &coordinator,
        Duration::from_secs(10),
        "the signed node joins",
        |r| r.contains(&real),
    )
    .await;

    // Four ways in for someone who can write to Redis but lacks the secret, one listener each.
    let legacy = FakeNode::start(OnPost::Answer).await;
    let unsigned = FakeNode::start(OnPost::Answer).await;
    let wrong_key = FakeNode::start(OnPost::Answer).await;
    let swapped = FakeNode::start(OnPost::Answer).await;
    let mut con = redis_connection(&redis).await;
    let stored: Vec<(String, String)> = registry::read_all(&mut con).await.expect("registry");
    // The node's own signed registration with its URL swapped, its MAC kept.
    let swapped_value = stored.first().map(|(_, genuine)| {
        let mut parts = genuine.split('.');
        let (_, payload, mac) = (parts.next(), parts.next(), parts.next());
        let payload = URL_SAFE_NO_PAD
            .decode(payload.unwrap_or_default())
            .unwrap_or_default();
        let mut forged: Value = serde_json::from_slice(&payload).unwrap_or_default();
        forged["url"] = json!(swapped.url);
        forged["node_id"] = json!("swapped");
        format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(forged.to_string()),
            mac.unwrap_or_default()
        )
    });
    let wrong = ClusterKey::new("a guess")
        .expect("key")
        .sign(&Registration::new("wrong-key", &wrong_key.url, now_ms()));
    let _: () = redis::cmd("SET")
        .arg("rr:nodes:legacy")
        .arg(&legacy.url)
        .arg("EX")
        .arg(60)
        .query_async(&mut con)
        .await
        .expect("SET");
    let forgeries = [
        Some(("unsigned", unsigned.url.clone())),
        Some(("wrong-key", wrong)),
        swapped_value.map(|v| ("swapped", v)),
    ];
    for (f, v) in forgeries.into_iter().flatten() {
        registry::publish(&mut con, f, &v).await.expect("HSET");
    }

    // Several watcher rounds, then client traffic and the admin listing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut failed = Vec::new();
    for i in 0..30 {
        let status = rerank(&coordinator, &format!("hijack probe {i}")).await;
        if status != 200 {
            failed.push((i, status));
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
    let (status, listed) = admin(&coordinator, reqwest::Method::GET, "/admin/nodes").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, vec![real.as_str()], "only the signed node is a member");
    for (name, fake) in [
        ("legacy rr:nodes key", &legacy),
        ("unsigned", &unsigned),
        ("wrong key", &wrong_key),
        ("swapped URL", &swapped),
    ] {
        let seen = fake.seen();
        assert!(
            seen.iter().all(|s| s.path != "/rerank"),
            "{name}: got client requests: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|s| !s.authorization.as_deref().unwrap_or("").contains(TOKEN)),
            "{name}: got the admin token"
        );
        assert!(seen.is_empty(), "{name}: contacted at all: {seen:?}");
    }
}

#[tokio::test]
async fn a_drained_registration_stays_out_until_the_node_registers_anew() {
    let redis = RedisProcess::start();
    let model = minilm_dir();
    let model = model.to_string_lossy().to_string();
    let url = redis.url();
    let node_env = [
        ("MODEL_PATH", model.as_str()),
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
        ("CLUSTER_SECRET", SECRET),
    ];
    let port = free_port();
    let mut node = NodeProcess::start_binary(&common::node_binary(), port, &node_env).await;
    let coordinator = coordinator(&[
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
        ("CLUSTER_SECRET", SECRET),
    ])
    .await;
    let id = format!("127.0.0.1:{port}");
    wait_for_ring(
        &coordinator,
        Duration::from_secs(10),
        "the node joins",
        |r| r.contains(&id),
    )
    .await;

    let (status, body) = admin(
        &coordinator,
        reqwest::Method::DELETE,
        &format!("/admin/nodes/{id}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The node keeps renewing the same registration: it must stay out.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let now = ring(&coordinator).await;
        assert!(
            !now.contains(&id),
            "a drained node came back by itself: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    // A restart is a new registration: the node is back.
    node.kill();
    let _node = NodeProcess::start_binary(&common::node_binary(), port, &node_env).await;
    wait_for_ring(
        &coordinator,
        Duration::from_secs(10),
        "the re-registered node rejoins",
        |r| r.contains(&id),
    )
    .await;
}

#[tokio::test]
async fn a_removed_nodes_health_checks_stop() {
    let fake = FakeNode::start(OnPost::Answer).await;
    let coordinator = coordinator(&[("COORDINATOR_NODES", fake.url.as_str())]).await;
    let started = Instant::now();
    while fake.hits("/health") < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no health checks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = admin(
        &coordinator,
        reqwest::Method::DELETE,
        &format!("/admin/nodes/{}", fake.id()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_removal = fake.hits("/health");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fake.hits("/health"),
        after_removal,
        "health checks of a removed node go on (every 100 ms)"
    );
}
