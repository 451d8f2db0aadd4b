//! The actor pipeline through HTTP on a real node: dedup, the local cache, backpressure.

mod common;

use common::{minilm_dir, NodeProcess};
use futures_util::future::join_all;
use serde_json::{json, Value};

const QUERY: &str = "What is the capital of France?";

async fn start_node(extra: &[(&str, &str)]) -> NodeProcess {
    let dir = minilm_dir().to_string_lossy().to_string();
    let mut env = vec![("MODEL_PATH", dir.as_str())];
    env.extend_from_slice(extra);
    NodeProcess::start(&env).await
}

#[tokio::test]
async fn identical_pairs_are_computed_once_then_served_from_the_cache() {
    let node = start_node(&[
        ("MICRO_BATCH_ENABLED", "true"),
        ("MAX_PARALLEL_REQUESTS", "32"),
    ])
    .await;
    let docs = [
        "Paris is the capital and largest city of France.",
        "Berlin is the capital of Germany.",
        "Lyon is a city in France.",
        "The Seine flows through Paris.",
        "Paris is the capital and largest city of France.", // a duplicate inside the request
    ];
    let distinct = 4;
    let body = json!({"query": QUERY, "texts": docs});
    let client = reqwest::Client::new();
    let computed_before = node.metric("rerank_pairs_computed_total").await;

    let responses = join_all((0..32).map(|_| {
        client
            .post(format!("{}/rerank", node.base))
            .json(&body)
            .send()
    }))
    .await;
    let mut rankings = Vec::new();
    for r in responses {
        let r = r.expect("sent");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        rankings.push(v);
    }
    assert!(
        rankings.windows(2).all(|w| w[0] == w[1]),
        "every identical request gets the same answer"
    );
    assert_eq!(
        node.metric("rerank_pairs_computed_total").await - computed_before,
        distinct
    );
    assert_eq!(
        node.metric("rerank_pairs_requested_total").await,
        32 * docs.len() as u64
    );

    let hits_before = node.metric("rerank_cache_hits_total").await;
    let again = client
        .post(format!("{}/rerank", node.base))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.expect("json"), rankings[0]);
    assert_eq!(
        node.metric("rerank_pairs_computed_total").await - computed_before,
        distinct,
        "nothing recomputed"
    );
    assert_eq!(
        node.metric("rerank_cache_hits_total").await - hits_before,
        distinct
    );

    let health: Value = reqwest::get(format!("{}/health", node.base))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    let mb = &health["micro_batcher"];
    assert_eq!(mb["enabled"], true);
    assert!(mb["total_batches"].as_u64().unwrap_or(0) >= 1, "{mb}");
    assert!(
        mb["total_requests"].as_u64().unwrap_or(0) >= mb["total_batches"].as_u64().unwrap_or(0),
        "{mb}"
    );
    assert_eq!(mb["pending_requests"], 0);
}

#[tokio::test]
async fn over_the_admission_bound_clients_get_429_never_5xx() {
    let node = start_node(&[
        ("MAX_PARALLEL_REQUESTS", "1"),
        ("MAX_QUEUED_REQUESTS", "1"),
        ("LOCAL_CACHE_SIZE", "0"),
    ])
    .await;
    let client = reqwest::Client::new();
    let requests = (0..16).map(|r| {
        let docs: Vec<String> = (0..48)
            .map(|d| {
                format!(
                    "document {d} of request {r}: {}",
                    "words about paris and france ".repeat(8)
                )
            })
            .collect();
        let (path, body) = if r % 2 == 0 {
            ("/rerank", json!({"query": QUERY, "texts": docs}))
        } else {
            ("/v1/rerank", json!({"query": QUERY, "documents": docs}))
        };
        let request = client.post(format!("{}{path}", node.base)).json(&body);
        async move { (path, request.send().await.expect("sent")) }
    });
    let mut ok = 0;
    let mut rejected = 0;
    for (path, response) in join_all(requests).await {
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.expect("json body");
        match status {
            200 => ok += 1,
            429 => {
                rejected += 1;
                assert!(retry_after.is_some(), "429 carries Retry-After");
                if path == "/rerank" {
                    assert_eq!(body["error_type"], "overloaded", "{body}");
                } else {
                    assert!(body["message"].is_string(), "{body}");
                }
            }
            other => panic!("{path}: unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 2, "admitted and queued requests succeed ({ok} ok)");
    assert!(
        rejected >= 1,
        "some requests are refused ({rejected} refused)"
    );
    assert_eq!(
        node.metric("rerank_requests_rejected_total").await,
        rejected
    );
}

#[tokio::test]
async fn a_departed_clients_queued_pairs_are_dropped() {
    let node = start_node(&[("MICRO_BATCH_ENABLED", "true"), ("LOCAL_CACHE_SIZE", "0")]).await;
    let long = |tag: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|d| {
                format!(
                    "{tag} {d}: {}",
                    "a long text about the history of paris and france ".repeat(10)
                )
            })
            .collect()
    };
    let client = reqwest::Client::new();
    let busy = client
        .post(format!("{}/rerank", node.base))
        .json(&json!({"query": QUERY, "texts": long("busy", 48)}))
        .send();
    let busy = tokio::spawn(busy);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // This client gives up while its pairs wait behind the busy model.
    let impatient = client
        .post(format!("{}/rerank", node.base))
        .timeout(std::time::Duration::from_millis(200))
        .json(&json!({"query": QUERY, "texts": long("impatient", 16)}))
        .send()
        .await;
    assert!(impatient.is_err(), "the impatient client timed out");
    let busy = busy.await.expect("joined").expect("sent");
    assert_eq!(busy.status(), 200);
    // One more request so the batcher flushes whatever is left.
    let last = client
        .post(format!("{}/rerank", node.base))
        .json(&json!({"query": QUERY, "texts": ["x"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(last.status(), 200);
    assert_eq!(node.metric("rerank_pairs_dropped_total").await, 16);
    assert_eq!(node.metric("rerank_pairs_computed_total").await, 48 + 1);
}
