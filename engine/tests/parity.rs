//! Parity with the reference implementation: our tokenization and scores against PyTorch
//! `transformers` / sentence-transformers on the same checkpoints.
//!
//! Fixtures come from `scripts/gen_fixtures.py` (tiny random-weight BERT and XLM-R
//! cross-encoders, plus reference cosine scores of the real all-MiniLM-L6-v2). Tolerance: a raw
//! score within 1e-4 × max(1, |reference|) of the reference.
//!
//! Models load on the CPU, or on CUDA GPU 0 with `RERANK_TEST_DEVICE=cuda` (builds with the
//! `cuda` feature; see `scripts/build_cuda.sh`), where every kernel choice must run candle's.

mod common;
#[path = "common/device.rs"]
mod device;

use std::collections::BTreeMap;
use std::path::Path;

use device::test_device;
use rerank_engine::raw_score;
use rerank_engine::{
    EncodedPair, EngineError, Kernels, LoadOptions, ModelFiles, Precision, RerankBackend, Reranker,
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

#[derive(Deserialize)]
struct BiEncoderFixture {
    max_seq_length: usize,
    cases: Vec<BiCase>,
}

#[derive(Deserialize)]
struct BiCase {
    query: String,
    document: String,
    score: f32,
}

/// Both CPU paths are held to the same reference: candle over padded batches, and (in builds
/// with oneDNN) oneDNN over packed sequences. On a GPU both choices must come out as candle.
const KERNELS: &[Kernels] = &[Kernels::Candle, Kernels::OneDnn];

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
    let on_gpu = device.is_cuda();
    let expected_device = if on_gpu { "cuda" } else { "cpu" };
    assert_eq!(backend.info().device, expected_device, "device in effect");
    let expected = if kernels == Kernels::OneDnn && cfg!(has_onednn) && !on_gpu {
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

fn check_cross_encoder(name: &str) {
    for &kernels in KERNELS {
        check_cross_encoder_on(name, kernels);
    }
}

fn check_cross_encoder_on(name: &str, kernels: Kernels) {
    let text =
        std::fs::read_to_string(common::fixtures().join("parity.json")).expect("parity.json");
    let fixture: ParityFixture = serde_json::from_str(&text).expect("parity.json parses");
    let model = &fixture.models[name];
    let backend = load(&common::fixtures().join(name), kernels);
    assert_eq!(
        backend.info().max_input_length,
        model.max_length,
        "{name} max length"
    );

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
    // The whole set as padded batches must give the same scores as one pair at a time.
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

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_cross_encoder("bert-ce");
}

#[test]
fn bert_two_label_pytorch_bin_checkpoint_matches_transformers() {
    check_cross_encoder("bert-ce-short");
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers() {
    check_cross_encoder("xlmr-ce");
}

#[test]
fn over_long_input_without_truncation_is_rejected() {
    let backend = load(&common::fixtures().join("xlmr-ce"), Kernels::Candle);
    let opts = TruncationOptions {
        truncate: false,
        ..TruncationOptions::default()
    };
    let long = "word ".repeat(200);
    match backend.encode("query", &[long.as_str()], &opts) {
        Err(EngineError::InputTooLong { given, max }) => {
            assert_eq!(max, backend.info().max_input_length);
            assert!(given > max);
        }
        other => panic!("expected InputTooLong, got {other:?}"),
    }
}

#[test]
fn unsupported_architecture_names_the_supported_ones() {
    let dir = std::env::temp_dir().join(format!("rerank-unsupported-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = common::fixtures().join("bert-ce");
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("config"))
            .expect("json");
    config["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write");
    let files = ModelFiles::from_dir(&dir, "unsupported").expect("files");
    let err = Reranker::load(
        &files,
        &LoadOptions::new(test_device(), 1024, Precision::F32),
    )
    .err()
    .expect("must fail");
    let message = err.to_string();
    assert!(
        message.contains("GPT2LMHeadModel")
            && message.contains("BertForSequenceClassification")
            && message.contains("XLMRobertaForSequenceClassification"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_model_directory_is_a_clear_error() {
    let err = ModelFiles::from_dir(Path::new("/nonexistent/model"), "x").expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}

#[test]
fn minilm_bi_encoder_matches_sentence_transformers() {
    let dir = common::minilm_dir();
    let text = std::fs::read_to_string(common::fixtures().join("minilm_bi_encoder.json"))
        .expect("fixture");
    let fixture: BiEncoderFixture = serde_json::from_str(&text).expect("parses");
    for &kernels in KERNELS {
        check_bi_encoder(&dir, &fixture, kernels);
    }
}

fn check_bi_encoder(dir: &Path, fixture: &BiEncoderFixture, kernels: Kernels) {
    let backend = load(dir, kernels);
    assert_eq!(backend.info().max_input_length, fixture.max_seq_length);
    let mut all_pairs = Vec::new();
    let mut failures = Vec::new();
    for (i, case) in fixture.cases.iter().enumerate() {
        let mut pairs = backend
            .encode(
                &case.query,
                &[case.document.as_str()],
                &TruncationOptions::default(),
            )
            .expect("encodes");
        let ours = backend.score(&pairs).expect("scores")[0];
        if (ours - case.score).abs() > TOLERANCE {
            failures.push(format!(
                "case {i}: ours {ours} vs sentence-transformers {}",
                case.score
            ));
        }
        all_pairs.append(&mut pairs);
    }
    let batched = backend.score(&all_pairs).expect("batch");
    for (i, (ours, case)) in batched.iter().zip(&fixture.cases).enumerate() {
        if (ours - case.score).abs() > TOLERANCE {
            failures.push(format!(
                "batched case {i}: ours {ours} vs sentence-transformers {}",
                case.score
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "MiniLM parity on {kernels:?}:\n{}",
        failures.join("\n")
    );
}
