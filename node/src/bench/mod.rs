//! The engine benchmark: 1 query × N documents of ~110 tokens on a MiniLM-L6 cross-encoder,
//! our candle engine and PyTorch (`sentence_transformers.CrossEncoder`, fp32 and bf16 autocast)
//! measured in the same run on the same checkpoint and workload.
//!
//! Both sides time the whole scoring call, tokenization included, for at least `seconds`.

pub mod checkpoint;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::engine::{
    CandleReranker, EngineError, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend,
    TruncationOptions,
};

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// The all-MiniLM-L6-v2 directory the cross-encoder is built from.
    pub encoder_dir: PathBuf,
    /// Where the checkpoint and workload are written.
    pub work_dir: PathBuf,
    pub documents: usize,
    pub document_tokens: usize,
    pub seconds: f64,
    pub max_batch_tokens: usize,
    /// Also run `scripts/bench_torch.py` with this interpreter (skipped when `None`).
    pub python: Option<String>,
    pub torch_threads: usize,
    /// Precision of our engine's run.
    pub precision: Precision,
    pub kernels: Kernels,
}

/// The query/documents file both engines read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub query: String,
    pub documents: Vec<String>,
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub engine: String,
    pub pairs_per_s: Option<f64>,
    pub note: String,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub documents: usize,
    pub mean_pair_tokens: f64,
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

/// Generates a deterministic workload: documents of ~`tokens` word pieces each.
pub fn generate_workload(
    tokenizer: &Tokenizer,
    documents: usize,
    tokens: usize,
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
        let mut doc = String::new();
        while count(&doc)? < tokens {
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

fn measure(
    backend: &CandleReranker,
    workload: &Workload,
    seconds: f64,
) -> Result<f64, EngineError> {
    let docs: Vec<&str> = workload.documents.iter().map(String::as_str).collect();
    let opts = TruncationOptions::default();
    let run = || -> Result<(), EngineError> {
        let pairs = backend.encode(&workload.query, &docs, &opts)?;
        backend.score(&pairs)?;
        Ok(())
    };
    run()?; // warm-up
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut iterations = 0usize;
    while iterations < 2 || started.elapsed() < budget {
        run()?;
        iterations += 1;
    }
    Ok((iterations * docs.len()) as f64 / started.elapsed().as_secs_f64())
}

#[derive(Deserialize)]
struct TorchOutput {
    torch: String,
    threads: usize,
    results: std::collections::BTreeMap<String, TorchMode>,
}

#[derive(Deserialize)]
struct TorchMode {
    pairs_per_s: f64,
}

fn torch_rows(
    python: &str,
    model: &Path,
    workload: &Path,
    settings: &BenchSettings,
) -> Vec<BenchRow> {
    let output = Command::new(python)
        .arg("scripts/bench_torch.py")
        .arg("--model")
        .arg(model)
        .arg("--workload")
        .arg(workload)
        .arg("--threads")
        .arg(settings.torch_threads.to_string())
        .arg("--seconds")
        .arg(settings.seconds.to_string())
        .output();
    let failed = |note: String| {
        vec![BenchRow {
            engine: "PyTorch (sentence-transformers CrossEncoder)".into(),
            pairs_per_s: None,
            note,
        }]
    };
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("no output").to_string();
            return failed(format!(
                "not measured: {last} (pip install -r scripts/requirements-dev.txt)"
            ));
        }
        Err(e) => return failed(format!("not measured: cannot run {python}: {e}")),
    };
    match serde_json::from_slice::<TorchOutput>(&output.stdout) {
        Ok(parsed) => parsed
            .results
            .into_iter()
            .map(|(mode, r)| BenchRow {
                engine: format!("PyTorch {} {mode} (CrossEncoder)", parsed.torch),
                pairs_per_s: Some(r.pairs_per_s),
                note: format!(
                    "{} threads{}",
                    parsed.threads,
                    if mode == "bf16" { ", autocast" } else { "" }
                ),
            })
            .collect(),
        Err(e) => failed(format!("not measured: unreadable output ({e})")),
    }
}

/// Builds the checkpoint and workload, then measures every engine.
pub fn run(settings: &BenchSettings) -> Result<BenchReport, EngineError> {
    let model_dir = checkpoint::build_cross_encoder(
        &settings.encoder_dir,
        &settings.work_dir.join("minilm-l6-cross-encoder"),
    )?;
    let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    // The file's own fixed padding (128 for all-MiniLM-L6-v2) would make every text "long".
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let workload = generate_workload(&tokenizer, settings.documents, settings.document_tokens)?;
    let workload_path = settings.work_dir.join("workload.json");
    std::fs::write(
        &workload_path,
        serde_json::to_vec(&workload).unwrap_or_default(),
    )?;

    let files = ModelFiles::from_dir(&model_dir, "minilm-l6-cross-encoder")?;
    let backend = CandleReranker::load(
        &files,
        &LoadOptions {
            kernels: settings.kernels,
            ..LoadOptions::new(Device::Cpu, settings.max_batch_tokens, settings.precision)
        },
    )?;
    let docs: Vec<&str> = workload.documents.iter().map(String::as_str).collect();
    let pairs = backend.encode(&workload.query, &docs, &TruncationOptions::default())?;
    let mean_pair_tokens =
        pairs.iter().map(|p| p.token_count()).sum::<usize>() as f64 / pairs.len().max(1) as f64;

    let ours = measure(&backend, &workload, settings.seconds)?;
    let mut rows = vec![BenchRow {
        engine: format!("rerank-node (candle, {})", backend.info().dtype),
        pairs_per_s: Some(ours),
        note: format!("max_batch_tokens {}", settings.max_batch_tokens),
    }];
    if let Some(python) = &settings.python {
        rows.extend(torch_rows(python, &model_dir, &workload_path, settings));
    }
    Ok(BenchReport {
        documents: docs.len(),
        mean_pair_tokens,
        rows,
    })
}

impl BenchReport {
    /// A plain-text table, ours first, each peer with its ratio to ours.
    pub fn table(&self) -> String {
        let ours = self.rows.first().and_then(|r| r.pairs_per_s);
        let mut out = format!(
            "workload: 1 query x {} documents, {:.1} tokens per pair\n\n{:<60} {:>10} {:>9}  {}\n",
            self.documents, self.mean_pair_tokens, "engine", "pairs/s", "ours/x", "note"
        );
        for row in &self.rows {
            let rate = row.pairs_per_s.map_or("-".into(), |v| format!("{v:.1}"));
            let ratio = match (ours, row.pairs_per_s) {
                (Some(o), Some(v)) if v > 0.0 => format!("{:.2}x", o / v),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{:<60} {:>10} {:>9}  {}\n",
                row.engine, rate, ratio, row.note
            ));
        }
        out
    }
}
