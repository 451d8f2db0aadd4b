//! The Redis tier across real node processes and a real `redis-server` each test starts on a
//! free port: sharing, cross-node dedup, an owner crashing, Redis dying, TTL.

mod common;

use std::time::{Duration, Instant};

use common::{minilm_dir, NodeProcess, RedisProcess};
use futures_util::future::join_all;
use serde_json::{json, Value};

const QUERY: &str = "What is the capital of France?";

async fn start_node(redis: &RedisProcess, extra: &[(&str, &str)]) -> NodeProcess {
    let dir = minilm_dir().to_string_lossy().to_string();
    let url = redis.url();
    let mut env = vec![
        ("MODEL_PATH", dir.as_str()),
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    NodeProcess::start(&env).await
}

fn docs(tag: &str, n: usize, words: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{tag} document {i}: {}",
                "paris france history river seine ".repeat(words)
            )
        })
        .collect()
}

async fn rerank(node: &NodeProcess, texts: &[String]) -> reqwest::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{}/rerank", node.base))
        .json(&json!({"query": QUERY, "texts": texts}))
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn a_pair_computed_on_one_node_is_served_by_another() {
    let redis = RedisProcess::start();
    let a = start_node(&redis, &[]).await;
    let b = start_node(&redis, &[]).await;
    let texts = docs("shared", 6, 2);
    let (status, from_a) = rerank(&a, &texts).await.expect("a");
    assert_eq!(status, 200);
    assert_eq!(a.metric("rerank_pairs_computed_total").await, 6);
    let (status, from_b) = rerank(&b, &texts).await.expect("b");
    assert_eq!(status, 200);
    assert_eq!(from_a, from_b, "the same scores");
    assert_eq!(
        b.metric("rerank_pairs_computed_total").await,
        0,
        "B computed nothing"
    );
    assert_eq!(b.metric("rerank_redis_hits_total").await, 6);
    let health = b.health().await;
    assert_eq!(health["distributed_cache"]["enabled"], true);
    assert_eq!(health["distributed_cache"]["connected"], true);
}

#[tokio::test]
async fn identical_requests_across_three_nodes_compute_each_pair_once() {
    let redis = RedisProcess::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let n = start_node(&redis, &[("MAX_PARALLEL_REQUESTS", "16")]).await;
        nodes.push(n);
    }
    let texts = docs("dedup", 8, 6);
    let requests = (0..30).map(|i| rerank(&nodes[i % 3], &texts));
    let results = join_all(requests).await;
    let first = &results[0].as_ref().expect("sent").1;
    for r in &results {
        let (status, body) = r.as_ref().expect("sent");
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, first);
    }
    let mut computed = 0;
    for n in &nodes {
        computed += n.metric("rerank_pairs_computed_total").await;
    }
    assert_eq!(
        computed, 8,
        "each distinct pair computed once in the whole cluster"
    );
}

#[tokio::test]
async fn waiters_still_succeed_when_the_owner_is_killed_mid_computation() {
    let redis = RedisProcess::start();
    let lock = [("REDIS_LOCK_TTL_MS", "3000")];
    let mut owner = start_node(&redis, &lock).await;
    let b = start_node(&redis, &lock).await;
    let c = start_node(&redis, &lock).await;
    let texts = docs("crash", 96, 12);
    let owner_request = {
        let client = reqwest::Client::new();
        let url = format!("{}/rerank", owner.base);
        let body = json!({"query": QUERY, "texts": texts});
        tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let started = Instant::now();
    while owner.metric("rerank_lock_wins_total").await < 96 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the owner never took the locks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = tokio::spawn({
        let (b_base, c_base, texts) = (b.base.clone(), c.base.clone(), texts.clone());
        async move {
            let client = reqwest::Client::new();
            let send = |base: String| {
                client
                    .post(format!("{base}/rerank"))
                    .json(&json!({"query": QUERY, "texts": texts}))
                    .send()
            };
            let (rb, rc) = tokio::join!(send(b_base), send(c_base));
            (
                rb.map(|r| r.status().as_u16()),
                rc.map(|r| r.status().as_u16()),
            )
        }
    });
    while b.metric("rerank_lock_waits_total").await < 96
        || c.metric("rerank_lock_waits_total").await < 96
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "B and C never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    owner.kill();
    assert!(
        owner_request.await.expect("joined").is_err(),
        "the owner's own client saw it die"
    );
    let (rb, rc) = waiting.await.expect("joined");
    assert_eq!(rb.expect("B answered"), 200);
    assert_eq!(rc.expect("C answered"), 200);
}

#[tokio::test]
async fn redis_dying_under_load_fails_no_request_and_sharing_resumes() {
    let mut redis = RedisProcess::start();
    let port = redis.port;
    let a = start_node(&redis, &[]).await;
    let b = start_node(&redis, &[]).await;
    let nodes = [&a, &b];
    let mut failures = Vec::new();
    let mut sent = 0;
    for round in 0..12 {
        if round == 4 {
            redis.kill();
        }
        let texts: Vec<Vec<String>> = (0..4)
            .map(|i| docs(&format!("load {round}.{i}"), 3, 2))
            .collect();
        let batch = texts
            .iter()
            .enumerate()
            .map(|(i, t)| rerank(nodes[i % 2], t));
        for r in join_all(batch).await {
            sent += 1;
            match r {
                Ok((200, _)) => {}
                other => failures.push(format!("{other:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(a.health().await["distributed_cache"]["connected"], false);

    let redis = RedisProcess::start_on(port);
    let restarted = Instant::now();
    while a.health().await["distributed_cache"]["connected"] != true
        || b.health().await["distributed_cache"]["connected"] != true
    {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "not reconnected within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let texts = docs("after restart", 4, 2);
    assert_eq!(rerank(&a, &texts).await.expect("a").0, 200);
    let before = b.metric("rerank_pairs_computed_total").await;
    assert_eq!(rerank(&b, &texts).await.expect("b").0, 200);
    assert_eq!(
        b.metric("rerank_pairs_computed_total").await,
        before,
        "B served A's pairs from Redis"
    );
    drop(redis);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let redis = RedisProcess::start();
    let ttl = [("REDIS_TTL_SECONDS", "2")];
    let a = start_node(&redis, &ttl).await;
    let b = start_node(&redis, &ttl).await;
    let texts = docs("ttl", 3, 2);
    assert_eq!(rerank(&a, &texts).await.expect("a").0, 200);
    let client = redis::Client::open(redis.url()).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("rr:*:s:*")
        .query_async(&mut con)
        .await
        .expect("keys");
    assert_eq!(stored.len(), 3);
    let ttl_left: i64 = redis::cmd("TTL")
        .arg(&stored[0])
        .query_async(&mut con)
        .await
        .expect("ttl");
    assert!((1..=2).contains(&ttl_left), "{ttl_left}");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("rr:*:s:*")
        .query_async(&mut con)
        .await
        .expect("keys");
    assert!(stored.is_empty(), "{stored:?}");
    assert_eq!(rerank(&b, &texts).await.expect("b").0, 200);
    assert_eq!(
        b.metric("rerank_pairs_computed_total").await,
        3,
        "expired pairs are computed again"
    );
}
