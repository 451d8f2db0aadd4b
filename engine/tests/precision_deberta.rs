//! Every precision mode loads the DeBERTa fixtures, reports the mode in effect, stores less than
//! f32 and ranks like f32 — Spearman ρ ≥ 0.999 for bf16/f16, ≥ 0.99 for int8 — over every
//! fixture query × every fixture document (196 pairs per model, so that ρ measures ranking, not
//! one near-tie among 14 clustered logits), on both CPU paths (packed kernels in builds with
//! oneDNN; f16 runs candle there, as for BERT).

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
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
}

const FIXTURES: &[&str] = &["deberta-ce", "deberta-ce-variant"];
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

#[test]
fn every_mode_ranks_deberta_like_f32() {
    let mut failures = Vec::new();
    for name in FIXTURES {
        let dir = common::fixtures().join(name);
        let text = std::fs::read_to_string(dir.join("parity.json")).expect("parity.json");
        let fixture: Fixture = serde_json::from_str(&text).expect("parses");
        let pairs: Vec<(String, String)> = fixture
            .cases
            .iter()
            .flat_map(|q| {
                fixture
                    .cases
                    .iter()
                    .map(|d| (q.query.clone(), d.document.clone()))
            })
            .collect();
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
                    "{name} {precision:?} stores less"
                );
                let scores = score_all(&backend, &pairs);
                assert!(scores.iter().all(|s| s.is_finite()), "{name} {precision:?}");
                let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
                let rho = rank_metrics::spearman(&widen(&reference), &widen(&scores));
                eprintln!(
                    "{name} {kernels:?} {precision:?} ({}): rho {rho:.5}",
                    info.kernels
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
