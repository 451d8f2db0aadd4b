//! Long documents scored by their best window, end to end through real node processes: the
//! score of `max_chunks_per_doc` requests against transformers' best window
//! (`engine/tests/fixtures/windows.json`, from `scripts/fixtures/windows.py`) within
//! 1e-4 × max(1, |reference|), `best_chunk` naming that window and its characters, `usage`
//! counting every window, the request fields' validation, token admission counting windows, and
//! windows shared through the Redis tier.

mod common;

use std::path::PathBuf;

use common::{fixtures, minilm_dir, NodeProcess, RedisProcess};
use serde_json::{json, Value};

struct Window {
    chars: (u64, u64),
    tokens: usize,
    raw: f32,
}

struct Case {
    query: String,
    document: String,
    max_chunks: u64,
    overlap: Option<u64>,
    windows: Vec<Window>,
    best: usize,
}

struct Model {
    dir: PathBuf,
    max_input_length: Option<u64>,
    kind: String,
    cases: Vec<Case>,
}

fn reference() -> Vec<Model> {
    let text = std::fs::read_to_string(fixtures().join("windows.json")).expect("windows.json");
    let doc: Value = serde_json::from_str(&text).expect("windows.json is JSON");
    let models = doc["models"].as_array().expect("models");
    models
        .iter()
        .map(|m| {
            let name = m["dir"].as_str().expect("dir");
            let dir = if name == "minilm" {
                minilm_dir()
            } else {
                fixtures().join(name)
            };
            let cases = m["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .map(|c| Case {
                    query: c["query"].as_str().expect("query").into(),
                    document: c["document"].as_str().expect("document").into(),
                    max_chunks: c["max_chunks"].as_u64().expect("max_chunks"),
                    overlap: c["overlap"].as_u64(),
                    best: c["best"].as_u64().expect("best") as usize,
                    windows: c["windows"]
                        .as_array()
                        .expect("windows")
                        .iter()
                        .map(|w| Window {
                            chars: (
                                w["chars"][0].as_u64().expect("start"),
                                w["chars"][1].as_u64().expect("end"),
                            ),
                            tokens: w["ids"].as_array().expect("ids").len(),
                            raw: w["raw"].as_f64().expect("raw") as f32,
                        })
                        .collect(),
                })
                .collect();
            Model {
                dir,
                max_input_length: m["max_input_length"].as_u64(),
                kind: m["kind"].as_str().expect("kind").into(),
                cases,
            }
        })
        .collect()
}

async fn start(model: &Model, extra: &[(&str, &str)]) -> NodeProcess {
    let dir = model.dir.to_string_lossy().to_string();
    let limit = model.max_input_length.map(|l| l.to_string());
    let mut env = vec![("MODEL_PATH", dir.as_str()), ("LOCAL_CACHE_SIZE", "0")];
    if let Some(limit) = &limit {
        env.push(("MAX_INPUT_LENGTH", limit.as_str()));
    }
    env.extend_from_slice(extra);
    NodeProcess::start(&env).await
}

async fn post(node: &NodeProcess, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", node.base))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn chunk_fields(body: &mut Value, case: &Case) {
    body["max_chunks_per_doc"] = json!(case.max_chunks);
    if let Some(overlap) = case.overlap {
        body["chunk_overlap"] = json!(overlap);
    }
}

#[tokio::test]
async fn a_document_scores_as_its_best_window_through_both_apis() {
    let mut failures = Vec::new();
    for model in reference() {
        let node = start(&model, &[]).await;
        for (n, case) in model.cases.iter().enumerate() {
            let what = format!("{} case {n}", model.dir.display());
            let best = &case.windows[case.best];
            // TEI shape: the raw score; a long document needs no `truncate` when split, and
            // one window is today's truncated score.
            let mut body =
                json!({"query": case.query, "texts": [case.document], "raw_scores": true});
            chunk_fields(&mut body, case);
            if case.max_chunks == 1 {
                body["truncate"] = json!(true);
            }
            let (status, ranks) = post(&node, "/rerank", &body).await;
            assert_eq!(status, 200, "{what}: {ranks}");
            let score = ranks[0]["score"].as_f64().expect("score") as f32;
            if (score - best.raw).abs() > 1e-4 * best.raw.abs().max(1.0) {
                failures.push(format!(
                    "{what}: {score} against the best window's {}",
                    best.raw
                ));
            }
            if case.max_chunks > 1 {
                let chunk = &ranks[0]["best_chunk"];
                assert_eq!(chunk["index"], json!(case.best), "{what}: {ranks}");
                assert_eq!(chunk["start"], json!(best.chars.0), "{what}: {ranks}");
                assert_eq!(chunk["end"], json!(best.chars.1), "{what}: {ranks}");
            } else {
                assert!(ranks[0].get("best_chunk").is_none(), "{what}: {ranks}");
            }
            // Cohere shape: the same window, and usage counting every window's tokens.
            let mut body = json!({"query": case.query, "documents": [case.document]});
            chunk_fields(&mut body, case);
            let (status, cohere) = post(&node, "/v1/rerank", &body).await;
            assert_eq!(status, 200, "{what}: {cohere}");
            let result = &cohere["results"][0];
            if case.max_chunks > 1 {
                assert_eq!(result["best_chunk"]["index"], json!(case.best), "{what}");
            }
            if model.kind != "bi" {
                // Every window's whole input (a decoder's prompt included); a bi-encoder's
                // usage also counts the query once per window, which the fixture does not list.
                let tokens: usize = case.windows.iter().map(|w| w.tokens).sum();
                assert_eq!(
                    cohere["usage"]["total_tokens"],
                    json!(tokens),
                    "{what}: {cohere}"
                );
            }
            if model.kind == "cross" || model.kind == "decoder" {
                let p = 1.0 / (1.0 + (-best.raw).exp());
                let got = result["relevance_score"].as_f64().expect("score") as f32;
                assert!((got - p).abs() < 1e-4, "{what}: {got} against {p}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn chunking_fields_are_validated_and_windows_count_against_the_token_budget() {
    let models = reference();
    let model = models
        .iter()
        .find(|m| m.dir.ends_with("bert-ce-short"))
        .expect("bert-ce-short in windows.json");
    let long = &model
        .cases
        .iter()
        .max_by_key(|c| c.document.len())
        .expect("a case")
        .document;
    let node = start(
        model,
        &[
            ("MAX_QUEUED_TOKENS", "300"),
            ("MAX_CHUNKS_PER_DOC_LIMIT", "8"),
        ],
    )
    .await;

    for (fields, why) in [
        (json!({"max_chunks_per_doc": 0}), "at least 1"),
        (json!({"max_chunks_per_doc": 9}), "MAX_CHUNKS_PER_DOC_LIMIT"),
        (
            json!({"max_chunks_per_doc": 2, "chunk_overlap": -1}),
            "at least 0",
        ),
        (
            json!({"max_chunks_per_doc": 2, "chunk_overlap": 24}),
            "less than the window",
        ),
    ] {
        let mut body = json!({"query": "bread", "texts": [long]});
        for (k, v) in fields.as_object().expect("fields") {
            body[k] = v.clone();
        }
        let (status, error) = post(&node, "/rerank", &body).await;
        assert_eq!(status, 400, "{fields}: {error}");
        assert_eq!(error["error_type"], "validation", "{fields}: {error}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{fields}: {message}");
        let mut body = json!({"query": "bread", "documents": [long]});
        for (k, v) in fields.as_object().expect("fields") {
            body[k] = v.clone();
        }
        let (status, error) = post(&node, "/v2/rerank", &body).await;
        assert_eq!(status, 400, "{fields}: {error}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(why),
            "{error}"
        );
    }

    // Without chunking a long text still needs `truncate` on the TEI route; with it, not.
    let (status, _) = post(
        &node,
        "/rerank",
        &json!({"query": "bread", "texts": [long]}),
    )
    .await;
    assert_eq!(status, 413);
    let (status, ranks) = post(
        &node,
        "/rerank",
        &json!({"query": "bread", "texts": [long], "max_chunks_per_doc": 4}),
    )
    .await;
    assert_eq!(status, 200, "{ranks}");

    // 8 windows of ≤ 24 tokens fit in 300 tokens; 20 documents of 8 windows do not.
    let texts: Vec<&String> = std::iter::repeat_n(long, 20).collect();
    let (status, error) = post(
        &node,
        "/rerank",
        &json!({"query": "bread", "texts": texts, "max_chunks_per_doc": 8}),
    )
    .await;
    assert_eq!(status, 413, "{error}");
    let (status, _) = post(
        &node,
        "/rerank",
        &json!({"query": "bread", "texts": [long], "max_chunks_per_doc": 8}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn windows_computed_on_one_node_are_served_by_another_through_redis() {
    let redis = RedisProcess::start();
    let models = reference();
    let model = models
        .iter()
        .find(|m| m.dir.ends_with("bert-ce-short"))
        .expect("bert-ce-short in windows.json");
    let case = model
        .cases
        .iter()
        .find(|c| c.windows.len() >= 3)
        .expect("a case with several windows");
    let url = redis.url();
    let env = [("REDIS_ENABLED", "true"), ("REDIS_URL", url.as_str())];
    let a = start(model, &env).await;
    let b = start(model, &env).await;
    let mut body =
        json!({"query": case.query, "texts": [case.document, case.document], "raw_scores": true});
    chunk_fields(&mut body, case);
    let (status, from_a) = post(&a, "/rerank", &body).await;
    assert_eq!(status, 200, "{from_a}");
    let windows = case.windows.len() as u64;
    assert_eq!(
        a.metric("rerank_pairs_computed_total").await,
        windows,
        "each window once, the duplicate document deduplicated"
    );
    let (status, from_b) = post(&b, "/rerank", &body).await;
    assert_eq!(status, 200, "{from_b}");
    assert_eq!(from_a, from_b);
    assert_eq!(
        b.metric("rerank_pairs_computed_total").await,
        0,
        "B computed nothing"
    );
    assert_eq!(b.metric("rerank_redis_hits_total").await, windows);
}
