//! `rerank-bench`: the command line. It parses and checks the options, builds the workload and
//! the HTTP client, runs an optional warm-up and then the measured run, and prints the report.
//!
//! A run is always bounded: by `--requests` (at most 1,000,000) or `--duration` (at most 600 s),
//! with every request limited by `--timeout`.

mod report;
mod runner;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use report::Settings;
use runner::{Api, RunPlan, Stop};
use workload::{Generator, GeneratorParams, Workload};

/// Most requests one run may send (`--requests`, and separately `--warmup`).
const MAX_REQUESTS: u64 = 1_000_000;
/// Longest a `--duration` run may last, and the longest `--timeout`, in seconds.
const MAX_SECONDS: f64 = 600.0;
/// Requests sent when neither `--requests` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 200;
/// Upper bounds on sizes, so a typo can't make the tool allocate gigabytes.
const MAX_CONCURRENCY: usize = 4096;
const MAX_DOCS: usize = 100_000;
const MAX_DOC_WORDS: usize = 100_000;
const MAX_POOL: usize = 100_000;

/// Load generator for rerank-cluster nodes and coordinators.
///
/// Sends rerank requests with a fixed number in flight, stops by itself after `--requests` or
/// `--duration`, and reports throughput and latency percentiles of the measured requests. Exits
/// with status 1 when none of them succeeded, 2 on bad options.
#[derive(Debug, Parser)]
#[command(name = "rerank-bench", version)]
struct Cli {
    /// Base URL of the server (a node or the coordinator); the API's path is appended.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,

    /// API to call: `tei` (POST /rerank, "texts") or `cohere` (POST /v1/rerank, "documents").
    #[arg(long, value_enum, default_value_t = Api::Tei)]
    api: Api,

    /// Requests in flight at once (worker tasks; also the connection pool size).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,

    /// Stop after this many measured requests (default 200 when --duration is not given;
    /// at most 1,000,000).
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,

    /// Stop starting requests after this many seconds (at most 600); requests in flight then
    /// finish and are counted.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,

    /// Per-request timeout in seconds; a request that exceeds it counts as a transport error.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,

    /// JSON file of requests to cycle through in order:
    /// {"requests": [{"query": "...", "documents": ["...", ...]}, ...]}.
    /// Without it, requests are generated.
    #[arg(long, value_name = "FILE")]
    workload: Option<PathBuf>,

    /// Documents per generated request.
    #[arg(long, default_value_t = 4, conflicts_with = "workload")]
    docs_per_request: usize,

    /// Probability (0.0-1.0) that a generated request is an exact copy of one from a small pool
    /// of popular requests; the others are unique, so no cache can answer them.
    #[arg(long, default_value_t = 0.0, conflicts_with = "workload")]
    duplicate_ratio: f64,

    /// Number of distinct popular requests that duplicates are copied from.
    #[arg(long, default_value_t = 8, conflicts_with = "workload")]
    duplicate_pool: usize,

    /// Words per generated document, drawn from a fixed English word list.
    #[arg(long, default_value_t = 40, conflicts_with = "workload")]
    doc_words: usize,

    /// Seed of the generator: the same seed gives the same requests. Fresh requests of two runs
    /// with the same seed are identical, so change it to keep a server's cache cold across runs.
    #[arg(long, default_value_t = 42, conflicts_with = "workload")]
    seed: u64,

    /// Seed of the pool of popular requests (default: `--seed`). Several load generators with
    /// different `--seed`s and one `--pool-seed` send different fresh requests but the same
    /// popular ones, as clients of one cluster do.
    #[arg(long, conflicts_with = "workload")]
    pool_seed: Option<u64>,

    /// Requests sent before measuring; they are not counted in the report.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: u64,

    /// Print one JSON object instead of the table (and no progress bar).
    #[arg(long)]
    json: bool,

    /// No progress bar or warm-up line on stderr.
    #[arg(long)]
    quiet: bool,
}

/// The checked form of the options that bound the run.
struct Checked {
    stop: Stop,
    timeout: Duration,
}

impl Cli {
    /// Refuses options that would make the run unbounded, meaningless or huge.
    fn check(&self) -> Result<Checked> {
        let stop = match (self.requests, self.duration) {
            (Some(n), _) => {
                if n == 0 || n > MAX_REQUESTS {
                    bail!("--requests must be between 1 and {MAX_REQUESTS}, got {n}");
                }
                Stop::Requests(n)
            }
            (None, Some(secs)) => Stop::Duration(seconds("--duration", secs)?),
            (None, None) => Stop::Requests(DEFAULT_REQUESTS),
        };
        if self.warmup > MAX_REQUESTS {
            bail!(
                "--warmup must be at most {MAX_REQUESTS}, got {}",
                self.warmup
            );
        }
        let timeout = seconds("--timeout", self.timeout)?;
        in_range("--concurrency", self.concurrency, MAX_CONCURRENCY)?;
        in_range("--docs-per-request", self.docs_per_request, MAX_DOCS)?;
        in_range("--doc-words", self.doc_words, MAX_DOC_WORDS)?;
        in_range("--duplicate-pool", self.duplicate_pool, MAX_POOL)?;
        if !(0.0..=1.0).contains(&self.duplicate_ratio) {
            bail!(
                "--duplicate-ratio must be between 0.0 and 1.0, got {}",
                self.duplicate_ratio
            );
        }
        let url = reqwest::Url::parse(&self.url)
            .with_context(|| format!("--url {:?} is not a URL", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--url must be http:// or https://, got {:?}", self.url);
        }
        Ok(Checked { stop, timeout })
    }

    /// The full endpoint: the base URL without a trailing slash, plus the API's path.
    fn endpoint(&self) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), self.api.path())
    }

    fn workload(&self) -> Result<Workload> {
        match &self.workload {
            Some(path) => Workload::load(path),
            None => Ok(Workload::Generated(Generator::new(GeneratorParams {
                docs_per_request: self.docs_per_request,
                doc_words: self.doc_words,
                duplicate_ratio: self.duplicate_ratio,
                duplicate_pool: self.duplicate_pool,
                seed: self.seed,
                pool_seed: self.pool_seed.unwrap_or(self.seed),
            }))),
        }
    }

    fn settings(&self, checked: &Checked, workload: &Workload) -> Settings {
        let generated = self.workload.is_none();
        Settings {
            url: self.url.clone(),
            api: self.api.name().to_string(),
            concurrency: self.concurrency,
            docs_per_request: workload.docs_per_request(),
            duplicate_ratio: generated.then_some(self.duplicate_ratio),
            workload: self
                .workload
                .as_ref()
                .map_or_else(|| "generated".to_string(), |p| p.display().to_string()),
            seed: generated.then_some(self.seed),
            requests_limit: match checked.stop {
                Stop::Requests(n) => Some(n),
                Stop::Duration(_) => None,
            },
            duration_s: match checked.stop {
                Stop::Duration(d) => Some(d.as_secs_f64()),
                Stop::Requests(_) => None,
            },
            timeout_s: checked.timeout.as_secs_f64(),
            warmup: self.warmup,
        }
    }

    fn show_progress(&self) -> bool {
        !self.json && !self.quiet
    }
}

/// `value` seconds as a duration, refused unless it is in (0, 600].
fn seconds(flag: &str, value: f64) -> Result<Duration> {
    if !(value > 0.0 && value <= MAX_SECONDS) {
        bail!("{flag} must be more than 0 and at most {MAX_SECONDS} seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn in_range(flag: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        bail!("{flag} must be between 1 and {max}, got {value}");
    }
    Ok(())
}

/// A progress bar on stderr for the measured run, or a hidden one.
fn progress_bar(visible: bool, stop: Stop) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let (len, template) = match stop {
        Stop::Requests(n) => (n, "{elapsed_precise} [{bar:40}] {pos}/{len} requests"),
        Stop::Duration(d) => (
            d.as_secs(),
            "{elapsed_precise} [{bar:40}] {pos}/{len} s {msg}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style)
}

/// Exit status 0: some measured request succeeded; 1: none did; 2: bad options or setup.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The whole run; errors are reported by `main` on one line, without a backtrace.
async fn run(cli: Cli) -> Result<ExitCode> {
    let checked = cli.check()?;
    let workload = Arc::new(cli.workload()?);
    let client = runner::client(cli.concurrency, checked.timeout)?;
    let settings = cli.settings(&checked, &workload);
    let endpoint = cli.endpoint();

    if cli.warmup > 0 {
        let plan = RunPlan {
            endpoint: endpoint.clone(),
            api: cli.api,
            concurrency: cli.concurrency,
            stop: Stop::Requests(cli.warmup),
            first_index: 0,
        };
        let warm = runner::run(
            &client,
            Arc::clone(&workload),
            &plan,
            &ProgressBar::hidden(),
        )
        .await?;
        if cli.show_progress() {
            eprintln!(
                "warm-up: {} requests, {} ok, {} errors in {:.2} s",
                warm.stats.requests,
                warm.stats.ok,
                warm.stats.error_count(),
                warm.elapsed.as_secs_f64()
            );
        }
    }

    let plan = RunPlan {
        endpoint,
        api: cli.api,
        concurrency: cli.concurrency,
        stop: checked.stop,
        first_index: cli.warmup,
    };
    let progress = progress_bar(cli.show_progress(), checked.stop);
    let outcome = runner::run(&client, workload, &plan, &progress).await?;
    progress.finish_and_clear();

    let report = outcome.stats.report(outcome.elapsed, settings);
    if cli.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rerank-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_bounded() {
        let cli = parse(&[]).expect("parse");
        let checked = cli.check().expect("check");
        assert_eq!(checked.stop, Stop::Requests(200));
        assert_eq!(checked.timeout, Duration::from_secs(30));
        assert_eq!(cli.endpoint(), "http://127.0.0.1:8000/rerank");
    }

    #[test]
    fn limits_are_enforced() {
        for args in [
            &["--duration", "601"][..],
            &["--duration", "0"],
            &["--duration", "NaN"],
            &["--requests", "1000001"],
            &["--requests", "0"],
            &["--duplicate-ratio", "1.5"],
            &["--duplicate-ratio=-0.1"],
            &["--concurrency", "0"],
            &["--timeout", "0"],
            &["--url", "ftp://127.0.0.1"],
        ] {
            let cli = parse(args).expect("parse");
            assert!(cli.check().is_err(), "accepted {args:?}");
        }
        assert!(parse(&["--requests", "5", "--duration", "5"]).is_err());
        assert!(parse(&["--workload", "w.json", "--duplicate-ratio", "0.5"]).is_err());
        let cli = parse(&[
            "--duration",
            "600",
            "--api",
            "cohere",
            "--url",
            "http://h:1/",
        ])
        .expect("parse");
        assert_eq!(
            cli.check().expect("check").stop,
            Stop::Duration(Duration::from_secs(600))
        );
        assert_eq!(cli.endpoint(), "http://h:1/v1/rerank");
    }
}
