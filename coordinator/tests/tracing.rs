//! Traces across processes: a coordinator and a node export spans to an OTLP/HTTP receiver run
//! inside this test; one request must give one trace with the expected parent/child links.

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{free_port, minilm_dir, NodeProcess};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct SpanRecord {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

type Store = Arc<Mutex<Vec<SpanRecord>>>;

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

async fn collect(body: web::Bytes, store: web::Data<Store>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(SpanRecord {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    if let Ok(mut s) = store.lock() {
        s.extend(received);
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(Vec::<u8>::new())
}

/// Starts the OTLP/HTTP receiver; returns its base URL and what it receives.
fn start_receiver() -> (String, Store) {
    let store: Store = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::new(store.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 << 20))
            .route("/v1/traces", web::post().to(collect))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("receiver binds");
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), store)
}

fn find<'a>(spans: &'a [SpanRecord], service: &str, name: &str) -> Option<&'a SpanRecord> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

fn print_tree(spans: &[SpanRecord], parent: &[u8], depth: usize) {
    for s in spans.iter().filter(|s| s.parent_span_id == parent) {
        let attrs: Vec<String> = s
            .attributes
            .iter()
            .filter(|(k, _)| {
                k.starts_with("batch.") || k.as_str() == "node" || k.as_str() == "pairs"
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        eprintln!(
            "{}{} [{}] {}",
            "  ".repeat(depth),
            s.name,
            s.service,
            attrs.join(" ")
        );
        print_tree(spans, &s.span_id, depth + 1);
    }
}

#[actix_web::test]
async fn one_request_gives_one_trace_across_coordinator_and_node() {
    let model = minilm_dir();
    let model = model.to_string_lossy().to_string();
    let (endpoint, store) = start_receiver();
    let node = NodeProcess::start(&[
        ("MODEL_PATH", model.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ])
    .await;
    let coordinator = NodeProcess::start_binary(
        Path::new(env!("CARGO_BIN_EXE_rerank-coordinator")),
        free_port(),
        &[
            ("COORDINATOR_NODES", node.base.as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ],
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/rerank", coordinator.base))
        .header("x-request-id", "trace-me")
        .json(&json!({"query": "What is the capital of France?", "texts": ["Paris is the capital of France.", "Berlin is in Germany."]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let started = Instant::now();
    let spans = loop {
        let spans = store.lock().map(|s| s.clone()).unwrap_or_default();
        let gateway = spans.iter().find(|s| {
            s.name == "gateway.request"
                && s.attributes.get("request_id").map(String::as_str) == Some("trace-me")
        });
        if let Some(g) = gateway {
            let trace: Vec<SpanRecord> = spans
                .iter()
                .filter(|s| s.trace_id == g.trace_id)
                .cloned()
                .collect();
            if find(&trace, "rerank-node", "model.forward").is_some()
                && find(&trace, "rerank-node", "node.request").is_some()
            {
                break trace;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "spans never arrived: {spans:#?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };

    let gateway = find(&spans, "rerank-coordinator", "gateway.request").expect("gateway span");
    let route = find(&spans, "rerank-coordinator", "route").expect("route span");
    let forward = find(&spans, "rerank-coordinator", "forward").expect("forward span");
    let node_request = find(&spans, "rerank-node", "node.request").expect("node request span");
    let local = find(&spans, "rerank-node", "cache.local").expect("local cache span");
    let queue = find(&spans, "rerank-node", "batch.queue").expect("batch queue span");
    let model_forward = find(&spans, "rerank-node", "model.forward").expect("model forward span");
    assert!(
        gateway.parent_span_id.is_empty(),
        "the gateway span is the root"
    );
    assert_eq!(route.parent_span_id, gateway.span_id);
    assert_eq!(forward.parent_span_id, gateway.span_id);
    assert_eq!(
        node_request.parent_span_id, forward.span_id,
        "traceparent crossed coordinator → node"
    );
    assert_eq!(local.parent_span_id, node_request.span_id);
    assert_eq!(queue.parent_span_id, node_request.span_id);
    assert_eq!(model_forward.parent_span_id, node_request.span_id);
    assert_eq!(
        model_forward
            .attributes
            .get("batch.pairs")
            .map(String::as_str),
        Some("2")
    );
    assert!(model_forward.attributes.contains_key("batch.tokens"));

    eprintln!(
        "trace {}:",
        spans[0]
            .trace_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    print_tree(&spans, &[], 1);
}

#[actix_web::test]
async fn a_dead_collector_never_slows_or_fails_requests() {
    let model = minilm_dir();
    let model = model.to_string_lossy().to_string();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let node = NodeProcess::start(&[
        ("MODEL_PATH", model.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str()),
    ])
    .await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let started = Instant::now();
        let r = client
            .post(format!("{}/rerank", node.base))
            .json(&json!({"query": format!("question {i}"), "texts": ["a", "b"]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
}
