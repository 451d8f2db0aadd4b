//! Every precision mode loads the ModernBERT fixtures, reports the mode and kernels in effect,
//! stores less than f32, and ranks like f32 (Spearman ρ ≥ 0.999 for bf16/f16, ≥ 0.99 for int8)
//! on every fixture query × every fixture document, on both CPU paths (candle, and the packed
//! kernels in builds with oneDNN; f16 always runs on candle, and bf16 where the CPU has no native
//! bf16).

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

/// The packed kernels run `precision` in this build and on this machine.
fn packed_runs(precision: Precision) -> bool {
    let device = test_device();
    cfg!(has_onednn)
        && device.is_cpu()
        && match precision {
            Precision::F16 => false,
            Precision::Bf16 => native_bf16(),
            Precision::F32 | Precision::Int8 => true,
        }
}

fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// ρ of every reduced mode against f32 on the same kernels; failures listed.
fn check(dir: &Path, pairs: &[(String, String)], kernels: Kernels) -> Vec<String> {
    let f32_backend = load(dir, Precision::F32, kernels);
    let reference = score_all(&f32_backend, pairs);
    let f32_bytes = f32_backend.info().weight_bytes;
    let mut failures = Vec::new();
    for (precision, min_rho) in [
        (Precision::Bf16, 0.999),
        (Precision::F16, 0.999),
        (Precision::Int8, 0.99),
    ] {
        let backend = load(dir, precision, kernels);
        let info = backend.info();
        assert_eq!(info.quantization, precision.name(), "{}", dir.display());
        let packed = kernels == Kernels::OneDnn && packed_runs(precision);
        assert_eq!(
            info.kernels.starts_with("onednn"),
            packed,
            "{precision:?} asked on {kernels:?}: {} in effect",
            info.kernels
        );
        assert!(
            info.weight_bytes < f32_bytes,
            "{precision:?} stores less than f32"
        );
        let scores = score_all(&backend, pairs);
        assert!(scores.iter().all(|s| s.is_finite()), "{precision:?}");
        let rho = spearman(&reference, &scores);
        eprintln!(
            "{} {kernels:?} {precision:?} ({}): rho {rho:.5}",
            dir.display(),
            info.kernels
        );
        if rho < min_rho {
            failures.push(format!(
                "{} {kernels:?} {precision:?}: rho {rho:.5} < {min_rho}",
                dir.display()
            ));
        }
    }
    failures
}

#[test]
fn every_mode_ranks_modernbert_like_f32_on_both_kernel_paths() {
    let mut failures = Vec::new();
    for name in ["modernbert-ce", "modernbert-ce-mean"] {
        let dir = common::fixtures().join(name);
        let text = std::fs::read_to_string(dir.join("parity.json")).expect("parity.json");
        let fixture: Fixture = serde_json::from_str(&text).expect("parses");
        let model = &fixture.models[name];
        // Every fixture query against every fixture document, so that ρ measures ranking and not
        // the luck of one near-tie among a handful of random-model logits.
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
        for &kernels in KERNELS {
            failures.extend(check(&dir, &pairs, kernels));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
