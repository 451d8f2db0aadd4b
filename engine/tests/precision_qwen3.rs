//! Every precision mode loads both Qwen3 reranker forms, reports the mode in effect, stores
//! less than f32, and ranks like f32 (Spearman ρ ≥ 0.999 for bf16/f16, ≥ 0.99 for int8) on
//! every fixture (instruction, query) against every fixture document, on both CPU paths
//! (candle, and the packed kernels in builds with oneDNN; f16 runs on candle there). With
//! `RERANK_TEST_DEVICE=cuda` the same checks run on CUDA GPU 0.

mod common;
#[path = "common/device.rs"]
mod device;

use std::path::Path;

use device::test_device;
use rerank_engine::rank_metrics;
use rerank_engine::{
    EncodedPair, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker,
    TruncationOptions,
};
use serde::Deserialize;

const FORMS: &[&str] = &["qwen3-reranker", "qwen3-reranker-seq-cls"];
const KERNELS: &[Kernels] = &[Kernels::Candle, Kernels::OneDnn];

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
    instruction: Option<String>,
}

fn load(dir: &Path, precision: Precision, kernels: Kernels) -> Reranker {
    let files = ModelFiles::from_dir(dir, "m").expect("files");
    Reranker::load(
        &files,
        &LoadOptions {
            kernels,
            ..LoadOptions::new(test_device(), 4096, precision)
        },
    )
    .expect("loads")
}

/// Every distinct (instruction, query) of the fixture against every document, so that ρ
/// measures ranking over ~150 pairs rather than the luck of one near-tie among 18.
fn pairs(fixture: &Fixture) -> Vec<(Option<String>, String, String)> {
    let mut queries: Vec<(Option<String>, String)> = Vec::new();
    for c in &fixture.cases {
        let q = (c.instruction.clone(), c.query.clone());
        if !queries.contains(&q) {
            queries.push(q);
        }
    }
    queries
        .iter()
        .flat_map(|(i, q)| {
            fixture
                .cases
                .iter()
                .map(move |c| (i.clone(), q.clone(), c.document.clone()))
        })
        .collect()
}

fn score_all(backend: &Reranker, pairs: &[(Option<String>, String, String)]) -> Vec<f32> {
    let opts = TruncationOptions::default();
    let encoded: Vec<EncodedPair> = pairs
        .iter()
        .map(|(instruction, query, document)| {
            let prepared = backend
                .prepare_query(query, instruction.as_deref(), &opts)
                .expect("query");
            backend
                .encode_document(&prepared, document, &opts)
                .expect("document")
        })
        .collect();
    backend.score(&encoded).expect("scores")
}

fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    rank_metrics::spearman(&widen(a), &widen(b))
}

#[test]
fn every_mode_ranks_like_f32_on_both_kernel_paths() {
    let mut failures = Vec::new();
    for &name in FORMS {
        let dir = common::fixtures().join(name);
        let text = std::fs::read_to_string(dir.join("parity.json")).expect("parity.json");
        let fixture: Fixture = serde_json::from_str(&text).expect("parses");
        let pairs = pairs(&fixture);
        for &kernels in KERNELS {
            let f32_backend = load(&dir, Precision::F32, kernels);
            let reference = score_all(&f32_backend, &pairs);
            let f32_bytes = f32_backend.info().weight_bytes;
            for (precision, min_rho) in [
                (Precision::Bf16, 0.999),
                (Precision::F16, 0.999),
                (Precision::Int8, 0.99),
            ] {
                let backend = load(&dir, precision, kernels);
                let info = backend.info();
                assert_eq!(info.quantization, precision.name(), "{name} mode in effect");
                assert!(
                    info.weight_bytes < f32_bytes,
                    "{name} {precision:?} stores less than f32"
                );
                let scores = score_all(&backend, &pairs);
                assert!(scores.iter().all(|s| s.is_finite()), "{name} {precision:?}");
                let rho = spearman(&reference, &scores);
                eprintln!(
                    "{name} {kernels:?} {precision:?} ({}): rho {rho:.5} over {} pairs",
                    info.kernels,
                    pairs.len()
                );
                if rho < min_rho {
                    failures.push(format!(
                        "{name} {kernels:?} {precision:?}: rho {rho:.5} < {min_rho}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
