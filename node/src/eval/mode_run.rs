//! One precision mode scored in a process of its own (`rerank-node eval --single-mode MODE`):
//! load the model in that mode, score every query's documents, and report the raw scores with
//! timings and the process's peak RSS as one JSON object on stdout.
//!
//! A process per mode is what makes the peak RSS that mode's: in one process the allocator
//! keeps the pages of an earlier mode's model, and the high-water mark never comes down.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::data::{EvalQuery, EvalSet};
use super::peak_rss::peak_rss_bytes;
use super::EvalError;
use rerank_engine::{
    EngineError, Kernels, LoadOptions, ModelFiles, ModelKind, Precision, RerankBackend, Reranker,
    TruncationOptions,
};

/// What a `--single-mode` child reports to the parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeRun {
    /// The mode asked for (`none`, `bf16`, `f16`, `int8`).
    pub requested: String,
    /// The mode in effect: `none` where the model cannot run the one asked for.
    pub in_effect: String,
    /// `cross-encoder` or `bi-encoder`.
    pub kind: String,
    /// What ran the layers (`ModelInfo::kernels`).
    #[serde(default)]
    pub kernels: String,
    /// Bytes of the encoder's weights as stored in this mode (`ModelInfo::weight_bytes`).
    pub weight_bytes: usize,
    /// Raw scores (`RerankBackend::score`), per query in document order; f32 values widened to
    /// f64 so that JSON carries them exactly.
    pub scores: Vec<Vec<f64>>,
    /// Tokens of every pair together (what the forward passes cost).
    pub tokens: usize,
    pub load_seconds: f64,
    /// Wall time of tokenizing and scoring every query once, after one warm-up query.
    pub score_seconds: f64,
    /// `VmHWM` at the end of the run; `None` off Linux.
    pub peak_rss_bytes: Option<u64>,
}

impl ModeRun {
    /// Pairs scored per second of `score_seconds`.
    pub fn pairs_per_s(&self) -> f64 {
        let pairs: usize = self.scores.iter().map(Vec::len).sum();
        if self.score_seconds > 0.0 {
            pairs as f64 / self.score_seconds
        } else {
            0.0
        }
    }
}

/// Loads `model_dir` in `precision` on the CPU and scores `set` with it.
pub fn score_in_mode(
    model_dir: &Path,
    set: &EvalSet,
    precision: Precision,
    max_batch_tokens: usize,
    kernels: Kernels,
) -> Result<ModeRun, EvalError> {
    let loading = Instant::now();
    let files = ModelFiles::from_dir(model_dir, &model_dir.display().to_string())?;
    let backend = Reranker::load(
        &files,
        &LoadOptions {
            kernels,
            ..LoadOptions::new(Device::Cpu, max_batch_tokens, precision)
        },
    )?;
    let load_seconds = loading.elapsed().as_secs_f64();

    if let Some(first) = set.queries.first() {
        score_query(&backend, first)?; // warm-up: first-call allocations are not the mode's speed
    }
    let scoring = Instant::now();
    let mut scores = Vec::with_capacity(set.queries.len());
    let mut tokens = 0;
    for query in &set.queries {
        let (query_scores, query_tokens) = score_query(&backend, query)?;
        scores.push(query_scores.into_iter().map(f64::from).collect());
        tokens += query_tokens;
    }
    let score_seconds = scoring.elapsed().as_secs_f64();

    let info = backend.info();
    Ok(ModeRun {
        requested: precision.name().into(),
        in_effect: info.quantization.clone(),
        kind: match info.kind {
            ModelKind::CrossEncoder => "cross-encoder",
            ModelKind::BiEncoder => "bi-encoder",
        }
        .into(),
        kernels: info.kernels.clone(),
        weight_bytes: info.weight_bytes,
        scores,
        tokens,
        load_seconds,
        score_seconds,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// One query as one rerank request would run it: tokenize (truncating over-long pairs), then
/// score. Returns the scores and the pairs' token count.
fn score_query(backend: &Reranker, query: &EvalQuery) -> Result<(Vec<f32>, usize), EngineError> {
    let documents: Vec<&str> = query.documents.iter().map(String::as_str).collect();
    let pairs = backend.encode(&query.query, &documents, &TruncationOptions::default())?;
    let tokens = pairs.iter().map(|p| p.token_count()).sum();
    Ok((backend.score(&pairs)?, tokens))
}
