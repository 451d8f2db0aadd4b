//! Service endpoints: `GET /health`, `GET /info`, `GET /metrics`, `GET /openapi.json`.

use actix_web::{web, HttpResponse};
use rerank_shared::api::health::{
    Health, HealthUnavailable, Info, ModelHealth, UnavailableStatus, DRAINING_HEADER,
};

use crate::actors::GetPipelineHealth;
use crate::state::NodeState;
use rerank_engine::ModelKind;

fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::CrossEncoder => "cross-encoder",
        ModelKind::BiEncoder => "bi-encoder",
    }
}

/// The model block of `/health` and `/admin/stats`.
pub fn model_health(state: &NodeState) -> ModelHealth {
    let info = state.backend.info();
    ModelHealth {
        id: info.model_id.clone(),
        family: info.family.clone(),
        architecture: info.architecture.clone(),
        kind: kind_name(info.kind).into(),
        device: info.device.clone(),
        dtype: info.dtype.clone(),
        quantization: info.quantization.clone(),
    }
}

/// `GET /health`: the guide's fields; 503 `draining` (with [`DRAINING_HEADER`]) once the node
/// is shutting down, so that coordinators and load balancers stop sending it work.
pub async fn health(state: web::Data<NodeState>) -> HttpResponse {
    if state.draining.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .insert_header((DRAINING_HEADER, "true"))
            .force_close()
            .json(HealthUnavailable {
                status: UnavailableStatus::Draining,
                error: "shutting down: finishing in-flight requests, taking no new ones".into(),
            });
    }
    let pipeline = match state.node.send(GetPipelineHealth).await {
        Ok(h) => h,
        Err(e) => {
            return HttpResponse::ServiceUnavailable().json(HealthUnavailable {
                status: UnavailableStatus::Unavailable,
                error: e.to_string(),
            })
        }
    };
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        node_id: state.node_id.clone(),
        model: model_health(&state),
        micro_batcher: pipeline.micro_batcher,
        distributed_cache: pipeline.distributed_cache,
    })
}

/// `GET /info`: the model and the node's limits.
pub async fn info(state: web::Data<NodeState>) -> HttpResponse {
    let info = state.backend.info();
    let cfg = &state.config;
    HttpResponse::Ok().json(Info {
        model_id: info.model_id.clone(),
        model_type: "reranker".into(),
        family: info.family.clone(),
        architecture: info.architecture.clone(),
        kind: kind_name(info.kind).into(),
        dtype: info.dtype.clone(),
        quantization: info.quantization.clone(),
        device: info.device.clone(),
        max_input_length: info.max_input_length,
        max_client_batch_size: cfg.max_client_batch_size,
        max_batch_tokens: cfg.max_batch_tokens,
        max_parallel_requests: cfg.max_parallel_requests,
        num_labels: info.num_labels,
        pooling: info.pooling.clone(),
        weight_bytes: info.weight_bytes,
        kernels: info.kernels.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        node_id: state.node_id.clone(),
    })
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<NodeState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// `GET /openapi.json`: the document derived from the wire types.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(rerank_shared::api::openapi::node_document())
}
