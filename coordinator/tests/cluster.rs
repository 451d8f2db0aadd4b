//! Cluster tests: three real `rerank-node` processes behind a real `rerank-coordinator`, all on
//! 127.0.0.1, for affinity, failover, rejoining, draining and the admin API.

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, minilm_dir, NodeProcess};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token";

struct Cluster {
    nodes: Vec<Option<NodeProcess>>,
    ports: Vec<u16>,
    coordinator: NodeProcess,
    model: String,
}

async fn start_node(model: &str, port: u16) -> NodeProcess {
    NodeProcess::start_binary(
        &common::node_binary(),
        port,
        &[("MODEL_PATH", model), ("ADMIN_TOKEN", TOKEN)],
    )
    .await
}

impl Cluster {
    async fn start(nodes: usize, extra: &[(&str, &str)]) -> Self {
        let model = minilm_dir().to_string_lossy().to_string();
        let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let mut procs = Vec::new();
        for &p in &ports {
            procs.push(Some(start_node(&model, p).await));
        }
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let urls = urls.join(",");
        let mut env = vec![
            ("COORDINATOR_NODES", urls.as_str()),
            ("HEALTH_CHECK_INTERVAL_MS", "200"),
            ("ADMIN_TOKEN", TOKEN),
        ];
        env.extend_from_slice(extra);
        let coordinator = NodeProcess::start_binary(
            Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
            free_port(),
            &env,
        )
        .await;
        Self {
            nodes: procs,
            ports,
            coordinator,
            model,
        }
    }

    fn node_id(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    async fn rerank(&self, query: &str, docs: &[&str]) -> (u16, Option<String>, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/rerank", self.coordinator.base))
            .json(&json!({"query": query, "texts": docs}))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the coordinator answers");
        let served_by = r
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (
            r.status().as_u16(),
            served_by,
            r.json().await.unwrap_or(Value::Null),
        )
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r =
            reqwest::Client::new().request(method, format!("{}{path}", self.coordinator.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("answered");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// Sends rounds of `width` distinct concurrent requests, at least `rounds` of them and until
/// `min_duration` has passed (bounded: at most 500 rounds); returns the failures.
async fn steady_load(
    cluster: &Cluster,
    tag: &str,
    rounds: usize,
    width: usize,
    min_duration: Duration,
) -> Vec<String> {
    let mut failures = Vec::new();
    let started = Instant::now();
    for round in 0..500 {
        if round >= rounds && started.elapsed() >= min_duration {
            break;
        }
        let queries: Vec<String> = (0..width)
            .map(|i| format!("{tag} question {round}-{i}"))
            .collect();
        let results = join_all(
            queries
                .iter()
                .map(|q| cluster.rerank(q, &["Paris is in France.", "Berlin is in Germany."])),
        )
        .await;
        for (q, (status, _, body)) in queries.iter().zip(results) {
            if status != 200 {
                failures.push(format!("{q}: {status} {body}"));
            }
        }
    }
    failures
}

#[tokio::test]
async fn one_query_lands_on_one_node_and_the_api_passes_through() {
    let cluster = Cluster::start(3, &[]).await;
    let docs = [
        "Berlin is the capital of Germany.",
        "Paris is the capital and largest city of France.",
    ];
    let mut served = Vec::new();
    for _ in 0..6 {
        let (status, by, ranks) = cluster
            .rerank("What is the capital of France?", &docs)
            .await;
        assert_eq!(status, 200);
        assert_eq!(ranks[0]["index"], 1, "{ranks}");
        served.push(by.expect("x-served-by"));
    }
    served.dedup();
    assert_eq!(served.len(), 1, "one query, one node: {served:?}");

    let mut owners = std::collections::HashSet::new();
    for i in 0..24 {
        let (status, by, _) = cluster.rerank(&format!("query number {i}"), &docs).await;
        assert_eq!(status, 200);
        owners.insert(by.expect("x-served-by"));
    }
    assert!(
        owners.len() >= 2,
        "queries spread over the ring: {owners:?}"
    );

    let r = reqwest::Client::new()
        .post(format!("{}/v1/rerank", cluster.coordinator.base))
        .header("x-request-id", "end-to-end-42")
        .json(&json!({"query": "What is the capital of France?", "documents": docs, "top_n": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.headers()["x-request-id"], "end-to-end-42");
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["id"], "end-to-end-42",
        "the node saw the same request id"
    );
    assert_eq!(body["results"][0]["index"], 1);

    let bad = reqwest::Client::new()
        .post(format!("{}/rerank", cluster.coordinator.base))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        bad.status(),
        StatusCode::BAD_REQUEST,
        "node errors pass through unchanged"
    );
}

#[tokio::test]
async fn a_killed_node_fails_no_request_and_takes_its_share_again_after_restart() {
    let mut cluster = Cluster::start(3, &[]).await;
    let before = steady_load(&cluster, "warm", 2, 6, Duration::ZERO).await;
    assert!(before.is_empty(), "{before:?}");

    // Killed inside the load: requests in flight at node 1 and those routed to it fail over.
    let mut victim = cluster.nodes[1].take();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(n) = victim.as_mut() {
            n.kill();
        }
    };
    let (failures, ()) = tokio::join!(
        steady_load(&cluster, "during", 8, 6, Duration::from_millis(1500)),
        kill
    );
    drop(victim);
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );

    let restarted = start_node(&cluster.model, cluster.ports[1]).await;
    cluster.nodes[1] = Some(restarted);
    let id = cluster.node_id(1);
    let started = Instant::now();
    loop {
        let mut served = std::collections::HashSet::new();
        for i in 0..24 {
            let (status, by, _) = cluster
                .rerank(&format!("after restart {i}"), &["a", "b"])
                .await;
            assert_eq!(status, 200);
            served.insert(by.unwrap_or_default());
        }
        if served.contains(&id) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the restarted node never took traffic again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn admin_needs_the_token_and_a_drain_loses_nothing() {
    let cluster = Cluster::start(3, &[]).await;
    let get = reqwest::Method::GET;
    assert_eq!(
        cluster
            .admin(get.clone(), "/admin/nodes", None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        cluster
            .admin(get.clone(), "/admin/nodes", Some("wrong"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        cluster
            .admin(reqwest::Method::DELETE, "/admin/nodes/x", None, None)
            .await
            .0,
        401
    );
    let (status, listed) = cluster
        .admin(get.clone(), "/admin/nodes", Some(TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let nodes = listed["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["state"], "healthy", "{n}");
        assert!(
            n["node_stats"]["micro_batcher"].is_object(),
            "each node's own stats: {n}"
        );
        assert!(n["ring_share"].as_f64().unwrap_or(0.0) > 0.1);
    }

    let drained = cluster.node_id(2);
    let load = steady_load(&cluster, "drain", 6, 6, Duration::from_millis(1000));
    let drain = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster
            .admin(
                reqwest::Method::DELETE,
                &format!("/admin/nodes/{drained}"),
                Some(TOKEN),
                None,
            )
            .await
    };
    let (failures, (status, body)) = tokio::join!(load, drain);
    assert_eq!(status, 200, "{body}");
    assert!(failures.is_empty(), "{failures:?}");
    let (_, ring) = cluster
        .admin(get.clone(), "/admin/ring", Some(TOKEN), None)
        .await;
    assert_eq!(
        ring["shares"].as_object().map(|m| m.len()),
        Some(2),
        "{ring}"
    );
    for i in 0..12 {
        let (status, by, _) = cluster.rerank(&format!("after drain {i}"), &["a"]).await;
        assert_eq!(status, 200);
        assert_ne!(
            by.as_deref(),
            Some(drained.as_str()),
            "no traffic to a removed node"
        );
    }

    let url = format!("http://127.0.0.1:{}", cluster.ports[2]);
    let (status, _) = cluster
        .admin(
            reqwest::Method::POST,
            "/admin/nodes",
            Some(TOKEN),
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, ring) = cluster.admin(get, "/admin/ring", Some(TOKEN), None).await;
    assert_eq!(ring["shares"].as_object().map(|m| m.len()), Some(3));
}

#[tokio::test]
async fn with_every_node_down_clients_get_a_quick_503() {
    let mut cluster = Cluster::start(1, &[]).await;
    if let Some(mut n) = cluster.nodes[0].take() {
        n.kill();
    }
    let started = Instant::now();
    let (status, _, body) = cluster.rerank("anything", &["a"]).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].is_string() && body["error_type"] == "unhealthy",
        "{body}"
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/rerank", cluster.coordinator.base))
        .json(&json!({"query": "q", "documents": ["a"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    assert!(body["message"].is_string(), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
}

#[tokio::test]
async fn nodes_registered_in_redis_join_and_leave_the_ring() {
    let redis = common::RedisProcess::start();
    let model = minilm_dir();
    let model = model.to_string_lossy().to_string();
    let url = redis.url();
    let node_env = [
        ("MODEL_PATH", model.as_str()),
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
        ("CLUSTER_SECRET", "cluster-test-secret"),
    ];
    let a = NodeProcess::start(&node_env).await;
    let mut b = NodeProcess::start(&node_env).await;
    let coordinator = NodeProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
        free_port(),
        &[
            ("REDIS_ENABLED", "true"),
            ("REDIS_URL", url.as_str()),
            ("CLUSTER_SECRET", "cluster-test-secret"),
            ("ADMIN_TOKEN", TOKEN),
            ("HEALTH_CHECK_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let ring = || async {
        let r = reqwest::Client::new()
            .get(format!("{}/admin/ring", coordinator.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("sent");
        let v: Value = r.json().await.expect("json");
        v["shares"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let started = Instant::now();
    while ring().await.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "registered nodes never joined"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/rerank", coordinator.base))
        .json(&json!({"query": "q", "texts": ["a", "b"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    b.kill();
    let gone = format!("127.0.0.1:{}", b.port);
    let started = Instant::now();
    while ring().await.contains(&gone) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "an expired registration never left"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ring().await, vec![format!("127.0.0.1:{}", a.port)]);
    // Membership was read and written all along without `KEYS`, which blocks Redis for the
    // whole keyspace (scores included) on every call.
    let mut con = redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("INFO");
    assert!(
        stats.contains("cmdstat_hgetall:"),
        "the registry was read: {stats}"
    );
    assert!(!stats.contains("cmdstat_keys:"), "KEYS ran: {stats}");
}
