//! Soak: mixed big and small requests through a coordinator in front of three nodes sharing a
//! Redis, while a node is killed and restarted and then Redis is killed and restarted. Bounded
//! (about a minute of load); every client request must succeed and small requests must stay
//! fast.

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, minilm_dir, NodeProcess, RedisProcess};
use serde_json::json;

/// The bound this test holds small requests to (p99, seconds), on a 2-core machine running a
/// debug build of three nodes and a coordinator, through a node kill and a Redis kill.
const SMALL_P99_BOUND_SECONDS: f64 = 8.0;

/// How long each phase of the soak lasts.
const PHASE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Outcomes {
    small_latencies: Vec<f64>,
    big_latencies: Vec<f64>,
    failures: Vec<String>,
}

async fn start_node(model: &str, port: u16, redis: &str) -> NodeProcess {
    NodeProcess::start_binary(
        &common::node_binary(),
        port,
        &[
            ("MODEL_PATH", model),
            ("REDIS_ENABLED", "true"),
            ("REDIS_URL", redis),
            ("MICRO_BATCH_ENABLED", "true"),
            ("MAX_BATCH_TOKENS", "4096"),
            ("MAX_PARALLEL_REQUESTS", "16"),
            ("OMP_NUM_THREADS", "1"),
        ],
    )
    .await
}

fn long_docs(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|d| {
            format!(
                "{tag} {d}: {}",
                "the long history of paris and france from the romans to the republic ".repeat(16)
            )
        })
        .collect()
}

/// Sends requests in a loop until `stop`: `docs` documents each, a new query every time (so
/// nothing is served from a cache).
async fn client_loop(
    base: String,
    tag: String,
    docs: usize,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let client = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let query = format!("{tag} question {i}: what happened in paris?");
        let texts = long_docs(&format!("{tag}-{i}"), docs);
        let started = Instant::now();
        let result = client
            .post(format!("{base}/rerank"))
            .timeout(Duration::from_secs(120))
            .json(&json!({"query": query, "texts": texts, "truncate": true}))
            .send()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let failure = match result {
            Ok(r) if r.status() == 200 => None,
            Ok(r) => Some(format!(
                "{tag} #{i}: HTTP {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Some(format!("{tag} #{i}: {e}")),
        };
        if let Ok(mut o) = outcomes.lock() {
            match failure {
                Some(f) => o.failures.push(f),
                None if docs > 8 => o.big_latencies.push(seconds),
                None => o.small_latencies.push(seconds),
            }
        }
    }
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn mixed_load_through_a_node_kill_and_a_redis_kill_fails_no_request() {
    let model = minilm_dir().to_string_lossy().to_string();
    let mut redis = RedisProcess::start();
    let redis_port = redis.port;
    let redis_url = redis.url();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for &port in &ports {
        nodes.push(Some(start_node(&model, port, &redis_url).await));
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let urls = urls.join(",");
    let coordinator = NodeProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
        free_port(),
        &[
            ("COORDINATOR_NODES", urls.as_str()),
            ("HEALTH_CHECK_INTERVAL_MS", "200"),
        ],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut clients = Vec::new();
    for (tag, docs) in [("small-a", 4), ("small-b", 4), ("small-c", 2), ("big", 80)] {
        clients.push(tokio::spawn(client_loop(
            coordinator.base.clone(),
            tag.to_string(),
            docs,
            stop.clone(),
            outcomes.clone(),
        )));
    }

    let started = Instant::now();
    tokio::time::sleep(PHASE).await;
    eprintln!("{:?}: killing node 1", started.elapsed());
    if let Some(mut node) = nodes[1].take() {
        node.kill();
    }
    tokio::time::sleep(PHASE).await;
    eprintln!("{:?}: restarting node 1", started.elapsed());
    nodes[1] = Some(start_node(&model, ports[1], &redis_url).await);
    tokio::time::sleep(PHASE).await;
    eprintln!("{:?}: killing Redis", started.elapsed());
    redis.kill();
    tokio::time::sleep(PHASE).await;
    eprintln!("{:?}: restarting Redis", started.elapsed());
    let _redis = RedisProcess::start_on(redis_port);
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("clients stop")
            .expect("joined");
    }

    let o = outcomes.lock().expect("outcomes");
    let (p50, p99) = (
        percentile(&o.small_latencies, 0.5),
        percentile(&o.small_latencies, 0.99),
    );
    eprintln!(
        "soak {:?}: {} small requests p50 {:.0} ms p99 {:.0} ms max {:.0} ms; {} big \
         (80 docs) p50 {:.1} s; {} failed",
        started.elapsed(),
        o.small_latencies.len(),
        p50 * 1000.0,
        p99 * 1000.0,
        percentile(&o.small_latencies, 1.0) * 1000.0,
        o.big_latencies.len(),
        percentile(&o.big_latencies, 0.5),
        o.failures.len()
    );
    assert!(
        o.failures.is_empty(),
        "{} client requests failed: {:?}",
        o.failures.len(),
        o.failures
    );
    assert!(o.small_latencies.len() >= 30, "too few small requests ran");
    assert!(!o.big_latencies.is_empty(), "no big request finished");
    assert!(
        p99 < SMALL_P99_BOUND_SECONDS,
        "small-request p99 {p99:.2} s over the bound of {SMALL_P99_BOUND_SECONDS} s"
    );
}
