//! A node's graceful drain on SIGTERM, what every rollout sends, through a real `rerank-node`
//! process: a request in flight completes, `/health` says `draining` and new requests get 503
//! (in each endpoint's format) during the notice, then the listener closes, and the node exits
//! 0 — as soon as its work is done, or at the end of the grace period when the work outlasts it.
//! Every wait is bounded; every socket targets 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{minilm_dir, NodeProcess};
use serde_json::{json, Value};

const TOKEN: &str = "drain-admin-token";

/// Slack for a loaded machine (debug builds, other test processes) on top of every bound.
const SLACK: Duration = Duration::from_secs(5);

/// A node on all-MiniLM-L6-v2 with one model thread (so a big request takes seconds), the
/// admin token (to see its running requests) and `extra` settings.
async fn start_node(extra: &[(&str, &str)]) -> NodeProcess {
    let model = minilm_dir().to_string_lossy().to_string();
    let mut env = vec![
        ("MODEL_PATH", model.as_str()),
        ("ADMIN_TOKEN", TOKEN),
        ("OMP_NUM_THREADS", "1"),
        ("MAX_BATCH_TOKENS", "2048"),
        // The node's own deadline must not end the slow request before the drain does.
        ("REQUEST_TIMEOUT_MS", "300000"),
    ];
    env.extend_from_slice(extra);
    NodeProcess::start(&env).await
}

/// A request of `docs` long documents under a query of its own (nothing cached): seconds of
/// work on one thread.
fn slow_body(tag: &str, docs: usize) -> Value {
    let texts: Vec<String> = (0..docs)
        .map(|d| {
            format!(
                "{tag} {d}: {}",
                "the long history of paris and france from the romans to the republic ".repeat(16)
            )
        })
        .collect();
    json!({"query": format!("{tag}: what happened in paris?"), "texts": texts, "truncate": true})
}

/// Sends `body` to `/rerank`; its status and JSON body (status 0 when no answer came).
async fn rerank(base: String, body: Value) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{base}/rerank"))
        .json(&body)
        .timeout(Duration::from_secs(300))
        .send()
        .await;
    match answer {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_zero() {
    let notice = Duration::from_millis(1500);
    let grace = Duration::from_secs(120);
    let mut node = start_node(&[
        ("SHUTDOWN_NOTICE_MS", "1500"),
        ("SHUTDOWN_GRACE_MS", "120000"),
    ])
    .await;
    let base = node.base.clone();
    let slow = tokio::spawn(rerank(base.clone(), slow_body("in-flight", 160)));
    node.wait_running(TOKEN).await;

    let signalled = Instant::now();
    node.terminate();
    // During the notice the node still listens: `/health` says why it refuses. The signal is
    // delivered asynchronously, so a request sent the same instant may still find the node
    // healthy: ask until it has handled the signal (well within the 1.5 s notice).
    let client = reqwest::Client::new();
    let health = loop {
        let health = client
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("still listening during the notice");
        if health.status().as_u16() != 200 || signalled.elapsed() > Duration::from_millis(500) {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(health.status().as_u16(), 503);
    assert_eq!(
        health
            .headers()
            .get("x-node-draining")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let health: Value = health.json().await.expect("json");
    assert_eq!(health["status"], "draining", "{health}");
    // New work is refused, in each endpoint's own error format, with the draining header.
    let tei = client
        .post(format!("{base}/rerank"))
        .json(&json!({"query": "new", "texts": ["a"]}))
        .send()
        .await
        .expect("refused, not dropped");
    assert_eq!(tei.status().as_u16(), 503);
    assert!(tei.headers().contains_key("x-node-draining"));
    assert!(tei.headers().contains_key("retry-after"));
    let tei: Value = tei.json().await.expect("json");
    assert_eq!(tei["error_type"], "unhealthy", "{tei}");
    let cohere = client
        .post(format!("{base}/v1/rerank"))
        .json(&json!({"query": "new", "documents": ["a"]}))
        .send()
        .await
        .expect("refused, not dropped");
    assert_eq!(cohere.status().as_u16(), 503);
    let cohere: Value = cohere.json().await.expect("json");
    assert!(cohere["message"].is_string(), "{cohere}");
    let refused_within = signalled.elapsed();

    // After the notice the listener is closed while the slow request still runs.
    tokio::time::sleep_until((signalled + notice + Duration::from_millis(500)).into()).await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before the listener closed: make it slower"
    );
    let late = reqwest::Client::new()
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        late.is_err(),
        "new connections are refused after the notice: {late:?}"
    );

    let (status, ranked) = slow.await.expect("joined");
    let finished = signalled.elapsed();
    assert_eq!(status, 200, "the in-flight request completes: {ranked}");
    assert_eq!(ranked.as_array().map_or(0, Vec::len), 160);
    let exit = node
        .wait_exit(grace + SLACK)
        .await
        .expect("the node exits within the grace period");
    let drained = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    assert!(drained < grace, "drained in {drained:?}");
    assert!(
        drained < finished + SLACK,
        "the node exits once its last request is done: request done at {finished:?}, exit at \
         {drained:?}"
    );
    eprintln!(
        "node drain: refusals checked within {} ms of SIGTERM; the in-flight request (160 docs) \
         completed 200 at {} ms; exit code 0 at {} ms (notice {} ms, grace {} s)",
        refused_within.as_millis(),
        finished.as_millis(),
        drained.as_millis(),
        notice.as_millis(),
        grace.as_secs()
    );
}

#[tokio::test]
async fn work_that_outlasts_the_grace_period_is_cut_off_and_the_node_still_exits_zero() {
    let grace = Duration::from_millis(2000);
    let mut node =
        start_node(&[("SHUTDOWN_NOTICE_MS", "200"), ("SHUTDOWN_GRACE_MS", "2000")]).await;
    let slow = tokio::spawn(rerank(node.base.clone(), slow_body("outlasting", 600)));
    node.wait_running(TOKEN).await;
    let signalled = Instant::now();
    node.terminate();
    let exit = node
        .wait_exit(grace + SLACK)
        .await
        .expect("the node exits at the end of the grace period");
    let drained = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    assert!(
        drained >= grace,
        "exited at {drained:?}, before the grace period ended"
    );
    let (status, _) = slow.await.expect("joined");
    // Cut off: the connection closes unanswered, or, when the node's actors stop a moment
    // before the HTTP server drops the request, it gets 503 (which a coordinator retries).
    assert!(
        status == 0 || status == 503,
        "the cut-off request got {status}, not a closed connection or 503"
    );
    eprintln!(
        "node drain past the grace period: exit code 0 at {} ms (grace {} ms); the 600-doc \
         request was cut off",
        drained.as_millis(),
        grace.as_millis()
    );
}
