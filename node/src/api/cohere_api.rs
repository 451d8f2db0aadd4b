//! `POST /v1/rerank` and `POST /v2/rerank` in the Cohere/Jina shape.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use rerank_shared::api::cohere::{
    ApiVersion, BilledUnits, CohereRerankRequest, CohereRerankResponse, Meta, RerankResult,
    ResultDocument, Usage,
};

use super::error::{ApiError, ApiErrorKind, CohereApiError};
use crate::scoring::{
    check_document_count, chunk_options, ranking, score_documents, sigmoid, timing_headers,
};
use crate::state::NodeState;
use rerank_engine::{ModelKind, TruncationOptions};
use rerank_shared::request_id::RequestId;

/// The API generation a request came in on; it sets defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohereVersion {
    /// Cohere v1 and Jina: documents returned by default.
    V1,
    /// Cohere v2: documents not returned by default.
    V2,
}

/// `POST /v1/rerank`.
pub async fn rerank_v1(
    http: HttpRequest,
    state: web::Data<NodeState>,
    body: web::Json<CohereRerankRequest>,
) -> Result<HttpResponse, CohereApiError> {
    rerank(http, state, body.into_inner(), CohereVersion::V1).await
}

/// `POST /v2/rerank`.
pub async fn rerank_v2(
    http: HttpRequest,
    state: web::Data<NodeState>,
    body: web::Json<CohereRerankRequest>,
) -> Result<HttpResponse, CohereApiError> {
    rerank(http, state, body.into_inner(), CohereVersion::V2).await
}

fn positive(field: &str, value: Option<i64>) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v >= 1 => Ok(Some(usize::try_from(v).unwrap_or(usize::MAX))),
        Some(v) => Err(ApiError::new(
            ApiErrorKind::InvalidField,
            format!("invalid request: {field} must be at least 1, got {v}"),
        )),
    }
}

async fn rerank(
    http: HttpRequest,
    state: web::Data<NodeState>,
    req: CohereRerankRequest,
    version: CohereVersion,
) -> Result<HttpResponse, CohereApiError> {
    check_document_count(&state, req.documents.len(), "documents")?;
    let top_n = positive("top_n", req.top_n)?;
    let max_tokens_per_doc = positive("max_tokens_per_doc", req.max_tokens_per_doc)?;
    let chunks = chunk_options(&state, req.max_chunks_per_doc, req.chunk_overlap)?;
    let return_documents = req.return_documents.unwrap_or(version == CohereVersion::V1);
    let texts: Vec<String> = req.documents.iter().map(|d| d.text().to_string()).collect();
    let opts = TruncationOptions {
        truncate: true,
        max_tokens_per_doc,
        ..TruncationOptions::default()
    };
    let outcome = score_documents(
        &http,
        &state,
        req.query,
        texts.clone(),
        req.instruction,
        opts,
        chunks,
    )
    .await?;

    let info = state.backend.info();
    let normalize = info.kind == ModelKind::CrossEncoder;
    let scores: Vec<f32> = outcome
        .raw_scores
        .iter()
        .map(|&s| if normalize { sigmoid(s) } else { s })
        .collect();
    let results: Vec<RerankResult> = ranking(&scores)
        .into_iter()
        .take(top_n.unwrap_or(usize::MAX))
        .map(|index| RerankResult {
            index,
            relevance_score: scores[index],
            document: return_documents.then(|| ResultDocument {
                text: texts[index].clone(),
            }),
            best_chunk: outcome
                .best_chunks
                .as_ref()
                .and_then(|b| b.get(index).copied()),
        })
        .collect();
    let id = http
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let body = CohereRerankResponse {
        id,
        model: info.model_id.clone(),
        results,
        usage: Usage {
            total_tokens: outcome.total_tokens,
        },
        meta: Meta {
            api_version: ApiVersion {
                version: match version {
                    CohereVersion::V1 => "1".into(),
                    CohereVersion::V2 => "2".into(),
                },
            },
            billed_units: BilledUnits { search_units: 1 },
        },
    };
    let mut response = HttpResponse::Ok();
    for header in timing_headers(&outcome) {
        response.insert_header(header);
    }
    Ok(response.json(body))
}
