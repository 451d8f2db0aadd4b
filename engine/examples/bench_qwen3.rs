//! Times a Qwen3 reranker on one request (1 query × N documents) through the engine's public
//! API — tokenization and scoring — per precision, with the shared prefix's keys and values
//! reused and without (every pair run whole), and prints one JSON line per mode: pairs/s of the
//! fastest request (and of the median one), with every request's seconds.
//!
//! Each timed request uses a query of its own (the workload's query with the iteration number
//! appended), so the prefix cache never serves a request from an earlier one: the figures are
//! those of a request's first pass.
//!
//! ```text
//! python3 scripts/make_bench_checkpoint_qwen3.py --family qwen3 --out /tmp/bench-qwen3
//! cargo run --release -p rerank-engine --example bench_qwen3 -- /tmp/bench-qwen3 \
//!     [--rounds 3] [--seconds 0] [--modes none,bf16,int8] [--kernels onednn|candle] \
//!     [--max-batch-tokens 8192]
//! ```
//! The workload is `<model dir>/workload.json` (`{"query": str, "documents": [str, ...]}`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use rerank_engine::{
    EncodedPair, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker, TokenIds,
    TruncationOptions,
};

struct Args {
    model: PathBuf,
    seconds: f64,
    modes: Vec<Precision>,
    kernels: Kernels,
    max_batch_tokens: usize,
    /// Timed requests of each kind at least.
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        model: PathBuf::new(),
        seconds: 0.0,
        modes: vec![Precision::F32, Precision::Bf16, Precision::Int8],
        kernels: Kernels::OneDnn,
        max_batch_tokens: 8192,
        rounds: 3,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => parsed.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--seconds" => {
                parsed.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--max-batch-tokens" => {
                parsed.max_batch_tokens = value()?
                    .parse()
                    .map_err(|e| format!("--max-batch-tokens: {e}"))?
            }
            "--kernels" => {
                parsed.kernels = match value()?.as_str() {
                    "onednn" => Kernels::OneDnn,
                    "candle" => Kernels::Candle,
                    other => return Err(format!("--kernels {other}: onednn or candle")),
                }
            }
            "--modes" => {
                parsed.modes = value()?
                    .split(',')
                    .map(|m| match m {
                        "none" | "f32" => Ok(Precision::F32),
                        "bf16" => Ok(Precision::Bf16),
                        "f16" => Ok(Precision::F16),
                        "int8" => Ok(Precision::Int8),
                        other => Err(format!("--modes: unknown mode {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ if parsed.model.as_os_str().is_empty() => parsed.model = PathBuf::from(arg),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if parsed.model.as_os_str().is_empty() {
        return Err("usage: bench_qwen3 MODEL_DIR [--seconds S] [--modes none,bf16,int8] [--kernels onednn|candle]".into());
    }
    Ok(parsed)
}

/// The same input with nothing shared.
fn whole(pair: &EncodedPair) -> EncodedPair {
    match pair {
        EncodedPair::Decoder { shared, own } => EncodedPair::Decoder {
            shared: Arc::new(TokenIds {
                ids: Vec::new(),
                type_ids: Vec::new(),
            }),
            own: TokenIds {
                ids: shared.ids.iter().chain(&own.ids).copied().collect(),
                type_ids: Vec::new(),
            },
        },
        other => other.clone(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let workload: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(args.model.join("workload.json"))?)?;
    let query = workload["query"]
        .as_str()
        .ok_or("workload: no query")?
        .to_string();
    let documents: Vec<String> = workload["documents"]
        .as_array()
        .ok_or("workload: no documents")?
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    let docs: Vec<&str> = documents.iter().map(String::as_str).collect();
    let files = ModelFiles::from_dir(&args.model, "bench")?;
    let opts = TruncationOptions::default();
    for &precision in &args.modes {
        let started = Instant::now();
        let backend = Reranker::load(
            &files,
            &LoadOptions {
                kernels: args.kernels,
                ..LoadOptions::new(Device::Cpu, args.max_batch_tokens, precision)
            },
        )?;
        let load_s = started.elapsed().as_secs_f64();
        // The warm-up request uses the workload's query as it is (its scores can be held against
        // PyTorch's), the timed ones a query of their own each. Requests with and without reuse
        // alternate, so that a busy machine slows both alike; the fastest request of each kind is
        // the least disturbed measurement.
        let mut iteration = 0usize;
        let mut run = |reuse: bool| -> Result<(Vec<f32>, usize, f64), Box<dyn std::error::Error>> {
            let q = if iteration == 0 {
                query.clone()
            } else {
                format!("{query} {iteration}")
            };
            iteration += 1;
            let start = Instant::now();
            let prepared = backend.prepare_query(&q, None, &opts)?;
            let mut pairs = docs
                .iter()
                .map(|d| backend.encode_document(&prepared, d, &opts))
                .collect::<Result<Vec<_>, _>>()?;
            if !reuse {
                pairs = pairs.iter().map(whole).collect();
            }
            let tokens = pairs.iter().map(EncodedPair::token_count).sum();
            let scores = backend.score(&pairs)?;
            Ok((scores, tokens, start.elapsed().as_secs_f64()))
        };
        let (first, tokens, warm_s) = run(true)?;
        let mut times = [Vec::new(), Vec::new()];
        let start = Instant::now();
        while times[1].len() < args.rounds.max(1) || start.elapsed().as_secs_f64() < args.seconds {
            for (i, reuse) in [true, false].into_iter().enumerate() {
                times[i].push(run(reuse)?.2);
            }
        }
        for (i, reuse) in [true, false].into_iter().enumerate() {
            let t = &mut times[i];
            t.sort_by(f64::total_cmp);
            let (best, median) = (t[0], t[t.len() / 2]);
            let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
            println!(
                "{}",
                serde_json::json!({
                    "precision": precision.name(),
                    "kernels": backend.info().kernels,
                    "prefix_reuse": reuse,
                    "pairs": docs.len(),
                    "tokens": tokens,
                    "pairs_per_s": round3(docs.len() as f64 / best),
                    "pairs_per_s_median": round3(docs.len() as f64 / median),
                    "requests": t.len(),
                    "request_s": t.iter().map(|&v| round3(v)).collect::<Vec<_>>(),
                    "warm_up_s": round3(warm_s),
                    "load_s": round3(load_s),
                    "first_scores": first.iter().take(4).collect::<Vec<_>>(),
                })
            );
        }
    }
    Ok(())
}
