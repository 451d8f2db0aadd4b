//! The admin API (routes exist only with `ADMIN_TOKEN`; every call needs `Authorization:
//! Bearer …`): list nodes with their counters and their own `/admin/stats`, add a node, drain
//! and remove a node, show the ring.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::join_all;
use rerank_shared::admin_auth::deny_unless_admin;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actors::{AddNode, DrainNode, ForgetNode, GetRing, ListNodes, NodeSource};
use crate::state::CoordinatorState;

/// `GET /admin/nodes`: per node its state, ring share, in-flight, requests, errors, p50/p99,
/// and its own batcher and cache figures from its `GET /admin/stats` (null when unreachable).
pub async fn list_nodes(http: HttpRequest, state: web::Data<CoordinatorState>) -> HttpResponse {
    if let Some(denied) = deny_unless_admin(&http, state.config.admin_token.as_deref()) {
        return denied;
    }
    let nodes = state.router.send(ListNodes).await.unwrap_or_default();
    let token = state.config.admin_token.clone().unwrap_or_default();
    let stats = join_all(nodes.iter().map(|n| {
        let request = state
            .http
            .get(format!("{}/admin/stats", n.url))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(2))
            .send();
        async move {
            match request.await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap_or(Value::Null),
                _ => Value::Null,
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
    HttpResponse::Ok().json(json!({"nodes": listed}))
}

/// Body of `POST /admin/nodes`.
#[derive(Debug, Deserialize)]
pub struct NewNode {
    pub url: String,
}

/// `POST /admin/nodes {"url": "http://host:port"}`.
pub async fn add_node(
    http: HttpRequest,
    state: web::Data<CoordinatorState>,
    body: web::Json<NewNode>,
) -> HttpResponse {
    if let Some(denied) = deny_unless_admin(&http, state.config.admin_token.as_deref()) {
        return denied;
    }
    let url = body.into_inner().url;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return HttpResponse::BadRequest()
            .json(json!({"error": "url must start with http:// or https://"}));
    }
    match state
        .router
        .send(AddNode {
            url,
            source: NodeSource::Admin,
        })
        .await
    {
        Ok(id) => HttpResponse::Created().json(json!({"id": id})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

/// `DELETE /admin/nodes/{id}`: drains the node (no new requests; in-flight ones finish, up to
/// `DRAIN_TIMEOUT_MS`), then removes it. Answers when the node is gone.
pub async fn remove_node(
    http: HttpRequest,
    state: web::Data<CoordinatorState>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(denied) = deny_unless_admin(&http, state.config.admin_token.as_deref()) {
        return denied;
    }
    let id = id.into_inner();
    let Ok(Some(shared)) = state.router.send(DrainNode { id: id.clone() }).await else {
        return HttpResponse::NotFound().json(json!({"error": format!("no node {id}")}));
    };
    let started = Instant::now();
    let limit = Duration::from_millis(state.config.drain_timeout_ms);
    while shared.in_flight() > 0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left_in_flight = shared.in_flight();
    let _ = state.router.send(ForgetNode { id: id.clone() }).await;
    HttpResponse::Ok().json(json!({
        "id": id,
        "removed": true,
        "drained_ms": started.elapsed().as_millis() as u64,
        "in_flight_at_removal": left_in_flight,
    }))
}

/// `GET /admin/ring`.
pub async fn ring(http: HttpRequest, state: web::Data<CoordinatorState>) -> HttpResponse {
    if let Some(denied) = deny_unless_admin(&http, state.config.admin_token.as_deref()) {
        return denied;
    }
    match state.router.send(GetRing).await {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}
