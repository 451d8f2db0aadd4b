//! The scheduler and admission by work on a real node over HTTP: small requests are not stuck
//! behind big ones, departed or overdue requests stop costing forward passes, requests over the
//! token budget are refused, and tokenization costs the request's text once.

mod common;

use std::time::{Duration, Instant};

use common::{minilm_dir, NodeProcess};
use serde_json::{json, Value};

const QUERY: &str = "What is the history of Paris and France?";

async fn start_node(extra: &[(&str, &str)]) -> NodeProcess {
    let dir = minilm_dir().to_string_lossy().to_string();
    let mut env = vec![("MODEL_PATH", dir.as_str()), ("LOCAL_CACHE_SIZE", "0")];
    env.extend_from_slice(extra);
    NodeProcess::start(&env).await
}

/// `n` distinct documents of about 200 words (each fills the bi-encoder's 256-token window).
fn long_docs(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|d| {
            format!(
                "{tag} {d}: {}",
                "the long history of paris and france from the romans to the republic ".repeat(18)
            )
        })
        .collect()
}

async fn rerank(
    client: &reqwest::Client,
    node: &NodeProcess,
    texts: &[String],
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/rerank", node.base))
        .json(&json!({"query": QUERY, "texts": texts, "truncate": true}))
        .send()
        .await
}

/// Seconds one forward pass of `MAX_BATCH_TOKENS` takes here: the mean of a warm-up request's
/// passes (from the node's own histogram).
async fn seconds_per_pass(node: &NodeProcess, client: &reqwest::Client) -> f64 {
    let r = rerank(client, node, &long_docs("warm-up", 64))
        .await
        .expect("warm-up");
    assert_eq!(r.status(), 200);
    let text = reqwest::get(format!("{}/metrics", node.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    value("rerank_inference_seconds_sum") / value("rerank_inference_seconds_count").max(1.0)
}

#[tokio::test]
async fn small_requests_finish_within_about_a_pass_while_a_big_one_runs() {
    let node = start_node(&[("MAX_BATCH_TOKENS", "2048")]).await;
    let client = reqwest::Client::new();
    let pass = seconds_per_pass(&node, &client).await;

    let big_docs = long_docs("big", 300);
    let big = {
        let (client, base) = (client.clone(), node.base.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(format!("{base}/rerank"))
                .json(&json!({"query": QUERY, "texts": big_docs, "truncate": true}))
                .send()
                .await
                .expect("big request");
            assert_eq!(r.status(), 200);
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_secs_f64((pass * 3.0).max(0.3))).await;
    let mut small_latencies = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let r = rerank(&client, &node, &long_docs(&format!("small{i}"), 4))
            .await
            .expect("small request");
        assert_eq!(r.status(), 200);
        small_latencies.push(started.elapsed().as_secs_f64());
    }
    assert!(!big.is_finished(), "the big request was still running");
    let big_seconds = big.await.expect("joined").as_secs_f64();
    eprintln!(
        "pass {:.0} ms; big request {big_seconds:.1} s; small requests {:?} ms",
        pass * 1000.0,
        small_latencies
            .iter()
            .map(|s| (s * 1000.0).round())
            .collect::<Vec<_>>()
    );
    for small in small_latencies {
        // Behind the pass in progress, then in the next one (plus HTTP and tokenization).
        assert!(
            small < 3.0 * pass + 0.5,
            "a small request took {small:.2} s with passes of {pass:.2} s"
        );
        assert!(small < big_seconds / 4.0);
    }
}

#[tokio::test]
async fn a_client_that_gives_up_frees_the_model_within_about_a_pass() {
    let node = start_node(&[("MAX_BATCH_TOKENS", "2048")]).await;
    let client = reqwest::Client::new();
    let pass = seconds_per_pass(&node, &client).await;
    let computed_before = node.metric("rerank_pairs_computed_total").await;

    let gave_up = client
        .post(format!("{}/rerank", node.base))
        .timeout(Duration::from_secs_f64((pass * 3.0).max(0.3)))
        .json(&json!({"query": QUERY, "texts": long_docs("abandoned", 300), "truncate": true}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up before its answer");
    let started = Instant::now();
    let r = rerank(&client, &node, &long_docs("next", 4))
        .await
        .expect("next request");
    assert_eq!(r.status(), 200);
    let next = started.elapsed().as_secs_f64();
    assert!(
        next < 3.0 * pass + 0.5,
        "the next request took {next:.2} s: the abandoned one still held the model"
    );
    let computed = node.metric("rerank_pairs_computed_total").await - computed_before;
    let dropped = node.metric("rerank_pairs_dropped_total").await;
    eprintln!(
        "pass {:.0} ms; computed {computed}; dropped {dropped}; next {next:.2} s",
        pass * 1000.0
    );
    assert!(dropped > 0, "the abandoned pairs were dropped");
    assert!(
        computed + dropped >= 300 && computed < 300,
        "{computed} computed"
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_503_and_its_work_is_dropped() {
    let node = start_node(&[("MAX_BATCH_TOKENS", "2048"), ("REQUEST_TIMEOUT_MS", "700")]).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let r = rerank(&client, &node, &long_docs("overdue", 400))
        .await
        .expect("sent");
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("REQUEST_TIMEOUT_MS")),
        "{body}"
    );
    assert_eq!(body["error_type"], "overloaded");
    assert!(
        took < Duration::from_secs(10),
        "answered at the deadline: {took:?}"
    );
    // The model is free again: a small request is served once the pass that was running at
    // the deadline has finished (a pass cannot stop midway; on a loaded machine it can outlast
    // the 700 ms deadline, so the small request may time out too while it waits).
    let mut status = 0;
    let freed = Instant::now();
    while freed.elapsed() < Duration::from_secs(20) {
        let r = rerank(&client, &node, &long_docs("after", 2))
            .await
            .expect("sent");
        status = r.status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only the deadline may refuse it");
    }
    assert_eq!(status, 200, "the model was never free again");
    assert!(node.metric("rerank_requests_timed_out_total").await >= 1);
    // Queued pairs are dropped at the deadline; on a loaded machine the deadline can also pass
    // while the 400 documents are still being tokenized, and then none was ever queued (only
    // the follow-up's 2 pairs were computed).
    let dropped = node.metric("rerank_pairs_dropped_total").await;
    let computed = node.metric("rerank_pairs_computed_total").await;
    assert!(computed < 400, "{computed} computed");
    assert!(
        dropped > 0 || computed <= 2,
        "{dropped} dropped, {computed} computed"
    );
}

#[tokio::test]
async fn requests_over_the_token_budget_get_413_and_beside_it_429() {
    let node = start_node(&[("MAX_QUEUED_TOKENS", "20000"), ("MAX_BATCH_TOKENS", "2048")]).await;
    let client = reqwest::Client::new();
    // 100 documents of ~256 tokens can never fit 20000 tokens: 413, in both formats.
    let r = rerank(&client, &node, &long_docs("huge", 100))
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("MAX_QUEUED_TOKENS")),
        "{body}"
    );
    let r = client
        .post(format!("{}/v1/rerank", node.base))
        .json(&json!({"query": QUERY, "documents": long_docs("huge", 100)}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("json");
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("MAX_QUEUED_TOKENS")));

    // 60 documents (~15k tokens) fit; beside them, 30 more (~7.5k tokens) do not: 429.
    let first = {
        let (client, base) = (client.clone(), node.base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/rerank"))
                .json(&json!({"query": QUERY, "texts": long_docs("first", 60), "truncate": true}))
                .send()
                .await
                .expect("sent")
                .status()
        })
    };
    let admitted = Instant::now();
    while node.metric("rerank_queued_tokens").await == 0 {
        assert!(
            admitted.elapsed() < Duration::from_secs(20) && !first.is_finished(),
            "the first request's tokens were never admitted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = rerank(&client, &node, &long_docs("second", 30))
        .await
        .expect("sent");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error_type"], "overloaded", "{body}");
    assert_eq!(first.await.expect("joined"), 200);
}

#[tokio::test]
async fn a_huge_query_is_tokenized_once_not_once_per_document() {
    // A cross-encoder: today's pairs are (query, document) tokenized together.
    let dir = common::fixtures()
        .join("bert-ce")
        .to_string_lossy()
        .to_string();
    let node = NodeProcess::start(&[("MODEL_PATH", dir.as_str())]).await;
    let query = "paris ".repeat(300_000); // 1.8 MB
    let docs: Vec<String> = (0..1000).map(|i| format!("d{i}")).collect();
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{}/rerank", node.base))
        .timeout(Duration::from_secs(60))
        .json(&json!({"query": query, "texts": docs, "truncate": true}))
        .send()
        .await
        .expect("answered within a minute");
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    let ranks: Vec<Value> = r.json().await.expect("json");
    assert_eq!(ranks.len(), 1000);
    eprintln!("1.8 MB query × 1000 documents: {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}
