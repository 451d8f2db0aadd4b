//! The OpenAPI documents a node and a coordinator serve: well-formed OpenAPI 3.1, every route and
//! schema named, every `$ref` resolvable, every schema valid JSON Schema 2020-12, the
//! constraints the handlers enforce visible, and real bodies of each shape valid against their
//! schema (checked with `boon`, a JSON Schema validator independent of `utoipa`).

use rerank_shared::api::cohere::{
    ApiVersion, BilledUnits, CohereError, CohereRerankRequest, CohereRerankResponse, Document,
    Meta, RerankResult, ResultDocument, Usage,
};
use rerank_shared::api::health::{
    CoordinatorHealth, DistributedCacheHealth, Health, HealthUnavailable, Info, MicroBatcherHealth,
    ModelHealth, UnavailableStatus,
};
use rerank_shared::api::openapi::{coordinator_document, node_document, RERANK_ERROR_STATUSES};
use rerank_shared::api::tei::{ErrorResponse, ErrorType, Rank, RerankRequest};
use rerank_shared::api::BestChunk;
use serde_json::{json, Value};

const BASE: &str = "http://rerank.invalid/openapi.json";

const RERANK_PATHS: [&str; 3] = ["/rerank", "/v1/rerank", "/v2/rerank"];

fn node() -> Value {
    serde_json::to_value(node_document()).expect("serializable")
}

fn coordinator() -> Value {
    serde_json::to_value(coordinator_document()).expect("serializable")
}

/// Every `$ref` in `value`, with the JSON path where it sits.
fn refs(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    out.push((at.clone(), child.as_str().unwrap_or_default().to_string()));
                } else {
                    refs(child, format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A validator for the schema at `pointer` (a JSON pointer into `doc`), resolving `$ref`s
/// against the whole document as OpenAPI 3.1 does.
struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new(doc: &Value, pointer: &str) -> Self {
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler
            .add_resource(BASE, doc.clone())
            .expect("the document loads as a JSON Schema resource");
        let mut schemas = boon::Schemas::new();
        let index = compiler
            .compile(&format!("{BASE}#{pointer}"), &mut schemas)
            .unwrap_or_else(|e| panic!("{pointer} is not valid JSON Schema 2020-12: {e:#}"));
        Self { schemas, index }
    }

    fn component(doc: &Value, name: &str) -> Self {
        Self::new(doc, &format!("/components/schemas/{name}"))
    }

    fn check(&self, instance: &Value) -> Result<(), String> {
        self.schemas
            .validate(instance, self.index)
            .map_err(|e| format!("{e}"))
    }

    fn assert_valid(&self, instance: &Value) {
        if let Err(e) = self.check(instance) {
            panic!("{instance} rejected: {e}");
        }
    }
}

fn response_schema(doc: &Value, path: &str, method: &str, status: &str) -> String {
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    );
    assert!(
        doc.pointer(&pointer).is_some(),
        "no JSON body for {method} {path} {status}"
    );
    pointer
}

#[test]
fn documents_are_openapi_3_1_and_name_every_route() {
    let node_routes = [
        ("/rerank", "post"),
        ("/v1/rerank", "post"),
        ("/v2/rerank", "post"),
        ("/health", "get"),
        ("/info", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (doc, routes) in [
        (node(), &node_routes[..]),
        (coordinator(), &node_routes[..3]),
    ] {
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "rerank-cluster");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        // What OpenAPI 3.1 requires of the document's objects (schemathesis, which loads the
        // served document in scripts/schemathesis.sh, also checks it against the OAS schema).
        assert!(doc["paths"].is_object() && doc["components"]["schemas"].is_object());
        for (path, item) in doc["paths"].as_object().expect("paths") {
            assert!(path.starts_with('/'), "{path}");
            for method in item.as_object().expect("path item").keys() {
                assert!(
                    ["get", "post"].contains(&method.as_str()),
                    "{method} {path}"
                );
            }
        }

        for (path, method) in routes {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} missing");
            assert!(operation["operationId"].is_string(), "{method} {path}");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.contains_key("200"), "{method} {path} has no 200");
            for (status, response) in responses {
                let described = response["description"].as_str().unwrap_or_default();
                assert!(
                    !described.is_empty(),
                    "{method} {path} {status} undescribed"
                );
            }
        }
        for path in RERANK_PATHS {
            let body = &doc["paths"][path]["post"]["requestBody"];
            assert_eq!(body["required"], true, "{path}");
            assert!(body["content"]["application/json"]["schema"]["$ref"].is_string());
        }
    }
    let node = node();
    let coordinator = coordinator();
    assert_eq!(
        node["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Health"
    );
    assert_eq!(
        coordinator["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/CoordinatorHealth"
    );
    assert!(
        coordinator["paths"].get("/info").is_none(),
        "a coordinator has no /info"
    );
    assert!(
        node["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object()
    );
}

#[test]
fn every_ref_resolves_and_every_schema_is_json_schema_2020_12() {
    for doc in [node(), coordinator()] {
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(
            found.len() > 20,
            "expected many references, found {}",
            found.len()
        );
        for (at, target) in &found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: non-local $ref {target}"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: dangling $ref {target}"
            );
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in schemas.keys() {
            Validator::component(&doc, name);
        }
    }
    let node = node();
    let names: Vec<&String> = node["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
        .collect();
    for name in [
        "RerankRequest",
        "TruncationDirection",
        "Rank",
        "ErrorResponse",
        "ErrorType",
        "CohereRerankRequest",
        "Document",
        "CohereRerankResponse",
        "RerankResult",
        "ResultDocument",
        "Usage",
        "Meta",
        "ApiVersion",
        "BilledUnits",
        "CohereError",
        "Health",
        "HealthUnavailable",
        "UnavailableStatus",
        "ModelHealth",
        "MicroBatcherHealth",
        "DistributedCacheHealth",
        "Info",
    ] {
        assert!(names.iter().any(|n| *n == name), "schema {name} missing");
    }
}

#[test]
fn rerank_endpoints_document_every_error_in_their_own_format() {
    let statuses: Vec<u16> = RERANK_ERROR_STATUSES.iter().map(|(s, _)| *s).collect();
    for required in [400, 408, 413, 415, 422, 429, 503, 504] {
        assert!(statuses.contains(&required), "{required} undocumented");
    }
    for doc in [node(), coordinator()] {
        for (path, error_schema) in [
            ("/rerank", "ErrorResponse"),
            ("/v1/rerank", "CohereError"),
            ("/v2/rerank", "CohereError"),
        ] {
            let responses = &doc["paths"][path]["post"]["responses"];
            for status in &statuses {
                let schema =
                    &responses[status.to_string()]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    *schema,
                    format!("#/components/schemas/{error_schema}"),
                    "{path} {status}"
                );
            }
            assert!(
                responses["429"]["headers"]["retry-after"]["schema"].is_object(),
                "{path}: 429 without Retry-After"
            );
            assert!(responses.get("499").is_none(), "nobody reads a 499");
        }
    }
}

#[test]
fn constraints_the_handlers_enforce_are_in_the_schemas() {
    let doc = node();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["RerankRequest"]["properties"]["texts"]["minItems"],
        1
    );
    assert_eq!(
        schemas["RerankRequest"]["required"],
        json!(["query", "texts"])
    );
    let cohere = &schemas["CohereRerankRequest"];
    assert_eq!(cohere["required"], json!(["query", "documents"]));
    assert_eq!(cohere["properties"]["documents"]["minItems"], 1);
    assert_eq!(cohere["properties"]["top_n"]["minimum"], 1);
    assert_eq!(cohere["properties"]["max_tokens_per_doc"]["minimum"], 1);

    // Documents: a string or an object with a string `text` (other fields ignored).
    let document = Validator::component(&doc, "Document");
    document.assert_valid(&json!("plain"));
    document.assert_valid(&json!({"text": "wrapped", "title": "ignored"}));
    assert!(document.check(&json!({"title": "no text"})).is_err());
    assert!(document.check(&json!(7)).is_err());

    // The error classes in the schema are exactly what the code can render.
    let all = [
        ErrorType::Validation,
        ErrorType::Empty,
        ErrorType::Tokenizer,
        ErrorType::Overloaded,
        ErrorType::Backend,
        ErrorType::Unhealthy,
    ];
    let rendered: Vec<Value> = all
        .iter()
        .map(|t| serde_json::to_value(t).expect("serializable"))
        .collect();
    assert_eq!(schemas["ErrorType"]["enum"], Value::Array(rendered));

    // What the schema calls a valid request, the node's types accept; what it calls invalid
    // (below a minimum, an empty list) the handlers reject with 400.
    let tei = Validator::component(&doc, "RerankRequest");
    for valid in [
        json!({"query": "q", "texts": ["a"]}),
        json!({"query": "q", "texts": ["a", "b"], "raw_scores": true, "return_text": true,
               "truncate": null, "truncation_direction": "Left"}),
    ] {
        tei.assert_valid(&valid);
        serde_json::from_value::<RerankRequest>(valid).expect("the node accepts it");
    }
    assert!(tei.check(&json!({"query": "q", "texts": []})).is_err());
    assert!(tei.check(&json!({"query": "q"})).is_err());
    let cohere = Validator::component(&doc, "CohereRerankRequest");
    for valid in [
        json!({"query": "q", "documents": ["a", {"text": "b"}]}),
        json!({"model": null, "query": "q", "documents": ["a"], "top_n": 1,
               "return_documents": false, "max_tokens_per_doc": 16}),
    ] {
        cohere.assert_valid(&valid);
        serde_json::from_value::<CohereRerankRequest>(valid).expect("the node accepts it");
    }
    for invalid in [
        json!({"query": "q", "documents": []}),
        json!({"query": "q", "documents": ["a"], "top_n": 0}),
        json!({"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
    ] {
        assert!(cohere.check(&invalid).is_err(), "{invalid} accepted");
    }
}

fn model_health() -> ModelHealth {
    ModelHealth {
        id: "models/all-MiniLM-L6-v2".into(),
        family: "bert".into(),
        architecture: "bert".into(),
        kind: "cross-encoder".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    }
}

#[test]
fn real_bodies_of_each_shape_match_their_schemas() {
    let doc = node();
    let ok = |path: &str, method: &str, body: Value| {
        Validator::new(&doc, &response_schema(&doc, path, method, "200")).assert_valid(&body)
    };
    let ranks = vec![
        Rank {
            index: 1,
            score: 0.9,
            text: Some("b".into()),
            best_chunk: Some(BestChunk {
                index: 2,
                start: 120,
                end: 410,
            }),
        },
        Rank {
            index: 0,
            score: 0.1,
            text: None,
            best_chunk: None,
        },
    ];
    ok(
        "/rerank",
        "post",
        serde_json::to_value(&ranks).expect("json"),
    );
    let cohere = CohereRerankResponse {
        id: "req-1".into(),
        model: "m".into(),
        results: vec![
            RerankResult {
                index: 0,
                relevance_score: 0.5,
                document: Some(ResultDocument { text: "a".into() }),
                best_chunk: Some(BestChunk {
                    index: 0,
                    start: 0,
                    end: 1,
                }),
            },
            RerankResult {
                index: 1,
                relevance_score: 0.25,
                document: None,
                best_chunk: None,
            },
        ],
        usage: Usage { total_tokens: 12 },
        meta: Meta {
            api_version: ApiVersion {
                version: "2".into(),
            },
            billed_units: BilledUnits { search_units: 1 },
        },
    };
    for path in ["/v1/rerank", "/v2/rerank"] {
        ok(path, "post", serde_json::to_value(&cohere).expect("json"));
    }
    let health = Health {
        status: "ok".into(),
        node_id: "n1".into(),
        model: model_health(),
        micro_batcher: MicroBatcherHealth::default(),
        distributed_cache: DistributedCacheHealth::default(),
    };
    ok(
        "/health",
        "get",
        serde_json::to_value(&health).expect("json"),
    );
    let info = Info {
        model_id: "m".into(),
        model_type: "reranker".into(),
        family: "bert".into(),
        architecture: "bert".into(),
        kind: "cross-encoder".into(),
        dtype: "f32".into(),
        quantization: "none".into(),
        device: "cpu".into(),
        max_input_length: 512,
        max_client_batch_size: 1000,
        max_batch_tokens: 16384,
        max_parallel_requests: 8,
        num_labels: None,
        pooling: Some("mean".into()),
        weight_bytes: 1,
        kernels: "candle".into(),
        version: "0.1.0".into(),
        node_id: "n1".into(),
    };
    ok("/info", "get", serde_json::to_value(&info).expect("json"));
    let unavailable = HealthUnavailable {
        status: UnavailableStatus::Unavailable,
        error: "mailbox closed".into(),
    };
    let health_503 = Validator::new(&doc, &response_schema(&doc, "/health", "get", "503"));
    health_503.assert_valid(&serde_json::to_value(&unavailable).expect("json"));
    let draining = HealthUnavailable {
        status: UnavailableStatus::Draining,
        error: "shutting down".into(),
    };
    let draining = serde_json::to_value(&draining).expect("json");
    assert_eq!(draining["status"], "draining");
    health_503.assert_valid(&draining);
    assert!(health_503
        .check(&json!({"status": "resting", "error": "a status the document does not list"}))
        .is_err());
    ok("/openapi.json", "get", doc.clone());

    for (status, _) in RERANK_ERROR_STATUSES {
        let status = status.to_string();
        let tei = Validator::new(&doc, &response_schema(&doc, "/rerank", "post", &status));
        for error_type in [
            ErrorType::Validation,
            ErrorType::Overloaded,
            ErrorType::Unhealthy,
        ] {
            let body = ErrorResponse {
                error: "why".into(),
                error_type,
            };
            tei.assert_valid(&serde_json::to_value(&body).expect("json"));
        }
        assert!(tei.check(&json!({"message": "a Cohere body"})).is_err());
        let cohere = Validator::new(&doc, &response_schema(&doc, "/v1/rerank", "post", &status));
        cohere.assert_valid(
            &serde_json::to_value(CohereError {
                message: "why".into(),
            })
            .expect("json"),
        );
        assert!(cohere
            .check(&json!({"error": "a TEI body", "error_type": "validation"}))
            .is_err());
    }

    // The coordinator's `/health` and the errors it makes up, as it renders them today.
    let doc = coordinator();
    let health = Validator::new(&doc, &response_schema(&doc, "/health", "get", "200"));
    let today = json!({
        "status": "degraded", "role": "coordinator", "routing": "consistent_hash",
        "nodes_total": 2, "nodes_healthy": 1,
        "nodes": [{"id": "a", "url": "http://127.0.0.1:1", "state": "healthy"},
                  {"id": "b", "url": "http://127.0.0.1:2", "state": "unhealthy"}],
    });
    health.assert_valid(&today);
    let typed: CoordinatorHealth = serde_json::from_value(today.clone()).expect("its type");
    assert_eq!(serde_json::to_value(&typed).expect("json"), today);
    let mut draining = today.clone();
    draining["status"] = json!("draining");
    Validator::new(&doc, &response_schema(&doc, "/health", "get", "503")).assert_valid(&draining);
    let tei_503 = Validator::new(&doc, &response_schema(&doc, "/rerank", "post", "503"));
    tei_503.assert_valid(
        &json!({"error": "no healthy node to serve the request", "error_type": "unhealthy"}),
    );

    // And the validator does reject: a result without its score, or a score past the bounds
    // of a cosine (an unclamped 1.0000001 was once served).
    let result = Validator::component(&doc, "RerankResult");
    assert!(result.check(&json!({"index": 0})).is_err());
    assert!(result
        .check(&json!({"index": 0, "relevance_score": 1.0000001}))
        .is_err());
    result.assert_valid(&json!({"index": 0, "relevance_score": -1.0}));
    // Document round trip: both forms parse.
    let docs: Vec<Document> =
        serde_json::from_value(json!(["a", {"text": "b"}])).expect("documents");
    assert_eq!(docs[1].text(), "b");
}
