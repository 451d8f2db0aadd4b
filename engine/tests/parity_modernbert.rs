//! ModernBERT parity with `transformers` (eager attention, float32) on the same checkpoints: our
//! tokenization and raw scores, on both kernel paths, within 1e-4 × max(1, |reference|).
//!
//! Fixtures come from `scripts/fixtures/modernbert.py`: `modernbert-ce` (CLS pooling, four layers
//! alternating global and local attention, a window of 4 tokens each side, no biases, config as
//! transformers 5 writes it) and `modernbert-ce-mean` (mean pooling, every bias, SiLU head, config
//! in the Hub's older form). Their inputs run up to 64 tokens: local layers really cut attention.

mod common;
#[path = "common/device.rs"]
mod device;

use std::collections::BTreeMap;
use std::path::Path;

use device::test_device;
use rerank_engine::raw_score;
use rerank_engine::{
    EncodedPair, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker,
    TruncationDirection, TruncationOptions,
};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct ParityFixture {
    models: BTreeMap<String, ModelCases>,
}

#[derive(Deserialize)]
struct ModelCases {
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

/// Both CPU paths are held to the same reference: candle over padded batches, and (in builds
/// with oneDNN) the packed kernels. On a GPU both choices come out as candle.
const KERNELS: &[Kernels] = &[Kernels::Candle, Kernels::OneDnn];

fn load(dir: &Path, kernels: Kernels) -> Reranker {
    let device = test_device();
    let files = ModelFiles::from_dir(dir, "modernbert").expect("model files");
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

fn check(name: &str) {
    let dir = common::fixtures().join(name);
    let text = std::fs::read_to_string(dir.join("parity.json")).expect("parity.json");
    let fixture: ParityFixture = serde_json::from_str(&text).expect("parity.json parses");
    let model = &fixture.models[name];
    for &kernels in KERNELS {
        let backend = load(&dir, kernels);
        let info = backend.info();
        assert_eq!(info.max_input_length, model.max_length, "{name} max length");
        assert_eq!(info.num_labels, Some(model.num_labels), "{name} labels");
        assert_eq!(info.architecture, "ModernBertForSequenceClassification");

        let mut all_pairs: Vec<EncodedPair> = Vec::new();
        let mut failures = Vec::new();
        for (i, case) in model.cases.iter().enumerate() {
            let opts = TruncationOptions {
                truncate: true,
                direction: case.truncation_direction,
                max_tokens_per_doc: None,
            };
            let mut pairs = backend
                .encode(&case.query, &[case.document.as_str()], &opts)
                .expect("encodes");
            let EncodedPair::Cross(ids) = &pairs[0] else {
                panic!("{name}: cross-encoder pair expected")
            };
            assert_eq!(ids.ids, case.input_ids, "{name} case {i}: input ids");
            assert_eq!(
                ids.type_ids, case.token_type_ids,
                "{name} case {i}: token type ids"
            );
            let ours = backend.score(&pairs).expect("scores")[0];
            let reference = raw_score(&case.logits);
            if !close(ours, reference) {
                failures.push(format!("case {i}: ours {ours} vs transformers {reference}"));
            }
            all_pairs.append(&mut pairs);
        }
        // The whole set in one pass (padded or packed) must score as one pair at a time.
        let batched = backend.score(&all_pairs).expect("batch scores");
        for (i, (ours, case)) in batched.iter().zip(&model.cases).enumerate() {
            let reference = raw_score(&case.logits);
            if !close(*ours, reference) {
                failures.push(format!(
                    "batched case {i}: ours {ours} vs transformers {reference}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{name} parity on {kernels:?}:\n{}",
            failures.join("\n")
        );
    }
}

#[test]
fn modernbert_cls_pooling_matches_transformers() {
    check("modernbert-ce");
}

#[test]
fn modernbert_mean_pooling_with_biases_and_hub_config_matches_transformers() {
    check("modernbert-ce-mean");
}

/// The longest input the fixture allows, in one pass with short ones: positions restart per
/// sequence and the window stays inside each sequence on the packed path.
#[test]
fn packed_and_padded_passes_agree_on_mixed_lengths() {
    let dir = common::fixtures().join("modernbert-ce");
    let long = "Paris is the capital and largest city of France. ".repeat(20);
    let docs = ["a", long.as_str(), "Bread is made from flour.", " "];
    let opts = TruncationOptions::default();
    let scores: Vec<Vec<f32>> = KERNELS
        .iter()
        .map(|&k| {
            let backend = load(&dir, k);
            let pairs = backend
                .encode("What is the capital of France?", &docs, &opts)
                .expect("encodes");
            let together = backend.score(&pairs).expect("scores");
            for (pair, score) in pairs.iter().zip(&together) {
                let alone = backend.score(std::slice::from_ref(pair)).expect("scores")[0];
                assert!((alone - score).abs() <= 1e-5, "{k:?}: {alone} vs {score}");
            }
            together
        })
        .collect();
    for (a, b) in scores[0].iter().zip(&scores[1]) {
        assert!((a - b).abs() <= 1e-4, "candle {a} vs packed {b}");
    }
}
