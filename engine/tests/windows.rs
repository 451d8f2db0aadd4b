//! Long documents scored by windows against PyTorch `transformers` scoring the same windows:
//! for cross-encoders (BERT and XLM-R templates), the bi-encoder and the Qwen3 decoder, each
//! window's token span, character span and input ids equal the reference's, each window's raw
//! score is within 1e-4 × max(1, |reference|), and the best window is the reference's. Cases
//! cover a document that fits in one window, one that needs two, and one longer than the cap,
//! with default and explicit overlaps, and a query over half the limit.
//!
//! Fixture: `engine/tests/fixtures/windows.json`, from `scripts/fixtures/windows.py`.

mod common;
#[path = "common/device.rs"]
mod device;

use std::path::PathBuf;

use device::test_device;
use rerank_engine::{
    ChunkOptions, EncodedPair, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend,
    Reranker, TruncationOptions,
};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Fixture {
    models: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    dir: String,
    max_input_length: Option<usize>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
    max_chunks: usize,
    overlap: Option<usize>,
    windows: Vec<Window>,
    best: usize,
}

#[derive(Deserialize)]
struct Window {
    tokens: [usize; 2],
    chars: [usize; 2],
    ids: Vec<u32>,
    raw: f32,
}

fn fixture() -> Fixture {
    let path = common::fixtures().join("windows.json");
    let text = std::fs::read_to_string(&path).expect("windows.json");
    serde_json::from_str(&text).expect("windows.json parses")
}

fn model_dir(name: &str) -> PathBuf {
    if name == "minilm" {
        common::minilm_dir()
    } else {
        common::fixtures().join(name)
    }
}

/// The whole input a window's pair feeds the model, as the reference lists it.
fn input_ids(pair: &EncodedPair) -> Vec<u32> {
    match pair {
        EncodedPair::Cross(ids) => ids.ids.clone(),
        EncodedPair::Bi { document, .. } => document.ids.clone(),
        EncodedPair::Decoder { shared, own } => {
            shared.ids.iter().chain(&own.ids).copied().collect()
        }
    }
}

fn check(kernels: Kernels) {
    for model in fixture().models {
        let dir = model_dir(&model.dir);
        let files = ModelFiles::from_dir(&dir, &model.dir).expect("model files");
        let backend = Reranker::load(
            &files,
            &LoadOptions {
                kernels,
                max_input_length: model.max_input_length,
                ..LoadOptions::new(test_device(), 4096, Precision::F32)
            },
        )
        .expect("model loads");
        let opts = TruncationOptions::default();
        for (n, case) in model.cases.iter().enumerate() {
            let what = format!("{} case {n} ({kernels:?})", model.dir);
            let chunks = ChunkOptions {
                max_chunks: case.max_chunks,
                overlap: case.overlap,
            };
            let prepared = backend
                .prepare_query(&case.query, None, &opts)
                .expect("query");
            let windows = backend
                .encode_windows(&prepared, &case.document, &opts, &chunks)
                .expect("windows");
            assert_eq!(windows.len(), case.windows.len(), "{what}: window count");
            for (i, (got, want)) in windows.iter().zip(&case.windows).enumerate() {
                assert_eq!(got.index, i, "{what}");
                assert_eq!(
                    [got.tokens.start, got.tokens.end],
                    want.tokens,
                    "{what}: window {i} tokens"
                );
                assert_eq!(
                    [got.chars.start, got.chars.end],
                    want.chars,
                    "{what}: window {i} characters"
                );
                assert_eq!(input_ids(&got.pair), want.ids, "{what}: window {i} ids");
            }
            let pairs: Vec<EncodedPair> = windows.iter().map(|w| w.pair.clone()).collect();
            let scores = backend.score(&pairs).expect("scores");
            for (i, (got, want)) in scores.iter().zip(&case.windows).enumerate() {
                assert!(
                    (got - want.raw).abs() <= TOLERANCE * want.raw.abs().max(1.0),
                    "{what}: window {i} scored {got}, reference {}",
                    want.raw
                );
            }
            let best = (0..scores.len())
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
                .expect("a window");
            assert_eq!(best, case.best, "{what}: best window");
        }
    }
}

#[test]
fn windows_match_the_reference_on_candle() {
    check(Kernels::Candle);
}

#[test]
fn windows_match_the_reference_on_the_packed_kernels() {
    check(Kernels::OneDnn);
}

#[test]
fn an_overlap_as_long_as_the_window_is_refused() {
    let dir = common::fixtures().join("bert-ce-short");
    let files = ModelFiles::from_dir(&dir, "bert-ce-short").expect("model files");
    let backend = Reranker::load(
        &files,
        &LoadOptions::new(test_device(), 4096, Precision::F32),
    )
    .expect("model loads");
    let opts = TruncationOptions::default();
    let prepared = backend
        .prepare_query("capital", None, &opts)
        .expect("query");
    let chunks = ChunkOptions {
        max_chunks: 4,
        overlap: Some(24),
    };
    let refused = backend.encode_windows(&prepared, "Paris is the capital.", &opts, &chunks);
    assert!(
        matches!(refused, Err(rerank_engine::EngineError::InvalidChunking(_))),
        "{refused:?}"
    );
}
