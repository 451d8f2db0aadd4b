//! DeBERTa-v2/v3 parity with transformers: the tiny cross-encoders of
//! `scripts/fixtures/deberta.py` (`deberta-ce`: DeBERTa-v3's shape — log-bucketed relative
//! positions past the buckets and past the clamp, shared attention key, LayerNorm'd relative
//! embeddings, no absolute positions, no token types; `deberta-ce-variant`: the other branches —
//! own position projections, absolute positions, token types, no bucketing, a legacy
//! `"p2c|c2p"` string, two labels, a tanh pooler). Tokenization (ids and type ids) must match
//! exactly; raw scores within 1e-4 × max(1, |reference|), each pair alone and all in one pass,
//! on both CPU paths (padded candle; packed kernels in builds with oneDNN).

mod common;
#[path = "common/device.rs"]
mod device;

use std::path::Path;

use device::test_device;
use rerank_engine::raw_score;
use rerank_engine::{
    EncodedPair, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker,
    TruncationDirection, TruncationOptions,
};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;
const FIXTURES: &[&str] = &["deberta-ce", "deberta-ce-variant"];
const KERNELS: &[Kernels] = &[Kernels::Candle, Kernels::OneDnn];

#[derive(Deserialize)]
struct Fixture {
    max_length: usize,
    num_labels: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
    truncation_direction: TruncationDirection,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    logits: Vec<f32>,
}

fn fixture(name: &str) -> Fixture {
    let path = common::fixtures().join(name).join("parity.json");
    let text = std::fs::read_to_string(path).expect("parity.json");
    serde_json::from_str(&text).expect("parity.json parses")
}

fn load(dir: &Path, kernels: Kernels) -> Reranker {
    let device = test_device();
    let files = ModelFiles::from_dir(dir, &dir.display().to_string()).expect("model files");
    let backend = Reranker::load(
        &files,
        &LoadOptions {
            kernels,
            ..LoadOptions::new(device.clone(), 4096, Precision::F32)
        },
    )
    .expect("model loads");
    let expected = if kernels == Kernels::OneDnn && cfg!(has_onednn) && !device.is_cuda() {
        "onednn"
    } else {
        "candle"
    };
    assert!(
        backend.info().kernels.starts_with(expected),
        "{kernels:?} asked, {} in effect",
        backend.info().kernels
    );
    backend
}

fn close(ours: f32, reference: f32) -> bool {
    (ours - reference).abs() <= TOLERANCE * reference.abs().max(1.0)
}

#[test]
fn deberta_matches_transformers_on_both_kernels() {
    let mut failures = Vec::new();
    for name in FIXTURES {
        let fixture = fixture(name);
        for &kernels in KERNELS {
            let backend = load(&common::fixtures().join(name), kernels);
            let info = backend.info();
            assert_eq!(info.architecture, "DebertaV2ForSequenceClassification");
            assert_eq!(
                info.max_input_length, fixture.max_length,
                "{name} max length"
            );
            assert_eq!(info.num_labels, Some(fixture.num_labels), "{name} labels");
            let mut pairs: Vec<EncodedPair> = Vec::new();
            for (i, case) in fixture.cases.iter().enumerate() {
                let opts = TruncationOptions {
                    truncate: true,
                    direction: case.truncation_direction,
                    max_tokens_per_doc: None,
                };
                let mut encoded = backend
                    .encode(&case.query, &[case.document.as_str()], &opts)
                    .expect("encodes");
                let EncodedPair::Cross(ids) = &encoded[0] else {
                    panic!("{name}: cross-encoder pair expected")
                };
                assert_eq!(ids.ids, case.input_ids, "{name} case {i}: input ids");
                assert_eq!(
                    ids.type_ids, case.token_type_ids,
                    "{name} case {i}: type ids"
                );
                let ours = backend.score(&encoded).expect("scores")[0];
                let reference = raw_score(&case.logits);
                if !close(ours, reference) {
                    failures.push(format!(
                        "{name} {kernels:?} case {i} alone: ours {ours} vs transformers {reference}"
                    ));
                }
                pairs.append(&mut encoded);
            }
            // Every case in one pass: padded rows of 13..=max_length tokens, or packed.
            let together = backend.score(&pairs).expect("scores");
            for (i, (ours, case)) in together.iter().zip(&fixture.cases).enumerate() {
                let reference = raw_score(&case.logits);
                if !close(*ours, reference) {
                    failures.push(format!(
                        "{name} {kernels:?} case {i} batched: ours {ours} vs transformers {reference}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// DeBERTa is listed where a start-up error names the supported architectures.
#[test]
fn deberta_is_a_supported_architecture() {
    assert!(rerank_engine::supported_architectures()
        .iter()
        .any(|a| a == "DebertaV2ForSequenceClassification"));
}
