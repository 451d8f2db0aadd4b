//! `POST /rerank` in text-embeddings-inference's shape.

use actix_web::{web, HttpRequest, HttpResponse};
use rerank_shared::api::tei::{Rank, RerankRequest};
use rerank_shared::api::TruncationDirection;

use super::error::TeiError;
use crate::scoring::{
    check_document_count, chunk_options, ranking, score_documents, sigmoid, timing_headers,
};
use crate::state::NodeState;
use rerank_engine::{ModelKind, TruncationOptions};

/// Scores `texts` against `query`; returns `[{index, score, text?}]`, best first.
///
/// Scores are the sigmoid of the logit unless `raw_scores`; a bi-encoder's score is its cosine
/// similarity either way.
pub async fn rerank(
    http: HttpRequest,
    state: web::Data<NodeState>,
    body: web::Json<RerankRequest>,
) -> Result<HttpResponse, TeiError> {
    let req = body.into_inner();
    check_document_count(&state, req.texts.len(), "texts")?;
    let chunks = chunk_options(&state, req.max_chunks_per_doc, req.chunk_overlap)?;
    let opts = TruncationOptions {
        truncate: req.truncate.unwrap_or(false),
        direction: match req.truncation_direction {
            TruncationDirection::Left => rerank_engine::TruncationDirection::Left,
            TruncationDirection::Right => rerank_engine::TruncationDirection::Right,
        },
        max_tokens_per_doc: None,
    };
    let texts = req.return_text.then(|| req.texts.clone());
    let outcome = score_documents(
        &http,
        &state,
        req.query,
        req.texts,
        req.instruction,
        opts,
        chunks,
    )
    .await?;
    let normalize = !req.raw_scores && state.backend.info().kind == ModelKind::CrossEncoder;
    let scores: Vec<f32> = outcome
        .raw_scores
        .iter()
        .map(|&s| if normalize { sigmoid(s) } else { s })
        .collect();
    let ranks: Vec<Rank> = ranking(&scores)
        .into_iter()
        .map(|index| Rank {
            index,
            score: scores[index],
            text: texts.as_ref().map(|t| t[index].clone()),
            best_chunk: outcome
                .best_chunks
                .as_ref()
                .and_then(|b| b.get(index).copied()),
        })
        .collect();
    let mut response = HttpResponse::Ok();
    for header in timing_headers(&outcome) {
        response.insert_header(header);
    }
    Ok(response.json(ranks))
}
