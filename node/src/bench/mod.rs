//! The engine benchmark: 1 query × N documents of ~110 tokens on a MiniLM-L6 cross-encoder (or
//! any checkpoint, `--checkpoint`), our engine and PyTorch (`sentence_transformers.CrossEncoder`,
//! or the Qwen3-Reranker card's computation for decoder rerankers; fp32, bf16 autocast, dynamic
//! int8) measured in the same run on the same checkpoint and workload, and with `--peers` the
//! other CPU runtimes (ONNX Runtime, OpenVINO; [`peers`]).
//!
//! Every side times the whole scoring call, tokenization included, for at least `seconds`.
//!
//! # Layout
//!
//! - this file: the workload, our engine's measurements, the report and its table.
//! - [`checkpoint`]: the MiniLM-L6 cross-encoder the default run measures.
//! - [`python`]: one runner for every Python side's script (arguments in, one JSON line out).
//! - [`torch`]: PyTorch's rows; [`peers`]: ONNX Runtime's and OpenVINO's, and the best peer
//!   each of our rows is held against.
//!
//! A decoder reranker (Qwen3) gets a second row per precision: the same pairs run whole, without
//! the shared prompt prefix's keys and values reused. Requests with and without reuse alternate
//! and each uses a query of its own, so that neither a busy machine nor the prefix cache favours
//! one side.

pub mod checkpoint;
pub mod machine_limit;
pub mod peers;
pub mod python;
pub mod torch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use std::sync::Arc;

use rerank_engine::{
    EncodedPair, EngineError, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker,
    TokenIds, TruncationOptions,
};

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// The all-MiniLM-L6-v2 directory the cross-encoder is built from.
    pub encoder_dir: PathBuf,
    /// A checkpoint directory to measure instead of the MiniLM-L6 cross-encoder (any family;
    /// `scripts/make_bench_checkpoint.py` writes base-sized random ones).
    pub checkpoint: Option<PathBuf>,
    /// Where the checkpoint and workload are written.
    pub work_dir: PathBuf,
    pub documents: usize,
    pub document_tokens: usize,
    pub seconds: f64,
    pub max_batch_tokens: usize,
    /// The interpreter of the Python sides (PyTorch, peers).
    pub python: String,
    /// Run PyTorch (`scripts/bench_torch.py`) beside our engine.
    pub torch: bool,
    /// Run the peers (`scripts/bench_peers.py`) in these modes (comma-separated; none when
    /// `None`).
    pub peers: Option<String>,
    /// Threads PyTorch and the peers may use.
    pub torch_threads: usize,
    /// Our engine runs once per precision, in this order.
    pub precisions: Vec<Precision>,
    pub kernels: Kernels,
    /// Document lengths drawn uniformly from this range of word pieces instead of
    /// `document_tokens` each; our engine is then also timed on the same pairs padded to the
    /// longest, to show what packing saves.
    pub mixed_lengths: Option<(usize, usize)>,
}

/// The query/documents file both engines read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub query: String,
    pub documents: Vec<String>,
}

/// Whose row it is: ours are held against the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Ours,
    PyTorch,
    Peer,
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub engine: String,
    pub side: Side,
    /// `none`/`bf16`/`int8` for our rows, `fp32`/`bf16`/`int8` for PyTorch's and the peers'.
    pub precision: String,
    pub pairs_per_s: Option<f64>,
    pub note: String,
    /// The peer's mode (`ort-int8`), the name our rows' ratios give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_mode: Option<String>,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub documents: usize,
    pub mean_pair_tokens: f64,
    pub shortest_pair_tokens: usize,
    pub longest_pair_tokens: usize,
    /// The machine's large-GEMM rates, probed before the engines run (packed kernels only).
    pub machine: Option<machine_limit::MachineLimit>,
    /// The model's FLOPs per pair on this workload, where the bench can count them.
    pub flops_per_pair: Option<f64>,
    pub rows: Vec<BenchRow>,
}

const WORDS: &[&str] = &[
    "the",
    "city",
    "river",
    "history",
    "population",
    "capital",
    "government",
    "economy",
    "century",
    "culture",
    "museum",
    "language",
    "people",
    "region",
    "north",
    "south",
    "trade",
    "industry",
    "university",
    "railway",
    "bridge",
    "market",
    "festival",
    "mountain",
    "coast",
    "empire",
    "revolution",
    "architecture",
    "cathedral",
    "science",
    "music",
    "literature",
    "was",
    "is",
    "has",
    "became",
    "remained",
    "grew",
    "during",
    "after",
    "before",
    "with",
    "largest",
    "oldest",
    "important",
    "famous",
    "modern",
    "ancient",
    "national",
    "european",
    "of",
    "and",
    "in",
    "to",
    "a",
    "for",
    "as",
    "by",
    "its",
    "on",
    "from",
    "many",
    "several",
    "tourism",
    "finance",
    "fashion",
    "art",
    "painting",
    "war",
    "peace",
    "treaty",
    "king",
    "queen",
    "parliament",
    "election",
    "district",
    "suburb",
    "harbour",
    "airport",
    "station",
];

/// Generates a deterministic workload: documents of ~`tokens` word pieces each, or of a length
/// drawn uniformly from `mixed` (min, max).
pub fn generate_workload(
    tokenizer: &Tokenizer,
    documents: usize,
    tokens: usize,
    mixed: Option<(usize, usize)>,
) -> Result<Workload, EngineError> {
    let mut rng = StdRng::seed_from_u64(7);
    let count = |text: &str| {
        tokenizer
            .encode(text, false)
            .map(|e| e.len())
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    };
    let mut docs = Vec::with_capacity(documents);
    for _ in 0..documents {
        let target = match mixed {
            Some((low, high)) => rng.random_range(low..=high.max(low)),
            None => tokens,
        };
        let mut doc = String::new();
        while count(&doc)? < target {
            if !doc.is_empty() {
                doc.push(' ');
            }
            doc.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
        docs.push(doc);
    }
    Ok(Workload {
        query: "what is the capital of france and how did its history shape the city".into(),
        documents: docs,
    })
}

/// Pairs per second of `run` (which scores `pairs` pairs) over at least `seconds`.
fn time_pairs(
    pairs: usize,
    seconds: f64,
    run: impl Fn() -> Result<(), EngineError>,
) -> Result<f64, EngineError> {
    run()?; // warm-up
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut iterations = 0usize;
    while iterations < 2 || started.elapsed() < budget {
        run()?;
        iterations += 1;
    }
    Ok((iterations * pairs) as f64 / started.elapsed().as_secs_f64())
}

/// Tokenization plus scoring of the whole workload.
fn measure(backend: &Reranker, workload: &Workload, seconds: f64) -> Result<f64, EngineError> {
    let docs: Vec<&str> = workload.documents.iter().map(String::as_str).collect();
    let opts = TruncationOptions::default();
    time_pairs(docs.len(), seconds, || {
        let pairs = backend.encode(&workload.query, &docs, &opts)?;
        backend.score(&pairs)?;
        Ok(())
    })
}

/// Scoring of the workload's pairs right-padded with `pad_id` to the longest: what one padded
/// batch costs on the same kernels (the scores are not meaningful, the time is).
fn measure_padded(
    backend: &Reranker,
    workload: &Workload,
    pad_id: u32,
    seconds: f64,
) -> Result<f64, EngineError> {
    let docs: Vec<&str> = workload.documents.iter().map(String::as_str).collect();
    let mut pairs = backend.encode(&workload.query, &docs, &TruncationOptions::default())?;
    let longest = pairs.iter().map(|p| p.token_count()).max().unwrap_or(0);
    for pair in &mut pairs {
        if let EncodedPair::Cross(ids) = pair {
            ids.ids.resize(longest, pad_id);
            ids.type_ids.resize(longest, 0);
        }
    }
    time_pairs(pairs.len(), seconds, || backend.score(&pairs).map(|_| ()))
}

/// The same decoder input with nothing shared: the prompt prefix is part of the pair's own rows.
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

/// Pairs per second of a decoder reranker with the prefix reused and without, requests of the
/// two kinds alternating for at least `seconds` (and 3 of each), each with a query of its own.
fn measure_prefix_reuse(
    backend: &Reranker,
    workload: &Workload,
    seconds: f64,
) -> Result<(f64, f64), EngineError> {
    let docs: Vec<&str> = workload.documents.iter().map(String::as_str).collect();
    let opts = TruncationOptions::default();
    let mut iteration = 0usize;
    let mut run = |reuse: bool| -> Result<f64, EngineError> {
        iteration += 1;
        let query = format!("{} {iteration}", workload.query);
        let started = Instant::now();
        let prepared = backend.prepare_query(&query, None, &opts)?;
        let mut pairs = docs
            .iter()
            .map(|d| backend.encode_document(&prepared, d, &opts))
            .collect::<Result<Vec<_>, _>>()?;
        if !reuse {
            pairs = pairs.iter().map(whole).collect();
        }
        backend.score(&pairs)?;
        Ok(started.elapsed().as_secs_f64())
    };
    run(true)?; // warm-up
    let (mut reused, mut whole_s, mut rounds) = (0.0, 0.0, 0usize);
    let started = Instant::now();
    while rounds < 3 || started.elapsed().as_secs_f64() < seconds {
        reused += run(true)?;
        whole_s += run(false)?;
        rounds += 1;
    }
    let pairs = (rounds * docs.len()) as f64;
    Ok((pairs / reused, pairs / whole_s))
}

/// Builds (or takes) the checkpoint and the workload, then measures every engine.
pub fn run(settings: &BenchSettings) -> Result<BenchReport, EngineError> {
    let (model_dir, model_name) = match &settings.checkpoint {
        Some(dir) => (
            dir.clone(),
            dir.file_name()
                .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned()),
        ),
        None => (
            checkpoint::build_cross_encoder(
                &settings.encoder_dir,
                &settings.work_dir.join("minilm-l6-cross-encoder"),
            )?,
            "minilm-l6-cross-encoder".to_string(),
        ),
    };
    std::fs::create_dir_all(&settings.work_dir)?;
    let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    // The file's own fixed padding (128 for all-MiniLM-L6-v2) would make every text "long".
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    // A checkpoint that brings its own workload (the Qwen3 one does: documents in its own
    // tokenizer's lengths) is measured on it; otherwise one is generated.
    let own_workload = model_dir.join("workload.json");
    let (workload, workload_path) = if settings.checkpoint.is_some() && own_workload.is_file() {
        let text = std::fs::read_to_string(&own_workload)?;
        let workload: Workload = serde_json::from_str(&text)
            .map_err(|e| EngineError::InvalidModel(format!("{}: {e}", own_workload.display())))?;
        (workload, own_workload)
    } else {
        let workload = generate_workload(
            &tokenizer,
            settings.documents,
            settings.document_tokens,
            settings.mixed_lengths,
        )?;
        let path = settings.work_dir.join("workload.json");
        std::fs::write(&path, serde_json::to_vec(&workload).unwrap_or_default())?;
        (workload, path)
    };
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);

    let files = ModelFiles::from_dir(&model_dir, &model_name)?;
    // Probed first, on a machine the engines have not warmed yet, like every row after it.
    let machine = match settings.kernels {
        Kernels::OneDnn => machine_limit::probe(1.0),
        _ => None,
    };
    let docs: Vec<&str> = workload.documents.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    let mut token_counts = Vec::new();
    for &precision in &settings.precisions {
        let backend = Reranker::load(
            &files,
            &LoadOptions {
                kernels: settings.kernels,
                ..LoadOptions::new(Device::Cpu, settings.max_batch_tokens, precision)
            },
        )?;
        if token_counts.is_empty() {
            token_counts = backend
                .encode(&workload.query, &docs, &TruncationOptions::default())?
                .iter()
                .map(|p| p.token_count())
                .collect();
        }
        let info = backend.info();
        let engine = format!("rerank-node {}", info.kernels);
        if info.family == "qwen3" {
            let (reused, whole) = measure_prefix_reuse(&backend, &workload, settings.seconds)?;
            rows.push(BenchRow {
                engine: engine.clone(),
                side: Side::Ours,
                peer_mode: None,
                precision: info.quantization.clone(),
                pairs_per_s: Some(reused),
                note: format!(
                    "{}, prefix reused ({:.2}x whole)",
                    info.dtype,
                    reused / whole
                ),
            });
            rows.push(BenchRow {
                side: Side::Ours,
                peer_mode: None,
                engine: format!("{engine}, every pair run whole"),
                precision: info.quantization.clone(),
                pairs_per_s: Some(whole),
                note: "same kernels, no prefix reuse".into(),
            });
            continue;
        }
        rows.push(BenchRow {
            engine: engine.clone(),
            side: Side::Ours,
            peer_mode: None,
            precision: info.quantization.clone(),
            pairs_per_s: Some(measure(&backend, &workload, settings.seconds)?),
            note: info.dtype.clone(),
        });
        if settings.mixed_lengths.is_some() {
            rows.push(BenchRow {
                side: Side::Ours,
                peer_mode: None,
                engine: format!("{engine}, pairs padded to the longest"),
                precision: info.quantization.clone(),
                pairs_per_s: Some(measure_padded(
                    &backend,
                    &workload,
                    pad_id,
                    settings.seconds,
                )?),
                note: "same kernels, one padded batch".into(),
            });
        }
    }
    let (python, threads) = (&settings.python, settings.torch_threads);
    if settings.torch {
        rows.extend(torch::rows(
            python,
            &model_dir,
            &workload_path,
            threads,
            settings.seconds,
        ));
    }
    if let Some(modes) = &settings.peers {
        rows.extend(peers::rows(
            python,
            &model_dir,
            &workload_path,
            threads,
            settings.seconds,
            modes,
        ));
    }
    let total: usize = token_counts.iter().sum();
    let flops_per_pair = machine_limit::workload_flops(&model_dir, &token_counts)
        .map(|flops| flops / token_counts.len().max(1) as f64);
    Ok(BenchReport {
        machine,
        flops_per_pair,
        documents: docs.len(),
        mean_pair_tokens: total as f64 / token_counts.len().max(1) as f64,
        shortest_pair_tokens: token_counts.iter().copied().min().unwrap_or(0),
        longest_pair_tokens: token_counts.iter().copied().max().unwrap_or(0),
        rows,
    })
}

impl BenchReport {
    /// A plain-text table; each of our rows with its ratio to PyTorch's matching mode and, when
    /// peers ran, to the best peer of its class ([`peers::best_peer`]).
    pub fn table(&self) -> String {
        let torch = |mode: &str| {
            self.rows
                .iter()
                .find(|r| r.side == Side::PyTorch && r.precision == mode)
                .and_then(|r| r.pairs_per_s)
        };
        let with_peers = self.rows.iter().any(|r| r.side == Side::Peer);
        let peer_header = if with_peers {
            format!(" {:>16}", "vs best peer")
        } else {
            String::new()
        };
        let mut out = format!(
            "workload: 1 query x {} documents, {:.1} tokens per pair ({}..{})\n\n{:<58} {:<6} {:>9} {:>12}{peer_header}  {}\n",
            self.documents,
            self.mean_pair_tokens,
            self.shortest_pair_tokens,
            self.longest_pair_tokens,
            "engine",
            "mode",
            "pairs/s",
            "vs PyTorch",
            "note"
        );
        if let Some(limit) = &self.machine {
            out.insert_str(0, &machine_limit::describe(limit));
        }
        for row in &self.rows {
            // Decoder rerankers run well under 10 pairs/s: three decimals keep their ratios.
            let rate = row.pairs_per_s.map_or("-".into(), |v| {
                if v < 10.0 {
                    format!("{v:.3}")
                } else {
                    format!("{v:.1}")
                }
            });
            let ours = row.side == Side::Ours;
            let ratio = if ours {
                let fastest = torch::compared_modes(&row.precision)
                    .iter()
                    .filter_map(|&mode| torch(mode).map(|t| (mode, t)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                match (row.pairs_per_s, fastest) {
                    (Some(o), Some((mode, t))) if t > 0.0 => format!("{:.2}x {mode}", o / t),
                    _ => "-".into(),
                }
            } else {
                String::new()
            };
            let peer_ratio = match (with_peers, ours) {
                (false, _) => String::new(),
                (true, false) => format!(" {:>16}", ""),
                (true, true) => format!(
                    " {:>16}",
                    peers::ratio_to_best_peer(&self.rows, row).unwrap_or_else(|| "-".into())
                ),
            };
            let mut note = row.note.clone();
            if let (Some(rate), Some(flops), Some(limit)) =
                (row.pairs_per_s, self.flops_per_pair, &self.machine)
            {
                note.push_str(&format!(
                    "; {}",
                    machine_limit::efficiency(rate, flops, &row.precision, limit)
                ));
            }
            out.push_str(&format!(
                "{:<58} {:<6} {:>9} {:>12}{peer_ratio}  {}\n",
                row.engine, row.precision, rate, ratio, note
            ));
        }
        out
    }
}
