//! Qwen3 decoder rerankers against PyTorch `transformers` running the Qwen3-Reranker model
//! card's code on the same tiny checkpoints: the prompt's token ids, the split into shared and
//! own ids, and the raw score (logit("yes") − logit("no"), or the seq-cls head's logit), to
//! 1e-4 × max(1, |reference|), on candle and on the packed kernels, in both checkpoint forms.
//! Scores with the shared prefix's keys and values reused equal scores of whole inputs.
//!
//! Fixtures come from `scripts/fixtures/qwen3.py`. Models load on the CPU, or on CUDA GPU 0 with
//! `RERANK_TEST_DEVICE=cuda` (builds with the `cuda` feature), where both kernel choices run
//! candle's.

mod common;
#[path = "common/device.rs"]
mod device;

use std::path::Path;
use std::sync::Arc;

use device::test_device;
use rerank_engine::{
    EncodedPair, EngineError, Kernels, LoadOptions, ModelFiles, Precision, PreparedQuery,
    RerankBackend, Reranker, TokenIds, TruncationOptions,
};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;
const FORMS: &[&str] = &["qwen3-reranker", "qwen3-reranker-seq-cls"];
const KERNELS: &[Kernels] = &[Kernels::Candle, Kernels::OneDnn];

#[derive(Deserialize)]
struct Fixture {
    architecture: String,
    max_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
    instruction: Option<String>,
    input_ids: Vec<u32>,
    shared_len: usize,
    yes_minus_no: f32,
}

fn fixture(name: &str) -> Fixture {
    let path = common::fixtures().join(name).join("parity.json");
    let text = std::fs::read_to_string(&path).expect("parity.json");
    serde_json::from_str(&text).expect("parity.json parses")
}

fn load_with(dir: &Path, kernels: Kernels, max_input_length: Option<usize>) -> Reranker {
    let device = test_device();
    let files = ModelFiles::from_dir(dir, &dir.display().to_string()).expect("model files");
    let backend = Reranker::load(
        &files,
        &LoadOptions {
            kernels,
            max_input_length,
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

fn load(name: &str, kernels: Kernels) -> Reranker {
    load_with(&common::fixtures().join(name), kernels, None)
}

fn encode(
    backend: &Reranker,
    case: &Case,
    opts: &TruncationOptions,
) -> Result<EncodedPair, EngineError> {
    let query = backend.prepare_query(&case.query, case.instruction.as_deref(), opts)?;
    backend.encode_document(&query, &case.document, opts)
}

fn parts(pair: &EncodedPair) -> (&TokenIds, &TokenIds) {
    match pair {
        EncodedPair::Decoder { shared, own } => (shared, own),
        other => panic!("a Qwen3 reranker gave a non-decoder pair: {other:?}"),
    }
}

/// The same input with nothing shared: every token is the row's own.
fn whole(pair: &EncodedPair) -> EncodedPair {
    let (shared, own) = parts(pair);
    EncodedPair::Decoder {
        shared: Arc::new(TokenIds {
            ids: Vec::new(),
            type_ids: Vec::new(),
        }),
        own: TokenIds {
            ids: shared.ids.iter().chain(&own.ids).copied().collect(),
            type_ids: Vec::new(),
        },
    }
}

fn close(ours: f32, reference: f32) -> bool {
    (ours - reference).abs() <= TOLERANCE * reference.abs().max(1.0)
}

#[test]
fn prompt_ids_and_scores_match_transformers_on_both_kernel_paths_and_forms() {
    for &name in FORMS {
        let fx = fixture(name);
        for &kernels in KERNELS {
            let backend = load(name, kernels);
            let info = backend.info();
            assert_eq!(info.architecture, fx.architecture);
            assert_eq!(
                info.max_input_length, fx.max_length,
                "min(positions, model_max_length)"
            );
            let seq_cls = name.ends_with("seq-cls");
            assert_eq!(info.num_labels, seq_cls.then_some(1), "{name}");

            let pairs: Vec<EncodedPair> = fx
                .cases
                .iter()
                .map(|c| encode(&backend, c, &TruncationOptions::default()).expect("encodes"))
                .collect();
            for (pair, case) in pairs.iter().zip(&fx.cases) {
                let (shared, own) = parts(pair);
                let ids: Vec<u32> = shared.ids.iter().chain(&own.ids).copied().collect();
                assert_eq!(ids, case.input_ids, "{name}: ids of {:?}", case.document);
                assert_eq!(
                    shared.len(),
                    case.shared_len,
                    "{name}: split of {:?}",
                    case.document
                );
                assert_eq!(pair.token_count(), case.input_ids.len());
            }
            let scores = backend.score(&pairs).expect("scores");
            let failures: Vec<String> = scores
                .iter()
                .zip(&fx.cases)
                .filter(|(s, c)| !close(**s, c.yes_minus_no))
                .map(|(s, c)| {
                    format!(
                        "{:?}: ours {s}, transformers {}",
                        c.document, c.yes_minus_no
                    )
                })
                .collect();
            assert!(failures.is_empty(), "{name} {kernels:?}: {failures:#?}");
        }
    }
}

#[test]
fn reusing_the_shared_prefix_scores_like_whole_inputs() {
    for &name in FORMS {
        let fx = fixture(name);
        for &kernels in KERNELS {
            let backend = load(name, kernels);
            let pairs: Vec<EncodedPair> = fx
                .cases
                .iter()
                .map(|c| encode(&backend, c, &TruncationOptions::default()).expect("encodes"))
                .collect();
            let reused = backend.score(&pairs).expect("scores");
            // A second pass meets the prefixes in the cache.
            let cached = backend.score(&pairs).expect("scores");
            let whole_pairs: Vec<EncodedPair> = pairs.iter().map(whole).collect();
            let unshared = backend.score(&whole_pairs).expect("scores");
            // One pair per pass, and shared and whole rows mixed in one pass.
            let single: Vec<f32> = pairs
                .iter()
                .map(|p| backend.score(std::slice::from_ref(p)).expect("scores")[0])
                .collect();
            let mixed_pairs: Vec<EncodedPair> = pairs
                .iter()
                .enumerate()
                .map(|(i, p)| if i % 2 == 0 { whole(p) } else { p.clone() })
                .collect();
            let mixed = backend.score(&mixed_pairs).expect("scores");
            for (label, other) in [
                ("cached", &cached),
                ("whole", &unshared),
                ("single", &single),
                ("mixed", &mixed),
            ] {
                for (i, (a, b)) in reused.iter().zip(other.iter()).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                        "{name} {kernels:?} {label} case {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_instruction_is_part_of_the_shared_prompt() {
    let backend = load("qwen3-reranker", Kernels::Candle);
    let opts = TruncationOptions::default();
    let ids = |instruction: Option<&str>| match backend.prepare_query("q", instruction, &opts) {
        Ok(PreparedQuery::Decoder { shared, .. }) => shared.ids.clone(),
        other => panic!("not a decoder query: {other:?}"),
    };
    let default = ids(None);
    assert_eq!(
        ids(Some(
            "Given a web search query, retrieve relevant passages that answer the query"
        )),
        default,
        "no instruction is the card's default one"
    );
    assert_ne!(ids(Some("Judge whether the passage is a recipe")), default);
    // RerankBackend::encode uses the default instruction.
    let pairs = backend.encode("q", &["d"], &opts).expect("encodes");
    assert_eq!(parts(&pairs[0]).0.ids, default);
}

#[test]
fn a_configured_max_input_length_lowers_the_limit_and_no_truncation_refuses() {
    let fx = fixture("qwen3-reranker");
    let dir = common::fixtures().join("qwen3-reranker");
    for &kernels in KERNELS {
        let backend = load_with(&dir, kernels, Some(90));
        assert_eq!(backend.info().max_input_length, 90);
        let strict = TruncationOptions {
            truncate: false,
            ..TruncationOptions::default()
        };
        for case in &fx.cases {
            let pair = encode(&backend, case, &TruncationOptions::default()).expect("encodes");
            assert!(pair.token_count() <= 90, "{} tokens", pair.token_count());
            // Whatever was cut, the prompt's end (the suffix) is whole: it is what gets scored.
            let (_, own) = parts(&pair);
            assert_eq!(own.ids.last(), case.input_ids.last());
            match encode(&backend, case, &strict) {
                Ok(p) => assert_eq!(p, pair, "an input within the limit is not cut"),
                Err(EngineError::InputTooLong { given, max: 90 }) => assert!(given > 90),
                Err(e) => panic!("unexpected error {e}"),
            }
            assert!(backend.score(&[pair]).expect("scores")[0].is_finite());
        }
    }
}
