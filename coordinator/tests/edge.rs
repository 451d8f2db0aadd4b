//! The coordinator's bounds, each through a real coordinator process on 127.0.0.1: a hung node
//! costs one attempt timeout and leaves nothing in flight; every node timing out is a 504; a
//! slow head or body gets 408 and its connection closed; rerank endpoints take JSON only; a
//! worker holds at most `MAX_CONNECTIONS` connections.

#[path = "../../node/tests/common/mod.rs"]
mod common;
mod fake_node;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, minilm_dir, NodeProcess};
use fake_node::{FakeNode, OnPost};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "edge-admin-token";

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

async fn post(base: &str, path: &str, content_type: Option<&str>, body: &str) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_string())
        .timeout(Duration::from_secs(30));
    if let Some(t) = content_type {
        r = r.header("content-type", t);
    }
    r.send().await.expect("the coordinator answers")
}

/// Reads what the server sends until it closes the connection (or `limit` passes); returns
/// the bytes, when the first of them came, and whether the server closed.
async fn read_until_closed(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    started: Instant,
    limit: Duration,
) -> (String, Option<Duration>, bool) {
    let mut received = Vec::new();
    let mut first = None;
    let closed = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    first.get_or_insert_with(|| started.elapsed());
                    received.extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
    .await
    .is_ok();
    (
        String::from_utf8_lossy(&received).to_string(),
        first,
        closed,
    )
}

#[tokio::test]
async fn a_hung_node_costs_one_attempt_timeout_and_nothing_stays_in_flight() {
    let model = minilm_dir();
    let model = model.to_string_lossy().to_string();
    let node = NodeProcess::start(&[("MODEL_PATH", model.as_str())]).await;
    let hung = FakeNode::start(OnPost::Hang).await;
    let nodes = format!("{},{}", node.base, hung.url);
    let coordinator = coordinator(&[
        ("COORDINATOR_NODES", nodes.as_str()),
        ("ROUTING", "round_robin"),
        ("REQUEST_TIMEOUT_MS", "400"),
    ])
    .await;
    // Until the hung node has swallowed three requests (bounded: 100 requests; a timed-out
    // node is skipped until its next passing health check, so under load it takes a while).
    for i in 0..100 {
        if hung.hung().0 >= 3 {
            break;
        }
        let r = post(
            &coordinator.base,
            "/rerank",
            Some("application/json"),
            &json!({"query": format!("q{i}"), "texts": ["a", "b"]}).to_string(),
        )
        .await;
        assert_eq!(r.status(), 200, "failed over to the live node");
    }
    let (hung_requests, _) = hung.hung();
    assert!(
        hung_requests >= 3,
        "the hung node got requests: {hung_requests}"
    );

    let started = Instant::now();
    loop {
        let r = reqwest::Client::new()
            .get(format!("{}/admin/nodes", coordinator.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("answered");
        let listed: Value = r.json().await.expect("json");
        let in_flight = listed["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["id"] == hung.id())
            .map(|n| n["in_flight"].as_u64().unwrap_or(u64::MAX));
        let (hung_requests, closed) = hung.hung();
        if in_flight == Some(0) && closed == hung_requests {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "after the timeouts: in_flight {in_flight:?} at the hung node, {closed} of \
             {hung_requests} of its connections closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_node_timing_out_is_a_504_in_the_endpoints_format() {
    let hung = FakeNode::start(OnPost::Hang).await;
    let coordinator = coordinator(&[
        ("COORDINATOR_NODES", hung.url.as_str()),
        ("REQUEST_TIMEOUT_MS", "300"),
    ])
    .await;
    let started = Instant::now();
    let tei = post(
        &coordinator.base,
        "/rerank",
        Some("application/json"),
        r#"{"query": "q", "texts": ["a"]}"#,
    )
    .await;
    assert_eq!(tei.status(), 504);
    assert_eq!(tei.headers()["x-coordinator-error"], "gateway_timeout");
    let body: Value = tei.json().await.expect("json");
    assert!(
        body["error"].is_string() && body["error_type"] == "unhealthy",
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the attempt timeout"
    );

    // The passive failure detection may have taken the node out; wait for its health check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cohere = post(
        &coordinator.base,
        "/v1/rerank",
        Some("application/json"),
        r#"{"query": "q", "documents": ["a"]}"#,
    )
    .await;
    let status = cohere.status();
    let body: Value = cohere.json().await.expect("json");
    assert_eq!(status, 504, "{body}");
    assert!(
        body["message"].is_string() && body.get("error").is_none(),
        "{body}"
    );
}

#[tokio::test]
async fn a_slow_body_gets_408_within_the_read_timeout_and_its_connection_closed() {
    let fake = FakeNode::start(OnPost::Answer).await;
    let coordinator = coordinator(&[
        ("COORDINATOR_NODES", fake.url.as_str()),
        ("HTTP_READ_TIMEOUT_MS", "1000"),
    ])
    .await;
    let stream = TcpStream::connect(("127.0.0.1", coordinator.port))
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let body = json!({"query": "q", "texts": ["a slow body, sent a byte at a time"]}).to_string();
    let head = format!(
        "POST /rerank HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    write.write_all(head.as_bytes()).await.expect("head");
    let dribble = tokio::spawn(async move {
        for byte in body.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (answer, first, closed) =
        read_until_closed(&mut read, started, Duration::from_secs(4)).await;
    dribble.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        first.is_some_and(|t| t < Duration::from_millis(3000)),
        "answered after {first:?}"
    );
    assert!(closed, "the connection stays open after the 408");
    assert!(answer.contains("error_type"), "TEI's format: {answer}");
    assert_eq!(fake.hits("/rerank"), 0, "nothing reached a node");
}

#[tokio::test]
async fn a_slow_head_gets_408_within_the_read_timeout() {
    let fake = FakeNode::start(OnPost::Answer).await;
    let coordinator = coordinator(&[
        ("COORDINATOR_NODES", fake.url.as_str()),
        ("HTTP_READ_TIMEOUT_MS", "1000"),
    ])
    .await;
    let stream = TcpStream::connect(("127.0.0.1", coordinator.port))
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let dribble = tokio::spawn(async move {
        let head = format!(
            "POST /rerank HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: {}\r\n\r\n",
            "a".repeat(100)
        );
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (answer, first, closed) =
        read_until_closed(&mut read, started, Duration::from_secs(4)).await;
    dribble.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        first.is_some_and(|t| t < Duration::from_millis(3000)),
        "answered after {first:?}"
    );
    assert!(closed, "the connection stays open after the 408");
}

#[tokio::test]
async fn rerank_endpoints_take_json_only() {
    let fake = FakeNode::start(OnPost::Answer).await;
    let coordinator = coordinator(&[("COORDINATOR_NODES", fake.url.as_str())]).await;
    let body = r#"{"query": "q", "texts": ["a"], "documents": ["a"]}"#;
    let r = post(&coordinator.base, "/rerank", Some("text/plain"), body).await;
    assert_eq!(r.status(), 415);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["error_type"], "validation", "{answer}");
    for path in ["/v1/rerank", "/v2/rerank"] {
        let r = post(&coordinator.base, path, None, body).await;
        assert_eq!(r.status(), 415, "{path}");
        let answer: Value = r.json().await.expect("json");
        assert!(answer["message"].is_string(), "{path}: {answer}");
    }
    assert_eq!(fake.hits("/rerank") + fake.hits("/v1/rerank"), 0);
    for t in [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
    ] {
        let r = post(&coordinator.base, "/rerank", Some(t), body).await;
        assert_eq!(r.status(), 200, "{t}");
    }
    assert_eq!(fake.hits("/rerank"), 3);
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let fake = FakeNode::start(OnPost::Answer).await;
    let coordinator = coordinator(&[
        ("COORDINATOR_NODES", fake.url.as_str()),
        ("MAX_CONNECTIONS", "1"),
    ])
    .await;
    // One slot per worker; more idle connections than any machine has workers.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(
            TcpStream::connect(("127.0.0.1", coordinator.port))
                .await
                .expect("connect"),
        );
    }
    let started = Instant::now();
    let probe = tokio::spawn(
        reqwest::Client::new()
            .get(format!("{}/health", coordinator.base))
            .timeout(Duration::from_secs(10))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !probe.is_finished(),
        "answered with every worker's connection slots taken"
    );
    drop(idle);
    let answered = probe
        .await
        .expect("joined")
        .expect("answered once slots free up");
    assert_eq!(answered.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}
