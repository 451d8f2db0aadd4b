//! What every family shares on the way from hidden states to a score: pooling (bi-encoders and
//! mean-pooling heads), a classifier's logits to one raw score, and cosine similarity. Each
//! family's own classification head lives in its file.

use candle_core::{Tensor, D};

use super::hf_config::PoolingConfig;
use super::EngineError;

/// The first token's hidden state of every row: (batch, hidden).
pub fn first_token(hidden: &Tensor) -> Result<Tensor, EngineError> {
    Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?)
}

/// Mean of the hidden states over real tokens: (batch, hidden).
pub fn masked_mean(hidden: &Tensor, token_mask: &Tensor) -> Result<Tensor, EngineError> {
    let mask = token_mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(summed.broadcast_div(&counts)?)
}

/// Reduces a row of logits to one raw score whose sigmoid is the relevance probability.
///
/// One label: the logit itself. Two or more labels: label 1 is "relevant", and the raw score is
/// its log-odds against the others, `l1 - logsumexp(others)`; its sigmoid equals softmax's
/// probability of label 1, so every head is normalised the same way at response time.
pub fn raw_score(logits: &[f32]) -> f32 {
    match logits {
        [] => 0.0,
        [single] => *single,
        [others_first, positive, rest @ ..] => {
            let others = std::iter::once(*others_first).chain(rest.iter().copied());
            let max = others.clone().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + others.map(|l| (l - max).exp()).sum::<f32>().ln();
            positive - lse
        }
    }
}

/// How a bi-encoder turns token states into one embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

impl Pooling {
    /// Reads sentence-transformers' pooling config; mean when absent (its default).
    pub fn from_config(cfg: Option<&PoolingConfig>) -> Result<Self, EngineError> {
        match cfg {
            None => Ok(Self::Mean),
            // Several modes at once concatenate their vectors; we would silently use one.
            Some(c) if c.pooling_mode_max_tokens || c.pooling_mode_mean_sqrt_len_tokens => {
                Err(EngineError::InvalidModel(
                    "1_Pooling/config.json: only mean and CLS pooling are supported".into(),
                ))
            }
            Some(c) if c.pooling_mode_cls_token => Ok(Self::Cls),
            Some(c) if c.pooling_mode_mean_tokens => Ok(Self::Mean),
            Some(_) => Err(EngineError::InvalidModel(
                "1_Pooling/config.json: only mean and CLS pooling are supported".into(),
            )),
        }
    }

    /// (batch, hidden) embeddings.
    pub fn forward(&self, hidden: &Tensor, token_mask: &Tensor) -> Result<Tensor, EngineError> {
        match self {
            Self::Mean => masked_mean(hidden, token_mask),
            Self::Cls => first_token(hidden),
        }
    }

    /// The name reported in `/info`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
        }
    }
}

/// Cosine similarity of two embeddings (0 when either is all zeros), clamped to [-1, 1]: f32
/// rounding in the sums can land just outside (1.0000001 for a vector with itself), and a
/// relevance score above 1 reads as a bug to clients.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let denom = (na.sqrt() * nb.sqrt()).max(1e-12);
    (dot / denom).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_score_of_two_labels_is_softmax_log_odds() {
        let logits = [0.3f32, 1.7];
        let softmax_pos = 1.7f32.exp() / (0.3f32.exp() + 1.7f32.exp());
        let sigmoid = 1.0 / (1.0 + (-raw_score(&logits)).exp());
        assert!((sigmoid - softmax_pos).abs() < 1e-6);
    }

    #[test]
    fn raw_score_of_three_labels_matches_softmax() {
        let logits = [0.3f32, 1.7, -0.4];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        let sigmoid = 1.0 / (1.0 + (-raw_score(&logits)).exp());
        assert!((sigmoid - logits[1].exp() / z).abs() < 1e-6);
    }

    #[test]
    fn cosine_of_parallel_vectors_is_one() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    /// Rounding put these at ±1.0000001 before the clamp.
    #[test]
    fn cosine_stays_within_minus_one_and_one() {
        assert_eq!(cosine(&[0.1, 0.4], &[0.1, 0.4]), 1.0);
        assert_eq!(cosine(&[0.1, -0.4], &[-0.1, 0.4]), -1.0);
        assert_eq!(cosine(&[0.1, 2.0], &[0.2, 4.0]).max(1.0), 1.0);
    }
}
