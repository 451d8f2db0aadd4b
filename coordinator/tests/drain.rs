//! Rollouts without failed requests: real nodes behind a real coordinator, under steady client
//! load, get SIGTERM (what `docker stop` and Kubernetes send) — one node of three, then all three
//! in turn, each restarted before the next. Every client request must succeed; each node must
//! exit 0 within its grace period. Bounded in requests and time; every socket is on 127.0.0.1.
//! The figures are printed (`--nocapture`) so they can be quoted.

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, minilm_dir, NodeProcess, RedisProcess};
use rerank_shared::registry;
use serde_json::{json, Value};

const TOKEN: &str = "drain-admin-token";
const SECRET: &str = "drain-cluster-secret";

/// The nodes' `SHUTDOWN_GRACE_MS` and `SHUTDOWN_NOTICE_MS`.
const GRACE: Duration = Duration::from_secs(20);
const NOTICE: Duration = Duration::from_secs(2);

/// Client loops sending requests at once, and the most requests each may send.
const CLIENTS: usize = 4;
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

/// The tests here load the machine; one at a time keeps their figures meaningful.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the clients saw.
#[derive(Default)]
struct Seen {
    requests: usize,
    failures: Vec<String>,
    /// Node id → requests it served, and when it last served one.
    served: HashMap<String, (usize, Instant)>,
}

impl Seen {
    fn served_since(&self, node: &str, since: Instant) -> bool {
        self.served.get(node).is_some_and(|&(_, at)| at > since)
    }
}

/// Steady load: [`CLIENTS`] loops of small requests, a new query each (so none is served from
/// a cache), until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(coordinator: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let clients = (0..CLIENTS)
            .map(|c| {
                let (base, stop, seen) = (coordinator.to_string(), stop.clone(), seen.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    for i in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let query = format!("client {c} question {i}: where is paris?");
                        let answer = http
                            .post(format!("{base}/rerank"))
                            .json(&json!({"query": query, "texts": [
                                format!("{i}: Paris is the capital of France."),
                                format!("{i}: Berlin is the capital of Germany."),
                            ]}))
                            .timeout(Duration::from_secs(60))
                            .send()
                            .await;
                        let outcome = match answer {
                            Ok(r) if r.status() == 200 => Ok(r
                                .headers()
                                .get("x-served-by")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()),
                            Ok(r) => Err(format!(
                                "{query}: HTTP {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(e) => Err(format!("{query}: {e}")),
                        };
                        let mut seen = seen.lock().expect("seen");
                        seen.requests += 1;
                        match outcome {
                            Ok(node) => {
                                let entry = seen.served.entry(node).or_insert((0, Instant::now()));
                                entry.0 += 1;
                                entry.1 = Instant::now();
                            }
                            Err(failure) => seen.failures.push(failure),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            seen,
            clients,
        }
    }

    /// Waits (bounded) until `node` served a request answered after `since`.
    async fn wait_served(&self, node: &str, since: Instant, limit: Duration, what: &str) {
        let started = Instant::now();
        while !self.seen.lock().expect("seen").served_since(node, since) {
            assert!(started.elapsed() < limit, "{what}: {node} served nothing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            tokio::time::timeout(Duration::from_secs(90), client)
                .await
                .expect("clients stop")
                .expect("joined");
        }
        Arc::try_unwrap(self.seen)
            .ok()
            .expect("clients done")
            .into_inner()
            .expect("seen")
    }
}

async fn start_node(model: &str, port: u16, extra: &[(&str, &str)]) -> NodeProcess {
    let grace = GRACE.as_millis().to_string();
    let notice = NOTICE.as_millis().to_string();
    let mut env = vec![
        ("MODEL_PATH", model),
        ("ADMIN_TOKEN", TOKEN),
        ("OMP_NUM_THREADS", "1"),
        ("SHUTDOWN_GRACE_MS", grace.as_str()),
        ("SHUTDOWN_NOTICE_MS", notice.as_str()),
    ];
    env.extend_from_slice(extra);
    NodeProcess::start_binary(&common::node_binary(), port, &env).await
}

async fn start_coordinator(extra: &[(&str, &str)]) -> NodeProcess {
    let mut env = vec![("ADMIN_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    NodeProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
        free_port(),
        &env,
    )
    .await
}

/// The coordinator's ring members.
async fn ring(coordinator: &NodeProcess) -> Vec<String> {
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

/// SIGTERMs `node` and waits for it to exit; the time it took. Asserts exit code 0 within the
/// grace period.
async fn drain(node: &mut NodeProcess) -> Duration {
    let signalled = Instant::now();
    node.terminate();
    let exit = node
        .wait_exit(GRACE + Duration::from_secs(5))
        .await
        .expect("the node exits within its grace period");
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    assert!(took < GRACE, "drained in {took:?}, over the grace period");
    took
}

/// The coordinator's attempts at nodes by outcome (`ok`, `retry`, `error`, `timeout`), summed
/// over nodes, from its `/metrics`.
async fn attempts(coordinator: &NodeProcess) -> HashMap<String, u64> {
    let text = match reqwest::get(format!("{}/metrics", coordinator.base)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut sums = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("rerank_coordinator_node_attempts_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let outcome = labels
            .split(',')
            .find_map(|l| l.strip_prefix("outcome=\""))
            .map(|o| o.trim_end_matches('"').to_string())
            .unwrap_or_default();
        *sums.entry(outcome).or_insert(0) += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
    }
    sums
}

/// A graceful drain never leaves the coordinator a broken connection or a timeout to retry:
/// only a draining node's 503 refusals (outcome `retry`).
async fn assert_no_broken_attempts(coordinator: &NodeProcess) -> u64 {
    let by_outcome = attempts(coordinator).await;
    let broken = by_outcome.get("error").copied().unwrap_or(0)
        + by_outcome.get("timeout").copied().unwrap_or(0);
    assert_eq!(
        broken, 0,
        "attempts that met a closed connection or timed out: {by_outcome:?}"
    );
    assert!(
        by_outcome.get("ok").copied().unwrap_or(0) > 0,
        "{by_outcome:?}"
    );
    by_outcome.get("retry").copied().unwrap_or(0)
}

fn report(what: &str, seen: &Seen, elapsed: Duration) {
    let mut served: Vec<(&String, usize)> = seen.served.iter().map(|(n, (c, _))| (n, *c)).collect();
    served.sort();
    eprintln!(
        "{what}: {} requests in {:.1} s, {} failed; served per node {served:?}",
        seen.requests,
        elapsed.as_secs_f64(),
        seen.failures.len()
    );
}

/// One node of three leaves under load: it leaves the registry during its notice, the
/// coordinator routes around it at once, its in-flight requests finish, it exits 0 — and no
/// client request fails.
#[tokio::test]
async fn sigterm_one_node_of_three_under_load_fails_no_request() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let model = minilm_dir().to_string_lossy().to_string();
    let redis = RedisProcess::start();
    let url = redis.url();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let node_ids: Vec<String> = ports.iter().map(|p| format!("drain-node-{p}")).collect();
    let mut nodes = Vec::new();
    for (port, id) in ports.iter().zip(&node_ids) {
        nodes.push(
            start_node(
                &model,
                *port,
                &[
                    ("REDIS_ENABLED", "true"),
                    ("REDIS_URL", url.as_str()),
                    ("CLUSTER_SECRET", SECRET),
                    ("NODE_ID", id.as_str()),
                ],
            )
            .await,
        );
    }
    // Membership from the registry alone, health checks at their default interval: the
    // coordinator must learn of the drain from the node itself.
    let coordinator = start_coordinator(&[
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", url.as_str()),
        ("CLUSTER_SECRET", SECRET),
    ])
    .await;
    let members: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let joined = Instant::now();
    while ring(&coordinator).await.len() < 3 {
        assert!(
            joined.elapsed() < Duration::from_secs(20),
            "ring: {:?}",
            ring(&coordinator).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    let load = Load::start(&coordinator.base);
    let victim = &members[1];
    load.wait_served(victim, started, Duration::from_secs(60), "before SIGTERM")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut con = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let signalled = Instant::now();
    let drained = tokio::spawn({
        let mut node = nodes.remove(1);
        async move { (drain(&mut node).await, node) }
    });
    // The registration goes first, within the notice.
    let left = loop {
        let stored = registry::read_all(&mut con).await.expect("registry");
        if !stored.iter().any(|(field, _)| field == &node_ids[1]) {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < NOTICE,
            "still registered after the notice"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let routed_around = loop {
        if !ring(&coordinator).await.contains(victim) {
            break signalled.elapsed();
        }
        // The registry is read every second; routing itself stopped at the node's first
        // draining answer (the broken-attempt check below would catch it otherwise).
        assert!(
            signalled.elapsed() < NOTICE + Duration::from_secs(2),
            "the coordinator still has the node in its ring long after its notice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (took, _node) = drained.await.expect("joined");
    let exited = Instant::now();
    // The survivors keep serving.
    for survivor in [&members[0], &members[2]] {
        load.wait_served(survivor, exited, Duration::from_secs(30), "after the drain")
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.finish().await;
    let remaining = registry::read_all(&mut con).await.expect("registry");
    assert_eq!(
        remaining.len(),
        2,
        "the other registrations stay: {remaining:?}"
    );

    let refusals = assert_no_broken_attempts(&coordinator).await;
    report("SIGTERM one node of three", &seen, started.elapsed());
    eprintln!(
        "  attempts refused by the draining node and retried elsewhere: {refusals}; broken: 0"
    );
    eprintln!(
        "  {victim}: left the registry {} ms after SIGTERM, out of the coordinator's ring at {} \
         ms, exit code 0 after {} ms (notice {} ms, grace {} s)",
        left.as_millis(),
        routed_around.as_millis(),
        took.as_millis(),
        NOTICE.as_millis(),
        GRACE.as_secs()
    );
    assert!(
        seen.failures.is_empty(),
        "{} of {} client requests failed: {:?}",
        seen.failures.len(),
        seen.requests,
        &seen.failures[..seen.failures.len().min(10)]
    );
    assert!(
        seen.requests >= 50,
        "too few requests ran: {}",
        seen.requests
    );
}

/// A rolling restart: each node of three in turn gets SIGTERM, exits, starts again and is
/// routed to again before the next — under load, with no failed client request.
#[tokio::test]
async fn rolling_restart_of_three_nodes_under_load_fails_no_request() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let model = minilm_dir().to_string_lossy().to_string();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for &port in &ports {
        nodes.push(start_node(&model, port, &[]).await);
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let urls = urls.join(",");
    // Static membership: the node stays a member while it restarts, and the coordinator must
    // take it out from what the node says, then back in once its health checks pass.
    let coordinator = start_coordinator(&[("COORDINATOR_NODES", urls.as_str())]).await;
    let members: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();

    let started = Instant::now();
    let load = Load::start(&coordinator.base);
    for member in &members {
        load.wait_served(
            member,
            started,
            Duration::from_secs(60),
            "before the restarts",
        )
        .await;
    }
    let mut figures = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let took = drain(node).await;
        let restarting = Instant::now();
        *node = start_node(&model, ports[i], &[]).await;
        let up = restarting.elapsed();
        load.wait_served(
            &members[i],
            restarting,
            Duration::from_secs(60),
            "after its restart",
        )
        .await;
        figures.push((members[i].clone(), took, up, restarting.elapsed()));
    }
    let seen = load.finish().await;

    let refusals = assert_no_broken_attempts(&coordinator).await;
    report("rolling restart of three nodes", &seen, started.elapsed());
    eprintln!("  attempts refused by draining nodes and retried elsewhere: {refusals}; broken: 0");
    for (node, took, up, routed) in &figures {
        eprintln!(
            "  {node}: exit code 0 {} ms after SIGTERM; restarted and healthy in {} ms; routed to \
             again {} ms after its restart began",
            took.as_millis(),
            up.as_millis(),
            routed.as_millis()
        );
    }
    assert!(
        seen.failures.is_empty(),
        "{} of {} client requests failed: {:?}",
        seen.failures.len(),
        seen.requests,
        &seen.failures[..seen.failures.len().min(10)]
    );
}

/// The coordinator drains the same way: `/health` says `draining` (503) while it still routes
/// what arrives during the notice, then it stops accepting, lets the request in flight finish
/// and exits 0.
#[tokio::test]
async fn sigterm_drains_the_coordinator_too() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let model = minilm_dir().to_string_lossy().to_string();
    let node = start_node(
        &model,
        free_port(),
        &[
            ("MAX_BATCH_TOKENS", "2048"),
            ("REQUEST_TIMEOUT_MS", "300000"),
        ],
    )
    .await;
    let mut coordinator = start_coordinator(&[
        ("COORDINATOR_NODES", node.base.as_str()),
        ("SHUTDOWN_NOTICE_MS", "1500"),
        ("SHUTDOWN_GRACE_MS", "120000"),
        ("REQUEST_TIMEOUT_MS", "300000"),
        ("TOTAL_TIMEOUT_MS", "300000"),
    ])
    .await;
    let base = coordinator.base.clone();
    let texts: Vec<String> = (0..160)
        .map(|d| {
            format!(
                "coordinator drain {d}: {}",
                "the long history of paris and france from the romans to the republic ".repeat(16)
            )
        })
        .collect();
    let slow = tokio::spawn({
        let base = base.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/rerank"))
                .json(
                    &json!({"query": "what happened in paris?", "texts": texts, "truncate": true}),
                )
                .timeout(Duration::from_secs(300))
                .send()
                .await;
            match r {
                Ok(r) => (
                    r.status().as_u16(),
                    r.json::<Value>().await.unwrap_or(Value::Null),
                ),
                Err(_) => (0, Value::Null),
            }
        }
    });
    // In flight at the node before the coordinator is told to stop.
    node.wait_running(TOKEN).await;

    let signalled = Instant::now();
    coordinator.terminate();
    // The signal is delivered asynchronously: ask until the coordinator has handled it (well
    // within its notice).
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
    let health: Value = health.json().await.expect("json");
    assert_eq!(health["status"], "draining", "{health}");
    assert_eq!(health["role"], "coordinator");
    // Nobody would retry a request the coordinator refused: during the notice it still routes.
    let served = client
        .post(format!("{base}/rerank"))
        .json(&json!({"query": "during the notice", "texts": ["Paris is in France."]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(served.status().as_u16(), 200);
    tokio::time::sleep_until((signalled + Duration::from_millis(2000)).into()).await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before the listener closed"
    );
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err(),
        "new connections are refused after the notice"
    );
    let (status, ranked) = slow.await.expect("joined");
    let finished = signalled.elapsed();
    assert_eq!(status, 200, "{ranked}");
    assert_eq!(ranked.as_array().map_or(0, Vec::len), 160);
    let exit = coordinator
        .wait_exit(Duration::from_secs(125))
        .await
        .expect("the coordinator exits within its grace period");
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    eprintln!(
        "coordinator drain: the in-flight request (160 docs) completed 200 at {} ms; exit code 0 \
         at {} ms (notice 1500 ms, grace 120 s)",
        finished.as_millis(),
        took.as_millis()
    );
}
