//! Counting outcomes during a run, and turning the counts into the final report (a table for
//! people, one JSON object for scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency the histogram tells apart: an hour, far above any allowed `--timeout`.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Outcome counts of a set of requests. Each worker keeps its own and they are merged at the end,
/// so recording needs no lock.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests finished, whatever the outcome.
    pub requests: u64,
    /// Requests answered with HTTP 200.
    pub ok: u64,
    /// Query-document pairs in the successful requests.
    pub pairs: u64,
    /// Failed requests by cause: the HTTP status code, or `"transport"`.
    pub errors: BTreeMap<String, u64>,
    /// Latency of successful requests, in microseconds.
    latency_us: Histogram<u64>,
}

impl Stats {
    /// Empty counts.
    pub fn new() -> Result<Self> {
        Ok(Self {
            requests: 0,
            ok: 0,
            pairs: 0,
            errors: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .context("creating the latency histogram")?,
        })
    }

    /// Counts a successful request carrying `docs` documents that took `latency`.
    pub fn record_ok(&mut self, latency: Duration, docs: usize) {
        self.requests += 1;
        self.ok += 1;
        self.pairs += docs as u64;
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
    }

    /// Counts a failed request under `cause` (a status code such as `"429"`, or `"transport"`).
    pub fn record_error(&mut self, cause: &str) {
        self.requests += 1;
        *self.errors.entry(cause.to_string()).or_insert(0) += 1;
    }

    /// Adds another worker's counts to these.
    pub fn merge(&mut self, other: &Stats) -> Result<()> {
        self.requests += other.requests;
        self.ok += other.ok;
        self.pairs += other.pairs;
        for (cause, n) in &other.errors {
            *self.errors.entry(cause.clone()).or_insert(0) += n;
        }
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| anyhow::anyhow!("merging latency histograms: {e:?}"))
    }

    /// The failed requests, all causes together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report for these counts over a run that took `elapsed`.
    pub fn report(&self, elapsed: Duration, settings: Settings) -> Report {
        let elapsed_s = elapsed.as_secs_f64();
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let hist = &self.latency_us;
        let has = !hist.is_empty();
        let ms = |us: u64| has.then_some(us as f64 / 1000.0);
        Report {
            requests: self.requests,
            ok: self.ok,
            errors: self.errors.clone(),
            elapsed_s,
            requests_per_s: per_s(self.ok),
            pairs_per_s: per_s(self.pairs),
            latency_ms: LatencyMs {
                p50: ms(hist.value_at_quantile(0.50)),
                p95: ms(hist.value_at_quantile(0.95)),
                p99: ms(hist.value_at_quantile(0.99)),
                max: ms(hist.max()),
                mean: has.then(|| hist.mean() / 1000.0),
            },
            settings,
        }
    }
}

/// What the run was asked to do, echoed in the report so a result can be read on its own.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Base URL of the server.
    pub url: String,
    /// `"tei"` or `"cohere"`.
    pub api: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Documents per request; `null` when a workload file mixes sizes.
    pub docs_per_request: Option<usize>,
    /// Share of requests copied from the popular pool; `null` for a workload file.
    pub duplicate_ratio: Option<f64>,
    /// `"generated"` or the path of the workload file.
    pub workload: String,
    /// Seed of the generator; `null` for a workload file.
    pub seed: Option<u64>,
    /// The `--requests` bound, when the run was bounded by count.
    pub requests_limit: Option<u64>,
    /// The `--duration` bound in seconds, when the run was bounded by time.
    pub duration_s: Option<f64>,
    /// Per-request timeout in seconds.
    pub timeout_s: f64,
    /// Requests sent before measuring.
    pub warmup: u64,
}

/// Latency percentiles of successful requests in milliseconds; all `null` when none succeeded.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// The result of the measured part of a run. Field names are the stable `--json` keys.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests finished (successes plus errors).
    pub requests: u64,
    /// Requests answered with HTTP 200.
    pub ok: u64,
    /// Failed requests by cause, e.g. `{"429": 3, "transport": 1}`.
    pub errors: BTreeMap<String, u64>,
    /// Wall-clock seconds from the first request sent to the last one finished.
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Query-document pairs of successful requests per second.
    pub pairs_per_s: f64,
    /// Latency of successful requests.
    pub latency_ms: LatencyMs,
    /// What the run was asked to do.
    pub settings: Settings,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).context("serialising the report")
    }

    /// The report as an aligned plain-text table.
    pub fn to_table(&self) -> String {
        let s = &self.settings;
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        let docs = s
            .docs_per_request
            .map_or_else(|| "mixed".to_string(), |d| d.to_string());
        let dup = s
            .duplicate_ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(cause, n)| format!("{cause}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let bound = match (s.requests_limit, s.duration_s) {
            (Some(n), _) => format!("{n} requests"),
            (None, Some(d)) => format!("{d} s"),
            (None, None) => "-".to_string(),
        };
        let l = &self.latency_ms;
        let mut out = String::new();
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<16}{value}");
        };
        row("url", format!("{} ({})", s.url, s.api));
        row("workload", s.workload.clone());
        row(
            "settings",
            format!(
                "concurrency {}, {docs} docs/request, duplicate ratio {dup}, bound {bound}, \
                 warmup {}, timeout {} s",
                s.concurrency, s.warmup, s.timeout_s
            ),
        );
        row("requests", self.requests.to_string());
        row("ok", self.ok.to_string());
        row("errors", errors);
        row("elapsed", format!("{:.3} s", self.elapsed_s));
        row("requests/s", format!("{:.2}", self.requests_per_s));
        row("pairs/s", format!("{:.2}", self.pairs_per_s));
        row(
            "latency ms",
            format!(
                "p50 {}  p95 {}  p99 {}  max {}  mean {}",
                opt(l.p50),
                opt(l.p95),
                opt(l.p99),
                opt(l.max),
                opt(l.mean)
            ),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            url: "http://127.0.0.1:1".into(),
            api: "tei".into(),
            concurrency: 2,
            docs_per_request: Some(4),
            duplicate_ratio: Some(0.0),
            workload: "generated".into(),
            seed: Some(42),
            requests_limit: Some(100),
            duration_s: None,
            timeout_s: 30.0,
            warmup: 0,
        }
    }

    fn close(actual: Option<f64>, expected: f64) -> bool {
        // The histogram keeps 3 significant digits: within 0.1 %.
        actual.is_some_and(|a| (a - expected).abs() <= expected * 0.001)
    }

    #[test]
    fn percentiles_and_rates_on_known_inputs() {
        let mut stats = Stats::new().expect("stats");
        // 1 ms, 2 ms, ..., 100 ms, with 4 documents each.
        for ms in 1..=100u64 {
            stats.record_ok(Duration::from_millis(ms), 4);
        }
        stats.record_error("429");
        stats.record_error("429");
        stats.record_error("transport");
        let report = stats.report(Duration::from_secs(4), settings());
        assert_eq!(report.requests, 103);
        assert_eq!(report.ok, 100);
        assert_eq!(report.errors.get("429"), Some(&2));
        assert_eq!(report.errors.get("transport"), Some(&1));
        assert!((report.requests_per_s - 25.0).abs() < 1e-9);
        assert!((report.pairs_per_s - 100.0).abs() < 1e-9);
        let l = &report.latency_ms;
        assert!(close(l.p50, 50.0), "p50 {:?}", l.p50);
        assert!(close(l.p95, 95.0), "p95 {:?}", l.p95);
        assert!(close(l.p99, 99.0), "p99 {:?}", l.p99);
        assert!(close(l.max, 100.0), "max {:?}", l.max);
        assert!(close(l.mean, 50.5), "mean {:?}", l.mean);
    }

    #[test]
    fn merging_workers_equals_recording_in_one() {
        let mut a = Stats::new().expect("stats");
        let mut b = Stats::new().expect("stats");
        for ms in 1..=50u64 {
            a.record_ok(Duration::from_millis(ms), 2);
        }
        for ms in 51..=100u64 {
            b.record_ok(Duration::from_millis(ms), 2);
        }
        b.record_error("503");
        a.merge(&b).expect("merge");
        let report = a.report(Duration::from_millis(500), settings());
        assert_eq!((report.requests, report.ok, a.pairs), (101, 100, 200));
        assert_eq!(a.error_count(), 1);
        assert!((report.requests_per_s - 200.0).abs() < 1e-9);
        assert!(close(report.latency_ms.p50, 50.0));
        assert!(close(report.latency_ms.max, 100.0));
    }

    #[test]
    fn no_successes_gives_null_latency_and_zero_rates() {
        let mut stats = Stats::new().expect("stats");
        stats.record_error("transport");
        let report = stats.report(Duration::ZERO, settings());
        assert_eq!(report.requests_per_s, 0.0);
        assert!(report.latency_ms.p50.is_none() && report.latency_ms.max.is_none());
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json().expect("json")).expect("parse");
        assert_eq!(json["errors"]["transport"], 1);
        assert!(json["latency_ms"]["p99"].is_null());
        for key in [
            "requests",
            "ok",
            "errors",
            "elapsed_s",
            "requests_per_s",
            "pairs_per_s",
            "latency_ms",
            "settings",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(report.to_table().contains("transport: 1"));
    }
}
