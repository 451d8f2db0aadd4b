//! Throughput of the engine on any checkpoint directory and workload, per precision mode: the
//! Rust side of `scripts/bench_family.sh`, which runs `scripts/bench_torch.py` on the same
//! checkpoint and workload in the same run (e.g. a random DeBERTa-v3-base from
//! `scripts/make_bench_checkpoint.py`).
//!
//! ```text
//! cargo run --release -p rerank-engine --example bench_checkpoint -- \
//!     --model DIR --workload W.json [--seconds 10] [--modes none,bf16,int8] \
//!     [--kernels onednn|candle] [--max-batch-tokens 16384]
//! ```
//!
//! The workload is `{"query": str, "documents": [str, ...]}`; every iteration tokenizes and
//! scores all documents against the query (as `bench_torch.py` times `CrossEncoder.predict`),
//! after one warm-up iteration, for at least `--seconds` and 2 iterations. Prints one JSON line
//! per mode.

use std::time::Instant;

use candle_core::Device;
use rerank_engine::{
    Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker, TruncationOptions,
};

struct Args {
    model: String,
    workload: String,
    seconds: f64,
    modes: Vec<Precision>,
    kernels: Kernels,
    max_batch_tokens: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        model: String::new(),
        workload: String::new(),
        seconds: 10.0,
        modes: vec![Precision::F32, Precision::Bf16, Precision::Int8],
        kernels: Kernels::OneDnn,
        max_batch_tokens: 16384,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => args.model = value,
            "--workload" => args.workload = value,
            "--seconds" => args.seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--max-batch-tokens" => {
                args.max_batch_tokens = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--kernels" => {
                args.kernels = match value.as_str() {
                    "onednn" => Kernels::OneDnn,
                    "candle" => Kernels::Candle,
                    other => return Err(format!("--kernels onednn|candle, not {other}")),
                }
            }
            "--modes" => {
                args.modes = value
                    .split(',')
                    .map(|m| match m.trim() {
                        "none" | "f32" => Ok(Precision::F32),
                        "bf16" => Ok(Precision::Bf16),
                        "f16" => Ok(Precision::F16),
                        "int8" => Ok(Precision::Int8),
                        other => Err(format!("unknown mode {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.model.is_empty() || args.workload.is_empty() {
        return Err("--model and --workload are required".into());
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let workload: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args.workload)?)?;
    let query = workload["query"].as_str().ok_or("workload: no query")?;
    let documents: Vec<&str> = workload["documents"]
        .as_array()
        .ok_or("workload: no documents")?
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    let files = ModelFiles::from_dir(std::path::Path::new(&args.model), "bench")?;
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
        let opts = TruncationOptions::default();
        let run = || -> Result<usize, Box<dyn std::error::Error>> {
            let pairs = backend.encode(query, &documents, &opts)?;
            let tokens = pairs.iter().map(|p| p.token_count()).sum();
            backend.score(&pairs)?;
            Ok(tokens)
        };
        let tokens = run()?;
        let started = Instant::now();
        let mut iterations = 0usize;
        while iterations < 2 || started.elapsed().as_secs_f64() < args.seconds {
            run()?;
            iterations += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        let info = backend.info();
        println!(
            "{}",
            serde_json::json!({
                "mode": precision.name(),
                "kernels": info.kernels,
                "pairs_per_s": (iterations * documents.len()) as f64 / seconds,
                "iterations": iterations,
                "seconds": seconds,
                "pairs": documents.len(),
                "mean_pair_tokens": tokens as f64 / documents.len().max(1) as f64,
                "load_s": load_s,
            })
        );
    }
    Ok(())
}
