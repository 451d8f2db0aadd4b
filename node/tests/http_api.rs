//! End-to-end tests of a real `rerank-node` process over HTTP, with the real all-MiniLM-L6-v2.

mod common;

use common::{minilm_dir, NodeProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};

const QUERY: &str = "What is the capital of France?";
const DOCS: [&str; 4] = [
    "Berlin is the capital of Germany.",
    "Paris is the capital and largest city of France.",
    "Bananas are a good source of potassium.",
    "France is known for its wine and cheese.",
];

async fn start_node(extra: &[(&str, &str)]) -> NodeProcess {
    let dir = minilm_dir();
    let dir = dir.to_string_lossy().to_string();
    let mut env = vec![("MODEL_PATH", dir.as_str())];
    env.extend_from_slice(extra);
    NodeProcess::start(&env).await
}

async fn post(
    node: &NodeProcess,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", node.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

fn json_body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("serializable")
}

#[tokio::test]
async fn paris_ranks_first_through_every_rerank_shape() {
    let node = start_node(&[]).await;

    let (status, headers, ranks) = post(
        &node,
        "/rerank",
        json_body(json!({"query": QUERY, "texts": DOCS, "return_text": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ranks}");
    let ranks = ranks.as_array().expect("array");
    assert_eq!(ranks.len(), DOCS.len());
    assert_eq!(ranks[0]["index"], 1, "{ranks:?}");
    assert_eq!(ranks[0]["text"], DOCS[1]);
    let scores: Vec<f64> = ranks
        .iter()
        .map(|r| r["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted descending: {scores:?}"
    );
    for h in [
        "x-request-id",
        "x-compute-time",
        "x-queue-time",
        "x-inference-time",
    ] {
        assert!(headers.contains_key(h), "missing {h}");
    }

    let (status, headers, body) = post(
        &node,
        "/v1/rerank",
        json_body(json!({"query": QUERY, "documents": DOCS, "top_n": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 1);
    assert_eq!(
        results[0]["document"]["text"], DOCS[1],
        "v1 returns documents by default"
    );
    assert!(body["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        body["id"].as_str(),
        headers.get("x-request-id").and_then(|v| v.to_str().ok())
    );
    assert_eq!(body["meta"]["api_version"]["version"], "1");

    let docs_as_objects: Vec<Value> = DOCS.iter().map(|d| json!({"text": d})).collect();
    let (status, _, body) = post(
        &node,
        "/v2/rerank",
        json_body(json!({"model": "any", "query": QUERY, "documents": docs_as_objects})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), DOCS.len());
    assert_eq!(results[0]["index"], 1);
    assert!(
        results[0].get("document").is_none(),
        "v2 omits documents by default"
    );
}

#[tokio::test]
async fn mixed_precision_computes_bf16_only_where_the_cpu_has_it() {
    let node = start_node(&[("ENABLE_MIXED_PRECISION", "true")]).await;
    let health = node.health().await;
    let expected = if rerank_engine::native_bf16() {
        "bf16"
    } else {
        "none"
    };
    assert_eq!(health["model"]["quantization"], expected, "{health}");
    let (status, _, body) = post(
        &node,
        "/rerank",
        json_body(json!({"query": QUERY, "texts": DOCS})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["index"], 1, "Paris still ranks first: {body}");
}

#[tokio::test]
async fn service_endpoints_describe_the_node() {
    let node = start_node(&[("NODE_ID", "node-under-test")]).await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", node.base)).send();

    let health: Value = get("/health")
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node_id"], "node-under-test");
    for key in [
        "id",
        "architecture",
        "kind",
        "device",
        "dtype",
        "quantization",
    ] {
        assert!(health["model"].get(key).is_some(), "model.{key}");
    }
    assert_eq!(health["model"]["kind"], "bi-encoder");
    assert_eq!(health["model"]["quantization"], "none");
    for key in [
        "enabled",
        "total_requests",
        "total_batches",
        "avg_batch_size",
        "window_ms",
        "max_batch_size",
        "pending_requests",
    ] {
        assert!(
            health["micro_batcher"].get(key).is_some(),
            "micro_batcher.{key}"
        );
    }
    for key in [
        "enabled",
        "connected",
        "cached_entries",
        "keyspace_hits",
        "keyspace_misses",
    ] {
        assert!(
            health["distributed_cache"].get(key).is_some(),
            "distributed_cache.{key}"
        );
    }

    let info: Value = get("/info")
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(
        info["max_input_length"], 256,
        "sentence-transformers' max_seq_length wins"
    );
    assert_eq!(info["pooling"], "mean");
    let kernels = info["kernels"].as_str().unwrap_or_default();
    assert!(
        kernels == "candle" || kernels.starts_with("onednn ("),
        "/info names the kernels: {info}"
    );

    post(
        &node,
        "/rerank",
        json_body(json!({"query": QUERY, "texts": DOCS})),
    )
    .await;
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("rerank_pairs_computed_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rerank_http_requests_total{route=\"/rerank\",status=\"200\"} 1"),
        "{metrics}"
    );

    let openapi: Value = get("/openapi.json")
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in ["/rerank", "/v1/rerank", "/v2/rerank", "/health"] {
        assert!(openapi["paths"].get(path).is_some(), "openapi path {path}");
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_assigned_on_every_response() {
    let node = start_node(&[]).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/health", node.base))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let resp = client
        .get(format!("{}/health", node.base))
        .send()
        .await
        .expect("sent");
    let assigned = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(uuid_like(&assigned), "{assigned}");
    let resp = client
        .post(format!("{}/rerank", node.base))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.headers().contains_key("x-request-id"),
        "errors carry the id too"
    );
    let resp = client
        .get(format!("{}/no-such-path", node.base))
        .send()
        .await
        .expect("sent");
    assert!(resp.headers().contains_key("x-request-id"));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// How an error body must look.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// `{"error": "...", "error_type": <type>}`
    Tei(&'static str),
    /// `{"message": "..."}`
    Cohere,
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_node_stays_up() {
    let mut node = start_node(&[("MAX_CLIENT_BATCH_SIZE", "8"), ("PAYLOAD_LIMIT", "65536")]).await;
    let long_text = "paris ".repeat(400);
    let oversized = json_body(json!({"query": "q", "texts": ["x".repeat(70_000)]}));
    let oversized_cohere = json_body(json!({"query": "q", "documents": ["x".repeat(70_000)]}));
    let nine: Vec<&str> = vec!["doc"; 9];
    let mut invalid_utf8 = br#"{"query": "caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"", "texts": ["a"]}"#);
    let mut invalid_utf8_cohere = br#"{"query": "caf"#.to_vec();
    invalid_utf8_cohere.extend_from_slice(&[0xc3, 0x28]);
    invalid_utf8_cohere.extend_from_slice(br#"", "documents": ["a"]}"#);

    let table: Vec<(&str, &str, Vec<u8>, u16, Format)> = vec![
        (
            "malformed JSON",
            "/rerank",
            b"{\"query\": \"a\", \"texts\": [".to_vec(),
            400,
            Format::Tei("validation"),
        ),
        (
            "not JSON at all",
            "/rerank",
            b"query=a".to_vec(),
            400,
            Format::Tei("validation"),
        ),
        (
            "wrong type",
            "/rerank",
            json_body(json!({"query": 1, "texts": ["a"]})),
            422,
            Format::Tei("validation"),
        ),
        (
            "texts not a list",
            "/rerank",
            json_body(json!({"query": "a", "texts": "a"})),
            422,
            Format::Tei("validation"),
        ),
        (
            "missing texts",
            "/rerank",
            json_body(json!({"query": "a"})),
            422,
            Format::Tei("validation"),
        ),
        (
            "bad truncation_direction",
            "/rerank",
            json_body(json!({"query": "a", "texts": ["b"], "truncation_direction": "Up"})),
            422,
            Format::Tei("validation"),
        ),
        (
            "empty texts",
            "/rerank",
            json_body(json!({"query": "a", "texts": []})),
            400,
            Format::Tei("empty"),
        ),
        (
            "too many texts",
            "/rerank",
            json_body(json!({"query": "a", "texts": nine})),
            413,
            Format::Tei("validation"),
        ),
        (
            "too long, truncate=false",
            "/rerank",
            json_body(json!({"query": "a", "texts": [long_text], "truncate": false})),
            413,
            Format::Tei("validation"),
        ),
        (
            "body over the payload limit",
            "/rerank",
            oversized,
            413,
            Format::Tei("validation"),
        ),
        (
            "invalid UTF-8",
            "/rerank",
            invalid_utf8,
            400,
            Format::Tei("validation"),
        ),
        (
            "malformed JSON",
            "/v1/rerank",
            b"{\"query\"".to_vec(),
            400,
            Format::Cohere,
        ),
        (
            "wrong document type",
            "/v1/rerank",
            json_body(json!({"query": "a", "documents": [1, 2]})),
            422,
            Format::Cohere,
        ),
        (
            "missing documents",
            "/v1/rerank",
            json_body(json!({"query": "a"})),
            422,
            Format::Cohere,
        ),
        (
            "empty documents",
            "/v1/rerank",
            json_body(json!({"query": "a", "documents": []})),
            400,
            Format::Cohere,
        ),
        (
            "too many documents",
            "/v1/rerank",
            json_body(json!({"query": "a", "documents": nine})),
            413,
            Format::Cohere,
        ),
        (
            "top_n = 0",
            "/v1/rerank",
            json_body(json!({"query": "a", "documents": ["b"], "top_n": 0})),
            400,
            Format::Cohere,
        ),
        (
            "top_n < 0",
            "/v2/rerank",
            json_body(json!({"query": "a", "documents": ["b"], "top_n": -3})),
            400,
            Format::Cohere,
        ),
        (
            "max_tokens_per_doc = 0",
            "/v2/rerank",
            json_body(json!({"query": "a", "documents": ["b"], "max_tokens_per_doc": 0})),
            400,
            Format::Cohere,
        ),
        (
            "body over the payload limit",
            "/v1/rerank",
            oversized_cohere,
            413,
            Format::Cohere,
        ),
        (
            "invalid UTF-8",
            "/v2/rerank",
            invalid_utf8_cohere,
            400,
            Format::Cohere,
        ),
    ];

    let mut failures = Vec::new();
    for (name, path, body, want, format) in table {
        let (status, _, value) = post(&node, path, body).await;
        let shape_ok = match format {
            Format::Tei(error_type) => {
                value["error"].is_string() && value["error_type"] == error_type
            }
            Format::Cohere => value["message"].is_string() && value.get("error").is_none(),
        };
        if status.as_u16() != want || !shape_ok {
            failures.push(format!(
                "{path} {name}: got {status} {value}, want {want} {format:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "bad-input table:\n{}",
        failures.join("\n")
    );

    // The same over-long input is accepted when the client asks for truncation, from either end.
    for direction in ["Right", "Left"] {
        let (status, _, value) = post(&node, "/rerank", json_body(json!({"query": "a", "texts": ["paris ".repeat(400)], "truncate": true, "truncation_direction": direction}))).await;
        assert_eq!(status, StatusCode::OK, "{direction}: {value}");
    }
    let (status, _, _) = post(
        &node,
        "/v1/rerank",
        json_body(json!({"query": "a", "documents": ["paris ".repeat(400)], "top_n": 50})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "Cohere truncates by default and clamps top_n"
    );

    assert!(node.is_running(), "the node survived the table");
    let health = reqwest::get(format!("{}/health", node.base))
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
}
