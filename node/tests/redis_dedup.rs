//! The cross-node dedup protocol through real node processes and a real `redis-server`: two
//! owners whose claims interleave, an owner that gives its locks up without storing, a wait
//! that ends when the lock it waits on expires.
//!
//! `RERANK_NODE_BIN` (optional) names the node binary to test instead of this build's, e.g. a
//! build of an older commit to measure the "before" of these tests: they only talk HTTP and
//! Redis, and force the interleaving from outside the node (a proxy), so they run
//! unchanged against any build.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, minilm_dir, NodeProcess, RedisProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const QUERY: &str = "What is the capital of France?";

fn node_binary() -> PathBuf {
    std::env::var_os("RERANK_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(common::node_binary)
}

async fn start_node(redis_url: &str, extra: &[(&str, &str)]) -> NodeProcess {
    let dir = minilm_dir().to_string_lossy().to_string();
    let mut env = vec![
        ("MODEL_PATH", dir.as_str()),
        ("REDIS_ENABLED", "true"),
        ("REDIS_URL", redis_url),
    ];
    env.extend_from_slice(extra);
    NodeProcess::start_binary(&node_binary(), free_port(), &env).await
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

/// `POST /rerank`; the status and the scores in document order.
async fn rerank(base: &str, texts: &[String]) -> reqwest::Result<(u16, Vec<f64>)> {
    let r = reqwest::Client::new()
        .post(format!("{base}/rerank"))
        .json(&json!({"query": QUERY, "texts": texts}))
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let mut scores = vec![f64::NAN; texts.len()];
    for item in body.as_array().into_iter().flatten() {
        if let (Some(i), Some(s)) = (item["index"].as_u64(), item["score"].as_f64()) {
            if let Some(slot) = scores.get_mut(i as usize) {
                *slot = s;
            }
        }
    }
    Ok((status, scores))
}

/// `(rerank_lock_wins_total, rerank_lock_waits_total)`.
async fn counts(node: &NodeProcess) -> (u64, u64) {
    (
        node.metric("rerank_lock_wins_total").await,
        node.metric("rerank_lock_waits_total").await,
    )
}

/// `rerank_dedup_waits_total{ended="…"}`.
async fn dedup_waits(node: &NodeProcess, ended: &str) -> u64 {
    node.metric(&format!("rerank_dedup_waits_total{{ended=\"{ended}\"}}"))
        .await
}

/// Makes two proxies' next lock-taking commands (`SET … NX`, `EVAL`, `EVALSHA`) alternate: each
/// side's k-th command goes to Redis only after the other side's (k-1)-th has (or after 5 s,
/// should the other side have nothing to send). Armed for a number of rounds; idle otherwise.
#[derive(Default)]
struct Lockstep {
    /// Commands each side has passed since the gate was armed, and the rounds armed.
    state: Mutex<([usize; 2], usize)>,
    moved: Notify,
}

/// How long a gated command is given to reach Redis and be run before the other side's next
/// one may go: two sockets written in turn are not necessarily read by Redis in turn.
const SETTLE: Duration = Duration::from_millis(50);

impl Lockstep {
    fn arm(&self, rounds: usize) {
        *self.state.lock().expect("lock") = ([0, 0], rounds);
    }

    /// Waits for `side`'s turn; `true` when the command is gated (then call [`Self::went`]).
    async fn turn(&self, side: usize) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let (passed, rounds) = *self.state.lock().expect("lock");
                if passed[side] >= rounds {
                    return false;
                }
                if passed[1 - side] >= passed[side] {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return true;
            }
        }
    }

    fn went(&self, side: usize) {
        self.state.lock().expect("lock").0[side] += 1;
        self.moved.notify_waiters();
    }
}

/// A TCP proxy in front of Redis, one per node, whose lock-taking commands go through a shared
/// [`Lockstep`]: two nodes' lock pipelines then reach Redis one command each in turn, the
/// interleaving forced from outside the node. Stops (with its connections) when dropped.
struct InterleavingProxy {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
}

impl InterleavingProxy {
    async fn start(upstream: u16, gate: Arc<Lockstep>, side: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(relay(client, upstream, gate.clone(), side));
            }
        });
        Self { port, accept }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for InterleavingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, upstream: u16, gate: Arc<Lockstep>, side: usize) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    let commands = async {
        let mut reader = BufReader::new(client_read);
        while let Some((raw, takes_locks)) = read_command(&mut reader).await {
            let gated = takes_locks && gate.turn(side).await;
            if server_write.write_all(&raw).await.is_err() {
                return;
            }
            if gated {
                tokio::time::sleep(SETTLE).await;
                gate.went(side);
            }
        }
    };
    tokio::select! {
        () = replies => {}
        () = commands => {}
    }
}

/// One RESP command (an array of bulk strings, as every client sends): its bytes, and whether
/// it takes locks.
async fn read_command(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<(Vec<u8>, bool)> {
    let mut raw = Vec::new();
    let count: usize = read_line(reader, &mut raw)
        .await?
        .strip_prefix('*')?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let len: usize = read_line(reader, &mut raw)
            .await?
            .strip_prefix('$')?
            .parse()
            .ok()?;
        let mut arg = vec![0u8; len + 2];
        reader.read_exact(&mut arg).await.ok()?;
        raw.extend_from_slice(&arg);
        arg.truncate(len);
        args.push(arg);
    }
    let name = args.first()?.to_ascii_uppercase();
    let takes_locks = match name.as_slice() {
        b"EVAL" | b"EVALSHA" => true,
        b"SET" => args.iter().any(|a| a.eq_ignore_ascii_case(b"NX")),
        _ => false,
    };
    Some((raw, takes_locks))
}

async fn read_line(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    raw: &mut Vec<u8>,
) -> Option<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).await.ok()? == 0 {
        return None;
    }
    raw.extend_from_slice(&line);
    Some(String::from_utf8_lossy(&line).trim_end().to_string())
}

#[tokio::test]
async fn interleaved_owners_publish_without_waiting_on_each_other() {
    let redis = RedisProcess::start();
    let gate = Arc::new(Lockstep::default());
    let (proxy_a, proxy_b) = (
        InterleavingProxy::start(redis.port, gate.clone(), 0).await,
        InterleavingProxy::start(redis.port, gate.clone(), 1).await,
    );
    // A 10 s lock makes the old mutual wait visible; a lock call held at the gate for the other
    // node must not time out (default 250 ms) and open the breaker.
    let env = [
        ("REDIS_LOCK_TTL_MS", "10000"),
        ("REDIS_TIMEOUT_MS", "10000"),
    ];
    let a = start_node(&proxy_a.url(), &env).await;
    let b = start_node(&proxy_b.url(), &env).await;
    // Warm both models up, so the timed requests measure the protocol.
    for (node, tag) in [(&a, "warm a"), (&b, "warm b")] {
        assert_eq!(
            rerank(&node.base, &docs(tag, 2, 2)).await.expect("warm").0,
            200
        );
    }
    let (a0, b0) = (counts(&a).await, counts(&b).await);
    // Each request takes two locks: x then y on A, y then x on B; in lockstep, A's y goes after
    // B's y and B's x after A's x.
    gate.arm(2);

    let pair = docs("interleaved", 2, 4);
    let (x, y) = (pair[0].clone(), pair[1].clone());
    let timed = |base: String, texts: Vec<String>| async move {
        let started = Instant::now();
        let answer = rerank(&base, &texts).await;
        (answer, started.elapsed())
    };
    let ((from_a, took_a), (from_b, took_b)) = tokio::join!(
        timed(a.base.clone(), vec![x.clone(), y.clone()]),
        timed(b.base.clone(), vec![y, x]),
    );
    let (status_a, scores_a) = from_a.expect("A answered");
    let (status_b, scores_b) = from_b.expect("B answered");
    assert_eq!((status_a, status_b), (200, 200));

    // Shown, not argued: each node won one pair's lock and waited on the other's.
    let (a1, b1) = (counts(&a).await, counts(&b).await);
    assert_eq!(
        (a1.0 - a0.0, a1.1 - a0.1),
        (1, 1),
        "A won x and waited on y"
    );
    assert_eq!(
        (b1.0 - b0.0, b1.1 - b0.1),
        (1, 1),
        "B won y and waited on x"
    );
    eprintln!("interleaved owners: A took {took_a:?}, B took {took_b:?}");
    for took in [took_a, took_b] {
        assert!(
            took < Duration::from_secs(2),
            "A took {took_a:?}, B took {took_b:?}: the owners waited on each other"
        );
    }
    assert_eq!(scores_a[0], scores_b[1], "x: A's score is B's");
    assert_eq!(scores_a[1], scores_b[0], "y: B's score is A's");
    assert_eq!(
        dedup_waits(&a, "expiry").await + dedup_waits(&b, "expiry").await,
        0
    );
}

#[tokio::test]
async fn an_owner_that_gives_up_hands_its_pairs_to_waiters_at_once() {
    let redis = RedisProcess::start();
    let env = [("REDIS_LOCK_TTL_MS", "20000")];
    let owner = start_node(&redis.url(), &env).await;
    let waiter = start_node(&redis.url(), &env).await;
    // The owner's request: the shared pairs plus many long ones that keep it computing (its
    // computation returns all pairs at once) long after its client has gone.
    let shared = docs("released", 8, 4);
    let mut owner_texts = shared.clone();
    owner_texts.extend(docs("filler", 160, 40));
    let owner_request = tokio::spawn({
        let base = owner.base.clone();
        async move { rerank(&base, &owner_texts).await }
    });
    let started = Instant::now();
    while owner.metric("rerank_lock_wins_total").await < 168 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no locks taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = tokio::spawn({
        let (base, texts) = (waiter.base.clone(), shared.clone());
        async move {
            let answer = rerank(&base, &texts).await;
            (answer, Instant::now())
        }
    });
    while waiter.metric("rerank_lock_waits_total").await < 8 {
        assert!(started.elapsed() < Duration::from_secs(30), "no wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !waiting.is_finished() && !owner_request.is_finished(),
        "the owner finished before its client left: make its request longer"
    );

    // The owner's client leaves mid-computation: the owner releases its locks unstored.
    owner_request.abort();
    let left = Instant::now();
    let (answer, answered) = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiter answered within 60 s")
        .expect("joined");
    let (status, scores) = answer.expect("sent");
    let handed_over = answered - left;
    eprintln!("released without storing: the waiter answered {handed_over:?} after the owner's client left");
    assert_eq!(status, 200);
    assert!(scores.iter().all(|s| s.is_finite()));
    assert!(
        handed_over < Duration::from_secs(5),
        "the waiter answered {handed_over:?} after the release (lock TTL 20 s)"
    );
    assert_eq!(
        waiter.metric("rerank_lock_wins_total").await,
        8,
        "the waiter took the released locks over"
    );
    assert_eq!(dedup_waits(&waiter, "takeover").await, 1);
    assert_eq!(dedup_waits(&waiter, "expiry").await, 0);
}

#[tokio::test]
async fn a_wait_ends_when_the_awaited_lock_expires() {
    let redis = RedisProcess::start();
    let env = [("REDIS_LOCK_TTL_MS", "10000")];
    let a = start_node(&redis.url(), &env).await;
    let b = start_node(&redis.url(), &env).await;
    // A computes the pairs, so their key names are known; then they are made to look like
    // pairs a hung owner locked 8.5 s ago: no score, a lock with 1.5 s left.
    let texts = docs("expiring", 4, 2);
    assert_eq!(rerank(&a.base, &texts).await.expect("a").0, 200);
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
    assert_eq!(stored.len(), 4);
    let mut pipe = redis::pipe();
    for key in &stored {
        let at = key.rfind(":s:").expect("a score key");
        let lock = format!("{}:l:{}", &key[..at], &key[at + 3..]);
        pipe.cmd("DEL").arg(key).ignore();
        pipe.cmd("SET")
            .arg(lock)
            .arg("a hung owner")
            .arg("PX")
            .arg(1500)
            .ignore();
    }
    let () = pipe.query_async(&mut con).await.expect("locked");

    let started = Instant::now();
    let (status, _) = rerank(&b.base, &texts).await.expect("b");
    let took = started.elapsed();
    eprintln!("wait on a lock with 1.5 s left (lock TTL 10 s): {took:?}");
    assert_eq!(status, 200);
    assert!(
        took >= Duration::from_millis(1400),
        "{took:?}: B did not wait for the lock"
    );
    assert!(
        took < Duration::from_secs(5),
        "{took:?}: B waited past the lock's expiry"
    );
    assert_eq!(dedup_waits(&b, "expiry").await, 1);
}

/// Locks are leases its live owner renews: an owner computing for several leases keeps its
/// pairs (another node waits instead of computing them again), and when that owner is killed,
/// the waiter takes the pairs over within about a lease — not after `REDIS_LOCK_TTL_MS`.
#[tokio::test]
async fn a_live_owner_keeps_its_leases_and_a_dead_ones_lapse_within_one() {
    let redis = RedisProcess::start();
    // Default lock TTL (30 s). A thousand 256-token documents on one thread in small passes:
    // the owner computes for many 3 s leases even on a fast CPU.
    let env = [
        ("MAX_BATCH_TOKENS", "1024"),
        ("LOCAL_CACHE_SIZE", "0"),
        ("OMP_NUM_THREADS", "1"),
    ];
    let mut owner = start_node(&redis.url(), &env).await;
    let waiter = start_node(&redis.url(), &env).await;
    const PAIRS: u64 = 1000;
    let texts = docs("leased", PAIRS as usize, 40);
    let owner_request = tokio::spawn({
        let (base, texts) = (owner.base.clone(), texts.clone());
        async move { rerank(&base, &texts).await }
    });
    let started = Instant::now();
    while counts(&owner).await.0 < PAIRS {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the owner never took the locks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = tokio::spawn({
        let (base, texts) = (waiter.base.clone(), texts.clone());
        async move { rerank(&base, &texts).await }
    });
    // Through more than two leases the owner keeps every lock: the waiter computes nothing.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        counts(&waiter).await.1,
        PAIRS,
        "the waiter waited on every pair"
    );
    assert_eq!(
        waiter.metric("rerank_pairs_computed_total").await,
        0,
        "the owner's renewed leases held"
    );
    assert!(
        !owner_request.is_finished(),
        "the owner was still computing"
    );
    owner.kill();
    let killed = Instant::now();
    // The dead owner's leases lapse; the waiter claims every pair and computes it.
    while counts(&waiter).await.0 < PAIRS {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the dead owner's locks still held {:?} after the kill (lock TTL 30 s)",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "owner killed mid-computation: the waiter held its pairs {:?} later",
        killed.elapsed()
    );
    // It computes them now; that the answer then comes is the other tests' business.
    while waiter.metric("rerank_pairs_computed_total").await == 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the waiter never computed the pairs it took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    waiting.abort();
}
