//! What both API shapes share: limits, the call into the node actor, ranking and headers.

use std::time::Duration;

use actix_web::{web, HttpRequest};
use tokio_util::sync::CancellationToken;

use crate::actors::{Rerank, RerankOutcome};
use crate::api::disconnect::ClientSocket;
use crate::api::error::{ApiError, ApiErrorKind};
use crate::state::NodeState;
use rerank_engine::{ChunkOptions, TruncationOptions};

/// Checks the document count against the node's limits.
pub fn check_document_count(state: &NodeState, count: usize, field: &str) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::new(
            ApiErrorKind::Empty,
            format!("`{field}` cannot be empty"),
        ));
    }
    let max = state.config.max_client_batch_size;
    if count > max {
        return Err(ApiError::new(
            ApiErrorKind::TooLarge,
            format!("batch size {count} > maximum allowed batch size {max}"),
        ));
    }
    Ok(())
}

/// A request's chunking: its own `max_chunks_per_doc` / `chunk_overlap`, else the node's
/// `MAX_CHUNKS_PER_DOC` / `CHUNK_OVERLAP_TOKENS`; `None` when each document is one (truncated)
/// input, which is exactly the behaviour and cost without chunking.
pub fn chunk_options(
    state: &NodeState,
    max_chunks: Option<i64>,
    overlap: Option<i64>,
) -> Result<Option<ChunkOptions>, ApiError> {
    let limit = state.config.max_chunks_per_doc_limit;
    let max_chunks = match max_chunks {
        None => state.config.max_chunks_per_doc,
        Some(n) if n < 1 => {
            return Err(ApiError::new(
                ApiErrorKind::InvalidField,
                format!("max_chunks_per_doc must be at least 1, got {n}"),
            ))
        }
        Some(n) => match usize::try_from(n) {
            Ok(n) if n <= limit => n,
            _ => {
                return Err(ApiError::new(
                    ApiErrorKind::InvalidField,
                    format!(
                        "max_chunks_per_doc {n} is over this node's limit of {limit} \
                         (MAX_CHUNKS_PER_DOC_LIMIT)"
                    ),
                ))
            }
        },
    };
    let overlap = match overlap {
        None => state.config.chunk_overlap_tokens,
        Some(n) => Some(usize::try_from(n).map_err(|_| {
            ApiError::new(
                ApiErrorKind::InvalidField,
                format!("chunk_overlap must be at least 0, got {n}"),
            )
        })?),
    };
    Ok((max_chunks > 1).then_some(ChunkOptions {
        max_chunks,
        overlap,
    }))
}

/// Scores `documents` against `query` through the node actor.
///
/// The request is cancelled — its queued pairs dropped unless another request shares them —
/// when the client's socket closes, or when actix drops this future.
pub async fn score_documents(
    http: &HttpRequest,
    state: &web::Data<NodeState>,
    query: String,
    documents: Vec<String>,
    instruction: Option<String>,
    options: TruncationOptions,
    chunks: Option<ChunkOptions>,
) -> Result<RerankOutcome, ApiError> {
    let cancel = CancellationToken::new();
    let _cancel_on_drop = cancel.clone().drop_guard();
    let client = http.conn_data::<ClientSocket>().cloned();
    let client_gone = async {
        match &client {
            Some(socket) => socket.closed().await,
            None => std::future::pending().await,
        }
    };
    let request = state.node.send(Rerank {
        query,
        documents,
        instruction,
        options,
        chunks,
        cancel: cancel.clone(),
        span: tracing::Span::current(),
    });
    tokio::select! {
        outcome = request => Ok(outcome.map_err(|e| {
            ApiError::new(ApiErrorKind::Unhealthy, format!("node actor unavailable: {e}"))
        })??),
        () = client_gone => {
            cancel.cancel();
            Err(ApiError::new(ApiErrorKind::ClientClosed, "the client went away"))
        }
    }
}

/// The logistic function, mapping a raw logit to a relevance probability.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Indices of `scores` from best to worst; ties keep request order, NaN sorts last.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| {
            if scores[i].is_nan() {
                f32::NEG_INFINITY
            } else {
                scores[i]
            }
        };
        key(b).total_cmp(&key(a)).then(a.cmp(&b))
    });
    order
}

/// TEI-style timing headers, in whole milliseconds.
pub fn timing_headers(outcome: &RerankOutcome) -> [(&'static str, String); 4] {
    let ms = |d: Duration| d.as_millis().to_string();
    [
        ("x-compute-time", ms(outcome.total_time)),
        ("x-tokenization-time", ms(outcome.tokenization_time)),
        ("x-queue-time", ms(outcome.queue_time)),
        ("x-inference-time", ms(outcome.inference_time)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_descending_and_stable() {
        assert_eq!(ranking(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
        assert_eq!(ranking(&[f32::NAN, 0.2]), vec![1, 0]);
    }

    #[test]
    fn sigmoid_is_a_probability() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!(sigmoid(20.0) > 0.999 && sigmoid(-20.0) < 0.001);
    }
}
