//! Parity with transformers through the HTTP API, for every model family: a real node process
//! per fixture checkpoint, `POST /rerank` with `raw_scores`, each case's raw score against the
//! reference logit within 1e-4 × max(1, |reference|) — the engine's parity tests, end to end
//! (tokenization, truncation, the instruction field, batching and the wire format included).
//!
//! Every fixture directory under `engine/tests/fixtures` that holds its own `parity.json` is a
//! case list (written by `scripts/fixtures/<family>.py`). A case's reference is its `logits`
//! (reduced to one raw score as the engine does) or, for decoder rerankers, `yes_minus_no`.
//! Each checkpoint runs on both CPU kernel paths.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, NodeProcess};
use serde_json::{json, Value};

/// One reference case, whatever the family's fixture file calls its fields.
struct Case {
    query: String,
    document: String,
    instruction: Option<String>,
    direction: String,
    reference: f32,
}

/// The raw score of a row of logits: one label as is, two or more as label 1's log-odds (the
/// engine's `raw_score`).
fn raw_score(logits: &[f32]) -> f32 {
    match logits {
        [] => 0.0,
        [single] => *single,
        [first, positive, rest @ ..] => {
            let others: Vec<f32> = std::iter::once(*first)
                .chain(rest.iter().copied())
                .collect();
            let max = others.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + others.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            positive - lse
        }
    }
}

fn case_of(v: &Value) -> Option<Case> {
    let reference = match (v.get("yes_minus_no"), v.get("logits")) {
        (Some(d), _) => d.as_f64()? as f32,
        (None, Some(logits)) => {
            let row: Vec<f32> = logits
                .as_array()?
                .iter()
                .filter_map(|l| l.as_f64().map(|l| l as f32))
                .collect();
            raw_score(&row)
        }
        (None, None) => return None,
    };
    Some(Case {
        query: v.get("query")?.as_str()?.to_string(),
        document: v.get("document")?.as_str()?.to_string(),
        instruction: v
            .get("instruction")
            .and_then(Value::as_str)
            .map(str::to_string),
        direction: v
            .get("truncation_direction")
            .and_then(Value::as_str)
            .unwrap_or("Right")
            .to_string(),
        reference,
    })
}

/// The cases of `dir/parity.json`: a top-level `cases` list, or `models.*.cases`.
fn cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("parity.json")).expect("parity.json");
    let doc: Value = serde_json::from_str(&text).expect("parity.json is JSON");
    let mut lists: Vec<&Value> = Vec::new();
    if let Some(list) = doc.get("cases") {
        lists.push(list);
    }
    if let Some(models) = doc.get("models").and_then(Value::as_object) {
        lists.extend(models.values().filter_map(|m| m.get("cases")));
    }
    lists
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(case_of)
        .collect()
}

/// Fixture checkpoints that carry their own case list.
fn family_fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("parity.json").is_file() && p.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

async fn check(dir: &Path, kernels: &str) -> Vec<String> {
    let model = dir.to_string_lossy().to_string();
    let node = NodeProcess::start(&[
        ("MODEL_PATH", model.as_str()),
        ("CPU_KERNELS", kernels),
        ("LOCAL_CACHE_SIZE", "0"),
    ])
    .await;
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let all = cases(dir);
    assert!(!all.is_empty(), "{}: no cases", dir.display());
    for case in all {
        let mut body = json!({
            "query": case.query,
            "texts": [case.document],
            "raw_scores": true,
            "truncate": true,
            "truncation_direction": case.direction,
        });
        if let Some(instruction) = &case.instruction {
            body["instruction"] = json!(instruction);
        }
        let response = client
            .post(format!("{}/rerank", node.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let ranks: Value = response.json().await.expect("JSON body");
        assert!(status.is_success(), "{}: {status} {ranks}", dir.display());
        let ours = ranks[0]["score"].as_f64().expect("a score") as f32;
        let tolerance = 1e-4 * case.reference.abs().max(1.0);
        if (ours - case.reference).abs() > tolerance || !ours.is_finite() {
            failures.push(format!(
                "{} [{kernels}] {:?} / {:?}: ours {ours}, transformers {}",
                dir.display(),
                case.query,
                case.document,
                case.reference
            ));
        }
    }
    failures
}

#[tokio::test]
async fn every_family_matches_transformers_through_the_http_api() {
    let dirs = family_fixtures();
    assert!(
        dirs.len() >= 2,
        "family fixtures missing under {}",
        fixtures().display()
    );
    eprintln!("{} family checkpoints", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        for kernels in ["onednn", "candle"] {
            failures.extend(check(dir, kernels).await);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
