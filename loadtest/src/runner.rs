//! Sending the requests: `concurrency` worker tasks share one HTTP client and pull request
//! indices from one atomic counter until the count or the deadline is reached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::ProgressBar;
use reqwest::{Client, StatusCode};
use serde::Serialize;

use crate::report::Stats;
use crate::workload::{RerankItem, Workload};

/// Which of the two rerank APIs the server is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// `POST /rerank` with `{"query", "texts"}` (text-embeddings-inference).
    Tei,
    /// `POST /v1/rerank` with `{"query", "documents"}` (Cohere).
    Cohere,
}

impl Api {
    /// The path appended to the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::Tei => "/rerank",
            Self::Cohere => "/v1/rerank",
        }
    }

    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tei => "tei",
            Self::Cohere => "cohere",
        }
    }
}

#[derive(Serialize)]
struct TeiBody<'a> {
    query: &'a str,
    texts: &'a [String],
}

#[derive(Serialize)]
struct CohereBody<'a> {
    query: &'a str,
    documents: &'a [String],
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests have been sent.
    Requests(u64),
    /// Once this much time has passed: no request starts after it, those in flight finish.
    Duration(Duration),
}

/// Everything a run needs besides the client and the workload.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Full endpoint URL (base URL plus the API's path).
    pub endpoint: String,
    /// Which body shape to send.
    pub api: Api,
    /// Worker tasks, i.e. requests in flight at once.
    pub concurrency: usize,
    /// When to stop.
    pub stop: Stop,
    /// Workload index of the first request, so measured requests follow the warm-up ones instead
    /// of repeating them.
    pub first_index: u64,
}

/// The merged counts of a run and how long it took.
#[derive(Debug)]
pub struct Outcome {
    /// Counts over all workers.
    pub stats: Stats,
    /// From just before the first request to the end of the last one.
    pub elapsed: Duration,
}

/// The shared client: one pool of keep-alive connections sized to the concurrency, so each
/// worker reuses its connection instead of paying a TCP handshake per request.
pub fn client(concurrency: usize, timeout: Duration) -> Result<Client> {
    Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(concurrency)
        // The target is a local server: an HTTP(S)_PROXY in the environment must not divert it.
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

/// Runs the plan to completion; `progress` advances once per finished request (per second of a
/// `--duration` run).
pub async fn run(
    client: &Client,
    workload: Arc<Workload>,
    plan: &RunPlan,
    progress: &ProgressBar,
) -> Result<Outcome> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = match plan.stop {
        Stop::Duration(d) => Some(started + d),
        Stop::Requests(_) => None,
    };
    let ticker = deadline.map(|_| {
        let progress = progress.clone();
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                progress.set_position(started.elapsed().as_secs());
                progress.set_message(format!("{} sent", next.load(Ordering::Relaxed)));
            }
        })
    });

    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            let worker = Worker {
                client: client.clone(),
                workload: Arc::clone(&workload),
                next: Arc::clone(&next),
                endpoint: plan.endpoint.clone(),
                api: plan.api,
                stop: plan.stop,
                deadline,
                first_index: plan.first_index,
                progress: progress.clone(),
            };
            tokio::spawn(worker.run())
        })
        .collect();

    let mut stats = Stats::new()?;
    for joined in futures_util::future::join_all(workers).await {
        let worker_stats = joined.context("a worker task failed")??;
        stats.merge(&worker_stats)?;
    }
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    Ok(Outcome { stats, elapsed })
}

/// One worker task's share of the run.
struct Worker {
    client: Client,
    workload: Arc<Workload>,
    next: Arc<AtomicU64>,
    endpoint: String,
    api: Api,
    stop: Stop,
    deadline: Option<Instant>,
    first_index: u64,
    progress: ProgressBar,
}

impl Worker {
    async fn run(self) -> Result<Stats> {
        let mut stats = Stats::new()?;
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if let Stop::Requests(total) = self.stop {
                if n >= total {
                    break;
                }
            }
            let item = self.workload.request(self.first_index + n);
            self.send(&item, &mut stats).await;
            if self.deadline.is_none() {
                self.progress.inc(1);
            }
        }
        Ok(stats)
    }

    /// Sends one request and records its outcome. The latency includes reading the whole body,
    /// which also returns the connection to the pool.
    async fn send(&self, item: &RerankItem, stats: &mut Stats) {
        let request = self.client.post(&self.endpoint);
        let request = match self.api {
            Api::Tei => request.json(&TeiBody {
                query: &item.query,
                texts: &item.documents,
            }),
            Api::Cohere => request.json(&CohereBody {
                query: &item.query,
                documents: &item.documents,
            }),
        };
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => return stats.record_error("transport"),
        };
        let status = response.status();
        let body = response.bytes().await;
        match (status, body) {
            (StatusCode::OK, Ok(_)) => stats.record_ok(started.elapsed(), item.documents.len()),
            (StatusCode::OK, Err(_)) => stats.record_error("transport"),
            (status, _) => stats.record_error(status.as_str()),
        }
    }
}
