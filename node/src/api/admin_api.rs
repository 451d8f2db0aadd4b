//! `GET /admin/stats`: the node's own view for operators and the coordinator's admin API.
//! Registered only when `ADMIN_TOKEN` is set; requests must carry `Authorization: Bearer …`.

use actix_web::{web, HttpRequest, HttpResponse};
use rerank_shared::admin_auth::deny_unless_admin;
use rerank_shared::api::health::NodeStats;
use serde_json::json;

use super::service_api::model_health;
use crate::actors::GetPipelineHealth;
use crate::state::NodeState;

/// `GET /admin/stats`.
pub async fn stats(http: HttpRequest, state: web::Data<NodeState>) -> HttpResponse {
    if let Some(denied) = deny_unless_admin(&http, state.config.admin_token.as_deref()) {
        return denied;
    }
    let pipeline = match state.node.send(GetPipelineHealth).await {
        Ok(p) => p,
        Err(e) => return HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    };
    let m = &state.metrics;
    HttpResponse::Ok().json(NodeStats {
        node_id: state.node_id.clone(),
        model: model_health(&state),
        micro_batcher: pipeline.micro_batcher,
        distributed_cache: pipeline.distributed_cache,
        local_cache_entries: pipeline.local_cache_entries,
        running_requests: pipeline.running_requests,
        queued_requests: pipeline.queued_requests,
        pairs_requested: m.pairs_requested.get(),
        pairs_computed: m.pairs_computed.get(),
        local_cache_hits: m.local_cache_hits.get(),
        redis_hits: m.redis_hits.get(),
        dedup_hits: m.dedup_hits.get(),
        requests_rejected: m.requests_rejected.get(),
    })
}
