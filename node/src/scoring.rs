//! Scoring one request: tokenize off the event loop, then one message to the model actor.

use std::time::{Duration, Instant};

use actix_web::web;

use crate::actors::ScorePairs;
use crate::api::error::{ApiError, ApiErrorKind};
use crate::engine::TruncationOptions;
use crate::state::NodeState;

/// Raw scores of a request's pairs and where its time went.
#[derive(Debug, Clone)]
pub struct ScoreOutcome {
    /// One raw score per document, in request order.
    pub raw_scores: Vec<f32>,
    /// Tokens of all pairs, special tokens included (what `usage.total_tokens` reports).
    pub total_tokens: usize,
    pub tokenization_time: Duration,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub total_time: Duration,
}

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

/// Scores `documents` against `query`.
pub async fn score_documents(
    state: &web::Data<NodeState>,
    query: String,
    documents: Vec<String>,
    opts: TruncationOptions,
) -> Result<ScoreOutcome, ApiError> {
    let started = Instant::now();
    let backend = state.backend.clone();
    let pairs = web::block(move || {
        let docs: Vec<&str> = documents.iter().map(String::as_str).collect();
        backend.encode(&query, &docs, &opts)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            ApiErrorKind::Backend,
            format!("tokenization task failed: {e}"),
        )
    })??;
    let tokenization_time = started.elapsed();
    let total_tokens = pairs.iter().map(|p| p.token_count()).sum();
    let pair_count = pairs.len() as u64;

    let scored = state
        .model
        .send(ScorePairs {
            pairs,
            enqueued_at: Instant::now(),
        })
        .await
        .map_err(|e| {
            ApiError::new(
                ApiErrorKind::Unhealthy,
                format!("model actor unavailable: {e}"),
            )
        })??;

    let m = &state.metrics;
    m.pairs_requested.inc_by(pair_count);
    m.pairs_computed.inc_by(pair_count);
    m.tokens_computed.inc_by(total_tokens as u64);
    m.tokenization_time.observe(tokenization_time.as_secs_f64());
    m.queue_time.observe(scored.queue_time.as_secs_f64());
    m.inference_time
        .observe(scored.inference_time.as_secs_f64());
    Ok(ScoreOutcome {
        raw_scores: scored.raw_scores,
        total_tokens,
        tokenization_time,
        queue_time: scored.queue_time,
        inference_time: scored.inference_time,
        total_time: started.elapsed(),
    })
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
pub fn timing_headers(outcome: &ScoreOutcome) -> [(&'static str, String); 4] {
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
