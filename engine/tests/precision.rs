//! Every precision mode loads every supported architecture, reports the mode in effect, stores
//! less than f32, and ranks like f32 (Spearman ρ ≥ 0.999 for bf16/f16, ≥ 0.99 for int8) — on the
//! parity fixtures (every query × every document, ~200 pairs per model) and on the real
//! all-MiniLM-L6-v2 — on both CPU paths (candle, and oneDNN in builds with the feature).
//! With `RERANK_TEST_DEVICE=cuda` (builds with the `cuda` feature; see `scripts/build_cuda.sh`)
//! the same checks run on CUDA GPU 0, where bf16/f16 are cuBLAS compute precisions.

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

#[derive(Deserialize)]
struct Fixture {
    models: std::collections::BTreeMap<String, Cases>,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
}

/// Every mode is checked on both CPU paths (oneDNN only in builds with oneDNN; elsewhere
/// the second pass repeats candle).
const KERNELS: &[Kernels] = &[Kernels::Candle, Kernels::OneDnn];

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

/// Spearman's ρ of two score lists (ties share their mean rank), as `rerank-node eval` computes it.
fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    rank_metrics::spearman(&widen(a), &widen(b))
}

fn score_all(backend: &Reranker, pairs: &[(String, String)]) -> Vec<f32> {
    let mut encoded: Vec<EncodedPair> = Vec::new();
    for (q, d) in pairs {
        encoded.extend(
            backend
                .encode(q, &[d.as_str()], &TruncationOptions::default())
                .expect("encodes"),
        );
    }
    backend.score(&encoded).expect("scores")
}

/// ρ of every reduced mode against f32 on the same kernels; failures listed.
fn check(dir: &Path, pairs: &[(String, String)], kernels: Kernels) -> Vec<String> {
    let reference = score_all(&load(dir, Precision::F32, kernels), pairs);
    let f32_bytes = load(dir, Precision::F32, kernels).info().weight_bytes;
    let mut failures = Vec::new();
    for (precision, min_rho) in [
        (Precision::Bf16, 0.999),
        (Precision::F16, 0.999),
        (Precision::Int8, 0.99),
    ] {
        let backend = load(dir, precision, kernels);
        let info = backend.info();
        assert_eq!(
            info.quantization,
            precision.name(),
            "{} reports the mode in effect",
            dir.display()
        );
        assert!(
            info.weight_bytes < f32_bytes,
            "{:?} stores less than f32",
            precision
        );
        let rho = spearman(&reference, &score_all(&backend, pairs));
        eprintln!(
            "{} {kernels:?} {precision:?} ({}): rho {rho:.5}",
            dir.display(),
            info.kernels
        );
        if rho < min_rho {
            failures.push(format!(
                "{} {kernels:?} {precision:?}: rho {rho:.5} < {min_rho}",
                dir.display(),
            ));
        }
    }
    failures
}

#[test]
fn every_mode_loads_every_fixture_architecture() {
    let text =
        std::fs::read_to_string(common::fixtures().join("parity.json")).expect("parity.json");
    let fixture: Fixture = serde_json::from_str(&text).expect("parses");
    let mut failures = Vec::new();
    for (name, model) in &fixture.models {
        // Every fixture query against every fixture document: ~200 pairs, so that ρ measures
        // ranking, not the luck of one near-tie among the random model's 14 clustered logits.
        let pairs: Vec<(String, String)> = model
            .cases
            .iter()
            .flat_map(|q| {
                model
                    .cases
                    .iter()
                    .map(|d| (q.query.clone(), d.document.clone()))
            })
            .collect();
        let dir = common::fixtures().join(name);
        for &kernels in KERNELS {
            failures.extend(check(&dir, &pairs, kernels));
        }
        let f32_bytes = load(&dir, Precision::F32, Kernels::Candle)
            .info()
            .weight_bytes;
        for precision in [Precision::Bf16, Precision::F16, Precision::Int8] {
            let backend = load(&dir, precision, Kernels::Candle);
            assert_eq!(backend.info().quantization, precision.name(), "{name}");
            assert!(
                backend.info().weight_bytes < f32_bytes,
                "{name} {precision:?} stores less than f32"
            );
            let scores = score_all(&backend, &pairs);
            assert!(
                scores.iter().all(|s| s.is_finite()),
                "{name} {precision:?}: {scores:?}"
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_mode_ranks_minilm_like_f32() {
    let dir = common::minilm_dir();
    let text = std::fs::read_to_string(common::fixtures().join("minilm_bi_encoder.json"))
        .expect("fixture");
    let value: serde_json::Value = serde_json::from_str(&text).expect("parses");
    let pairs: Vec<(String, String)> = value["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["query"].as_str().unwrap_or_default().to_string(),
                c["document"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let failures: Vec<String> = KERNELS
        .iter()
        .flat_map(|&k| check(&dir, &pairs, k))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
