//! The admin API (routes exist only with `ADMIN_TOKEN`; [`super::admin_guard`] checks the
//! bearer token in front of all of them): list nodes with their counters and their own
//! `/admin/stats`, add a node, drain and remove a node, show the ring.

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, GatewayError};
use crate::actors::{AddNode, DrainNode, ForgetNode, GetRing, ListNodes, NodeSource};
use crate::state::CoordinatorState;

/// How long `GET /admin/nodes` waits for each node's own stats.
const NODE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a member from `source` may be sent the admin token (to read its `/admin/stats`).
/// Only addresses the coordinator's own configuration (its node URLs, or the name it resolves
/// for nodes), an operator, or a registration signed with `CLUSTER_SECRET` named: never one
/// that merely appeared in Redis. Exhaustive, so that a new source of members must decide.
fn trusted_with_admin_token(source: NodeSource) -> bool {
    match source {
        NodeSource::Static | NodeSource::Admin | NodeSource::Registry | NodeSource::Dns => true,
    }
}

/// `GET /admin/nodes`: per node its state, ring share, in-flight, requests, errors, p50/p99,
/// and its own batcher and cache figures from its `GET /admin/stats` (null when unreachable).
pub async fn list_nodes(state: web::Data<CoordinatorState>) -> Result<HttpResponse, ApiError> {
    let nodes = state
        .router
        .send(ListNodes)
        .await
        .map_err(|_| GatewayError::ShuttingDown)?;
    let token = state.config.admin_token.as_deref().unwrap_or_default();
    let stats = join_all(nodes.iter().map(|n| {
        let request = trusted_with_admin_token(n.source).then(|| {
            state
                .http
                .get(format!("{}/admin/stats", n.url))
                .bearer_auth(token)
                .timeout(NODE_STATS_TIMEOUT)
                .send()
        });
        async move {
            match request {
                Some(request) => match request.await {
                    Ok(r) if r.status().is_success() => {
                        r.json::<Value>().await.unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                },
                None => Value::Null,
            }
        }
    }))
    .await;
    let listed: Vec<Value> = nodes
        .iter()
        .zip(stats)
        .map(|(n, s)| {
            let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
            v["node_stats"] = s;
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"nodes": listed})))
}

/// Body of `POST /admin/nodes`.
#[derive(Debug, Deserialize)]
pub struct NewNode {
    pub url: String,
}

/// `POST /admin/nodes {"url": "http://host:port"}`.
pub async fn add_node(
    state: web::Data<CoordinatorState>,
    body: web::Json<NewNode>,
) -> Result<HttpResponse, ApiError> {
    let url = body.into_inner().url;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(
            GatewayError::InvalidRequest("url must start with http:// or https://".into()).into(),
        );
    }
    let id = state
        .router
        .send(AddNode {
            url,
            source: NodeSource::Admin,
        })
        .await
        .map_err(|_| GatewayError::ShuttingDown)?;
    Ok(HttpResponse::Created().json(json!({"id": id})))
}

/// `DELETE /admin/nodes/{id}`: drains the node (no new requests; in-flight ones finish, up to
/// `DRAIN_TIMEOUT_MS`), then removes it. Answers when the node is gone. A self-registered node
/// stays out until it registers anew.
pub async fn remove_node(
    state: web::Data<CoordinatorState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let shared = state
        .router
        .send(DrainNode { id: id.clone() })
        .await
        .map_err(|_| GatewayError::ShuttingDown)?
        .ok_or_else(|| GatewayError::NoSuchNode(id.clone()))?;
    let started = Instant::now();
    let limit = Duration::from_millis(state.config.drain_timeout_ms);
    while shared.in_flight() > 0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left_in_flight = shared.in_flight();
    state
        .router
        .send(ForgetNode { id: id.clone() })
        .await
        .map_err(|_| GatewayError::ShuttingDown)?;
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "removed": true,
        "drained_ms": started.elapsed().as_millis() as u64,
        "in_flight_at_removal": left_in_flight,
    })))
}

/// `GET /admin/ring`.
pub async fn ring(state: web::Data<CoordinatorState>) -> Result<HttpResponse, ApiError> {
    let view = state
        .router
        .send(GetRing)
        .await
        .map_err(|_| GatewayError::ShuttingDown)?;
    Ok(HttpResponse::Ok().json(view))
}
