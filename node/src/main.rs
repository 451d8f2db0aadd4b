//! `rerank-node`: serve (default), benchmark the engine, report the precision modes' accuracy,
//! or print the effective settings.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rerank_engine::{Kernels, Precision};
use rerank_node::bench::{self, BenchSettings};
use rerank_node::eval::{self, EvalModel, EvalSet, EvalSettings};
use rerank_shared::config::{CpuKernels, NodeConfig, Quantization, DEFAULT_MODEL_PATH};
use rerank_shared::telemetry;

// Encoder forward passes allocate large, short-lived tensors; mimalloc keeps them from
// churning page faults the way glibc malloc's mmap threshold does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rerank-node",
    version,
    about = "A cross-encoder reranking server"
)]
struct Cli {
    /// Print the effective settings (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Benchmark the engine beside PyTorch on a MiniLM-L6 cross-encoder (or `--checkpoint`).
    Bench {
        /// all-MiniLM-L6-v2 directory the benchmark checkpoint is built from.
        #[arg(long, default_value = DEFAULT_MODEL_PATH)]
        encoder_dir: PathBuf,
        /// Measure this checkpoint directory instead (any supported family; see
        /// scripts/make_bench_checkpoint.py for base-sized random ones).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Where the checkpoint and workload are written.
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        #[arg(long, default_value_t = 64)]
        documents: usize,
        /// Word pieces per document.
        #[arg(long, default_value_t = 110)]
        document_tokens: usize,
        /// Minimum seconds each engine is timed.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 16384)]
        max_batch_tokens: usize,
        /// Python interpreter for the PyTorch side and the peers.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Skip the PyTorch side.
        #[arg(long)]
        no_torch: bool,
        /// Also measure the other CPU runtimes (ONNX Runtime, OpenVINO) with
        /// scripts/bench_peers.py; each of our rows gets its ratio to the best of them.
        #[arg(long)]
        peers: bool,
        /// The peers' modes, comma-separated: ort-fp32, ort-int8, ov-fp32, ov-bf16, ov-int8.
        #[arg(long, default_value = bench::peers::DEFAULT_MODES)]
        peer_modes: String,
        /// Threads PyTorch and the peers may use (match the cores our engine uses).
        #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
        torch_threads: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Precisions of our engine, comma-separated: none, bf16, f16, int8.
        #[arg(long, default_value = "none,bf16,int8", value_delimiter = ',')]
        quantization: Vec<String>,
        /// Documents of random length between these word-piece counts (e.g. 8..384) instead
        /// of --document-tokens each; adds rows for the same pairs padded to the longest.
        #[arg(long, value_parser = parse_range)]
        mixed_lengths: Option<(usize, usize)>,
        /// Kernels of our engine: onednn (falls back to candle where not built) or candle.
        #[arg(long, default_value = "onednn")]
        kernels: String,
    },
    /// Compare each precision mode's scores and rankings with f32's on a query/document set,
    /// with weight memory, peak RSS and pairs/s (every mode in a process of its own).
    Eval {
        /// Model directory or hub id [default: the MiniLM-L6 cross-encoder built from
        /// --encoder-dir, as `bench` does].
        #[arg(long)]
        model: Option<String>,
        /// Evaluate the --encoder-dir bi-encoder itself (all-MiniLM-L6-v2, cosine scores).
        #[arg(long, conflicts_with = "model")]
        bi_encoder: bool,
        /// all-MiniLM-L6-v2 directory the default cross-encoder is built from.
        #[arg(long, default_value = DEFAULT_MODEL_PATH)]
        encoder_dir: PathBuf,
        /// Where the default cross-encoder checkpoint is written (shared with `bench`).
        #[arg(long, default_value = "target/bench")]
        work_dir: PathBuf,
        /// JSON lines of {"query": "...", "documents": ["...", ...]} [default: the built-in
        /// node/eval/default.jsonl].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Modes to compare; none (f32, the reference) is always run.
        #[arg(long, value_delimiter = ',', default_value = "none,bf16,f16,int8")]
        modes: Vec<String>,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 16384)]
        max_batch_tokens: usize,
        /// Internal: score one mode in this process and print its run as JSON (the parent
        /// starts one such child per mode).
        #[arg(long, hide = true)]
        single_mode: Option<String>,
    },
}

/// The executable `eval` re-runs once per mode. Parent and children must be the same build
/// (the run they exchange is private JSON), and on Linux `/proc/self/exe` stays this process's
/// image even when a rebuild replaces the file on disk during the run.
fn this_executable() -> anyhow::Result<PathBuf> {
    let own_image = PathBuf::from("/proc/self/exe");
    if own_image.exists() {
        return Ok(own_image);
    }
    std::env::current_exe().context("cannot find this executable")
}

fn parse_precision(name: String) -> anyhow::Result<Precision> {
    let quantization = Quantization::try_from(name).map_err(anyhow::Error::msg)?;
    Ok(rerank_node::server::precision_of(quantization))
}

fn parse_kernels(name: String) -> anyhow::Result<Kernels> {
    let kernels = CpuKernels::try_from(name).map_err(anyhow::Error::msg)?;
    Ok(rerank_node::server::kernels_of(kernels))
}

/// `LOW..HIGH` word pieces.
fn parse_range(text: &str) -> Result<(usize, usize), String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("expected LOW..HIGH, got {text:?}"))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    let (low, high) = (parse(low)?, parse(high)?);
    if low > high {
        return Err(format!("{low} > {high}"));
    }
    Ok((low, high))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = NodeConfig::from_env()?;
            if cli.print_config {
                println!("{}", serde_json::to_string_pretty(&config.masked())?);
                return Ok(());
            }
            let telemetry =
                telemetry::init("rerank-node", config.otel_exporter_otlp_endpoint.as_deref());
            let served = actix_web::rt::System::new().block_on(rerank_node::server::serve(config));
            telemetry.shutdown();
            served.context("node stopped")
        }
        Command::Bench {
            encoder_dir,
            checkpoint,
            work_dir,
            documents,
            document_tokens,
            seconds,
            max_batch_tokens,
            python,
            no_torch,
            peers,
            peer_modes,
            torch_threads,
            json,
            quantization,
            mixed_lengths,
            kernels,
        } => {
            let _telemetry = telemetry::init("rerank-node", None);
            let settings = BenchSettings {
                encoder_dir,
                checkpoint,
                work_dir,
                documents,
                document_tokens,
                seconds,
                max_batch_tokens,
                python,
                torch: !no_torch,
                peers: peers.then_some(peer_modes),
                torch_threads,
                precisions: quantization
                    .into_iter()
                    .map(parse_precision)
                    .collect::<anyhow::Result<_>>()?,
                mixed_lengths,
                kernels: parse_kernels(kernels)?,
            };
            let report = bench::run(&settings).context("benchmark failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Eval {
            model,
            bi_encoder,
            encoder_dir,
            work_dir,
            data,
            modes,
            json,
            max_batch_tokens,
            single_mode,
        } => {
            let _telemetry = telemetry::init("rerank-node", None);
            if let Some(mode) = single_mode {
                let model_dir = model.context("--single-mode needs --model DIR")?;
                let set = EvalSet::load(data.as_deref())?;
                // The parent's environment carries CPU_KERNELS to every mode alike.
                let kernels = match std::env::var("CPU_KERNELS") {
                    Ok(name) => parse_kernels(name)?,
                    Err(_) => rerank_node::server::kernels_of(CpuKernels::default()),
                };
                let run = eval::score_in_mode(
                    model_dir.as_ref(),
                    &set,
                    parse_precision(mode)?,
                    max_batch_tokens,
                    kernels,
                )?;
                println!("{}", serde_json::to_string(&run)?);
                return Ok(());
            }
            let model = match (model, bi_encoder) {
                (Some(model), _) => EvalModel::Given(model),
                (None, true) => EvalModel::Given(encoder_dir.display().to_string()),
                (None, false) => EvalModel::MiniLmCrossEncoder {
                    encoder_dir,
                    work_dir,
                },
            };
            let settings = EvalSettings {
                program: this_executable()?,
                model,
                data,
                modes: modes
                    .into_iter()
                    .map(parse_precision)
                    .collect::<anyhow::Result<_>>()?,
                max_batch_tokens,
            };
            let report = eval::run(&settings).context("accuracy report failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
    }
}
