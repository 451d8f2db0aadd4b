//! `GET /health` (the coordinator and a summary of its nodes), `GET /metrics`,
//! `GET /openapi.json` (the same client API as a node).

use actix_web::{web, HttpResponse};
use rerank_shared::api::health::{CoordinatorHealth, CoordinatorNodeSummary};

use crate::actors::{ListNodes, NodeState};
use crate::state::CoordinatorState;

/// `GET /health`: `ok` with every node healthy, `degraded` with some, `unavailable` (503) with
/// none, `draining` (503) once the coordinator is shutting down.
pub async fn health(state: web::Data<CoordinatorState>) -> HttpResponse {
    let nodes = state.router.send(ListNodes).await.unwrap_or_default();
    let healthy = nodes
        .iter()
        .filter(|n| n.state == NodeState::Healthy)
        .count();
    let draining = state.draining.is_draining();
    let status = match healthy {
        _ if draining => "draining",
        0 => "unavailable",
        h if h == nodes.len() => "ok",
        _ => "degraded",
    };
    let body = CoordinatorHealth {
        status: status.into(),
        role: "coordinator".into(),
        routing: state.config.routing,
        nodes_total: nodes.len(),
        nodes_healthy: healthy,
        nodes: nodes
            .iter()
            .map(|n| CoordinatorNodeSummary {
                id: n.id.clone(),
                url: n.url.clone(),
                state: n.state.as_str().into(),
            })
            .collect(),
    };
    if healthy == 0 || draining {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// `GET /metrics`.
pub async fn metrics(state: web::Data<CoordinatorState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// `GET /openapi.json`: a node's rerank operations, the coordinator's own `/health`.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(rerank_shared::api::openapi::coordinator_document())
}
