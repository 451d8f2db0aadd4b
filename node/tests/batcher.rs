//! The micro-batcher under tokio's paused clock, with a recording stand-in for the model actor
//! (the real model is exercised by the HTTP tests; here the subject is when batches form).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use rerank_engine::{EncodedPair, EngineError, TokenIds};
use rerank_node::actors::batcher_actor::{Enqueue, PairOutcome};
use rerank_node::actors::{BatcherActor, BatcherSettings, BatcherStats, ScorePairs, ScoredPairs};
use rerank_node::cache::LocalScoreCache;
use rerank_node::metrics::NodeMetrics;
use rerank_shared::pair_key::PairKey;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Scores a pair as its first token id, and records every batch it is sent; each forward pass
/// takes `pass_time` (of tokio's paused clock).
struct RecordingModel {
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    pass_time: Duration,
}

impl Actor for RecordingModel {
    type Context = Context<Self>;
}

impl Handler<ScorePairs> for RecordingModel {
    type Result = ResponseFuture<Result<ScoredPairs, EngineError>>;

    fn handle(&mut self, msg: ScorePairs, _: &mut Context<Self>) -> Self::Result {
        let ids: Vec<u32> = msg.pairs.iter().map(first_id).collect();
        if let Ok(mut b) = self.batches.lock() {
            b.push(ids.clone());
        }
        let pass_time = self.pass_time;
        Box::pin(async move {
            if !pass_time.is_zero() {
                tokio::time::sleep(pass_time).await;
            }
            Ok(ScoredPairs {
                raw_scores: ids.iter().map(|&i| i as f32).collect(),
                queue_time: Duration::ZERO,
                inference_time: Duration::from_millis(1),
            })
        })
    }
}

fn first_id(pair: &EncodedPair) -> u32 {
    match pair {
        EncodedPair::Cross(t) => t.ids[0],
        EncodedPair::Bi { document, .. } => document.ids[0],
        EncodedPair::Decoder { own, .. } => own.ids[0],
    }
}

fn pair(id: u32, tokens: usize) -> (PairKey, EncodedPair) {
    (
        PairKey(u128::from(id)),
        EncodedPair::Cross(TokenIds {
            ids: vec![id; tokens],
            type_ids: vec![0; tokens],
        }),
    )
}

struct Harness {
    batcher: Addr<BatcherActor>,
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    metrics: Arc<NodeMetrics>,
    cache: LocalScoreCache,
}

fn settings(
    enabled: bool,
    window_ms: u64,
    max_requests: usize,
    max_tokens: usize,
) -> BatcherSettings {
    BatcherSettings {
        enabled,
        window: Duration::from_millis(window_ms),
        max_requests,
        max_tokens,
    }
}

impl Harness {
    fn start(settings: BatcherSettings) -> Self {
        Self::with_pass_time(settings, Duration::ZERO)
    }

    /// A harness whose model takes `pass_time` per forward pass, so requests can arrive while a
    /// pass runs.
    fn with_pass_time(settings: BatcherSettings, pass_time: Duration) -> Self {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let model = RecordingModel {
            batches: batches.clone(),
            pass_time,
        }
        .start();
        let metrics = Arc::new(NodeMetrics::new().expect("metrics"));
        let cache = LocalScoreCache::new(1000, Duration::from_secs(60));
        let batcher = BatcherActor::new(
            settings,
            model.recipient(),
            cache.clone(),
            metrics.clone(),
            Arc::new(BatcherStats::default()),
        )
        .start();
        Self {
            batcher,
            batches,
            metrics,
            cache,
        }
    }

    async fn enqueue(
        &self,
        items: Vec<(PairKey, EncodedPair)>,
        cancel: &CancellationToken,
    ) -> Vec<oneshot::Receiver<PairOutcome>> {
        self.batcher
            .send(Enqueue {
                items,
                cancel: cancel.clone(),
                span: tracing::Span::none(),
            })
            .await
            .expect("batcher alive")
    }

    async fn request(&self, ids: &[u32], tokens: usize) -> Vec<oneshot::Receiver<PairOutcome>> {
        self.enqueue(
            ids.iter().map(|&i| pair(i, tokens)).collect(),
            &CancellationToken::new(),
        )
        .await
    }

    fn batches(&self) -> Vec<Vec<u32>> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

async fn scores(receivers: Vec<oneshot::Receiver<PairOutcome>>) -> Vec<f32> {
    let mut out = Vec::new();
    for r in receivers {
        out.push(r.await.expect("answered").expect("scored").raw_score);
    }
    out
}

#[actix_web::test]
async fn a_lone_request_is_flushed_at_once() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 50, 32, 10_000));
    let t0 = Instant::now();
    assert_eq!(scores(h.request(&[7], 4).await).await, vec![7.0]);
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "no window wait under low load"
    );
}

#[actix_web::test]
async fn concurrent_requests_wait_one_window_and_share_a_batch() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 50, 32, 10_000));
    scores(h.request(&[1], 4).await).await;
    let t0 = Instant::now();
    let r2 = h.request(&[2], 4).await;
    let r3 = h.request(&[3], 4).await;
    tokio::time::advance(Duration::from_millis(49)).await;
    assert_eq!(h.batches().len(), 1, "nothing flushed before the window");
    assert_eq!(scores(r2).await, vec![2.0]);
    assert_eq!(scores(r3).await, vec![3.0]);
    // The timer wheel rounds deadlines up to the next millisecond tick.
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited <= Duration::from_millis(51),
        "{waited:?}"
    );
    assert_eq!(h.batches(), vec![vec![1], vec![2, 3]]);
}

#[actix_web::test]
async fn reaching_the_size_flushes_without_waiting() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 10_000, 3, 10_000));
    scores(h.request(&[1], 4).await).await;
    let t0 = Instant::now();
    let rs = [
        h.request(&[2], 4).await,
        h.request(&[3], 4).await,
        h.request(&[4], 4).await,
    ];
    for (r, want) in rs.into_iter().zip([2.0, 3.0, 4.0]) {
        assert_eq!(scores(r).await, vec![want]);
    }
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(h.batches(), vec![vec![1], vec![2, 3, 4]]);
}

#[actix_web::test]
async fn the_token_budget_flushes_and_splits_batches() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 10_000, 32, 100));
    scores(h.request(&[1], 40).await).await;
    let t0 = Instant::now();
    let r2 = h.request(&[2], 40).await;
    let r3 = h.request(&[3], 40).await;
    let r4 = h.request(&[4], 40).await; // 120 tokens pending ≥ 100: flush 2+3, then 4
    assert_eq!(scores(r2).await, vec![2.0]);
    assert_eq!(scores(r3).await, vec![3.0]);
    assert_eq!(scores(r4).await, vec![4.0]);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(h.batches(), vec![vec![1], vec![2, 3], vec![4]]);
}

#[actix_web::test]
async fn results_go_back_to_the_right_request_and_into_the_cache() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 20, 64, 100_000));
    let mut pending = Vec::new();
    for r in 0..10u32 {
        let ids: Vec<u32> = (0..5).map(|i| 100 * (r + 1) + i).collect();
        pending.push((ids.clone(), h.request(&ids, 3).await));
    }
    for (ids, receivers) in pending {
        let want: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        assert_eq!(scores(receivers).await, want);
    }
    let cached = h.cache.get(&PairKey(101)).expect("cached after computing");
    assert_eq!((cached.raw, cached.tokens), (101.0, 3));
}

#[actix_web::test]
async fn identical_pairs_are_computed_once() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 20, 64, 100_000));
    scores(h.request(&[9], 4).await).await;
    let a = h.request(&[1, 2], 4).await;
    let b = h.request(&[2, 3], 4).await;
    let c = h.request(&[1, 1], 4).await;
    assert_eq!(scores(a).await, vec![1.0, 2.0]);
    assert_eq!(scores(b).await, vec![2.0, 3.0]);
    assert_eq!(scores(c).await, vec![1.0, 1.0]);
    let mut computed: Vec<u32> = h.batches().concat();
    computed.sort();
    assert_eq!(computed, vec![1, 2, 3, 9], "each distinct pair once");
    assert_eq!(h.metrics.dedup_hits.get(), 3);
    assert_eq!(h.metrics.pairs_computed.get(), 4);
}

#[actix_web::test]
async fn pairs_of_departed_clients_are_dropped_unless_shared() {
    tokio::time::pause();
    let h = Harness::start(settings(true, 50, 64, 100_000));
    scores(h.request(&[9], 4).await).await;
    let gone_alone = CancellationToken::new();
    let gone_shared = CancellationToken::new();
    let _r1 = h.enqueue(vec![pair(1, 4)], &gone_alone).await;
    let _r2 = h.enqueue(vec![pair(2, 4)], &gone_shared).await;
    let r3 = h.request(&[2], 4).await;
    gone_alone.cancel();
    gone_shared.cancel();
    assert_eq!(scores(r3).await, vec![2.0]);
    assert_eq!(
        h.batches(),
        vec![vec![9], vec![2]],
        "pair 1 had no waiter left"
    );
    assert_eq!(h.metrics.pairs_dropped.get(), 1);
}

#[actix_web::test]
async fn with_batching_off_each_request_is_its_own_pass() {
    tokio::time::pause();
    let h = Harness::start(settings(false, 50, 32, 10_000));
    let rs = [
        h.request(&[1], 4).await,
        h.request(&[2], 4).await,
        h.request(&[3, 4], 4).await,
    ];
    for r in rs {
        scores(r).await;
    }
    assert_eq!(h.batches(), vec![vec![1], vec![2], vec![3, 4]]);
}

/// The time of one forward pass in the fairness tests.
const PASS: Duration = Duration::from_millis(10);

/// A request of `n` pairs of `tokens` tokens each, with ids `first..first + n`.
async fn big_request(
    h: &Harness,
    first: u32,
    n: u32,
    tokens: usize,
    cancel: &CancellationToken,
) -> Vec<oneshot::Receiver<PairOutcome>> {
    h.enqueue(
        (first..first + n).map(|i| pair(i, tokens)).collect(),
        cancel,
    )
    .await
}

#[actix_web::test]
async fn a_small_request_waits_at_most_one_pass_behind_a_big_one() {
    tokio::time::pause();
    let h = Harness::with_pass_time(settings(true, 50, 32, 100), PASS);
    let big = big_request(&h, 1000, 50, 10, &CancellationToken::new()).await;
    let small = h.request(&[1, 2], 10).await; // arrives while the big one's first pass runs
    assert_eq!(scores(small).await, vec![1.0, 2.0]);
    let passes = h.batches();
    assert!(passes.len() >= 2, "{passes:?}");
    assert!(passes[0].iter().all(|&id| id >= 1000), "{passes:?}");
    // The small request rode the very next pass.
    assert!(passes[1].contains(&1) && passes[1].contains(&2));
    assert_eq!(
        passes[1].len(),
        10,
        "the big one fills the rest of the pass"
    );
    assert_eq!(scores(big).await.len(), 50);
    assert!(
        h.batches().iter().all(|p| p.len() * 10 <= 100),
        "every pass within the token budget"
    );
}

#[actix_web::test]
async fn every_waiting_request_gets_a_share_of_each_pass() {
    tokio::time::pause();
    let h = Harness::with_pass_time(settings(true, 50, 32, 100), PASS);
    let big = big_request(&h, 1000, 40, 10, &CancellationToken::new()).await;
    let mut small = Vec::new();
    for r in 0..5u32 {
        small.push(h.request(&[10 * r + 1, 10 * r + 2, 10 * r + 3], 10).await);
    }
    for s in small {
        assert_eq!(scores(s).await.len(), 3);
    }
    assert_eq!(scores(big).await.len(), 40);
    // While the big request had pairs left, every pass carried some of them: nothing starves.
    let passes = h.batches();
    let mut big_left = 40;
    for pass in &passes {
        if big_left > 0 {
            assert!(pass.iter().any(|&id| id >= 1000), "{passes:?}");
        }
        big_left -= pass.iter().filter(|&&id| id >= 1000).count();
    }
}

#[actix_web::test]
async fn a_departed_requests_remaining_passes_are_dropped() {
    tokio::time::pause();
    let h = Harness::with_pass_time(settings(true, 50, 32, 100), PASS);
    let gone = CancellationToken::new();
    let _big = big_request(&h, 1000, 50, 10, &gone).await;
    let stays = h.request(&[1], 10).await;
    gone.cancel();
    assert_eq!(scores(stays).await, vec![1.0]);
    let passes = h.batches();
    assert_eq!(passes.len(), 2, "{passes:?}");
    assert_eq!(
        passes[1],
        vec![1],
        "nothing more of the departed request was computed"
    );
    assert_eq!(h.metrics.pairs_dropped.get(), 40);
}

#[actix_web::test]
async fn with_batching_off_requests_take_passes_in_turn() {
    tokio::time::pause();
    let h = Harness::with_pass_time(settings(false, 50, 32, 30), PASS);
    let big = big_request(&h, 1000, 9, 10, &CancellationToken::new()).await;
    let small = h.request(&[1], 10).await;
    assert_eq!(scores(small).await, vec![1.0]);
    assert_eq!(scores(big).await.len(), 9);
    assert_eq!(
        h.batches(),
        vec![
            vec![1000, 1001, 1002],
            vec![1],
            vec![1003, 1004, 1005],
            vec![1006, 1007, 1008]
        ]
    );
}
