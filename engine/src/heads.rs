//! What turns the encoder's hidden states into a relevance score: a classification head for
//! cross-encoders, pooling for bi-encoders.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::encoder::{first_token, masked_mean};
use super::hf_config::{HfConfig, PoolingConfig};
use super::EngineError;

/// The sequence-classification head of a cross-encoder.
pub enum ClassifierHead {
    /// `BertForSequenceClassification`: tanh(pooler(CLS)) → classifier.
    Bert { pooler: Linear, classifier: Linear },
    /// `(XLM)RobertaForSequenceClassification`: tanh(dense(<s>)) → out_proj.
    Roberta { dense: Linear, out_proj: Linear },
}

impl ClassifierHead {
    /// Loads the BERT head; `pooler_vb` points at the encoder prefix, `root` at the checkpoint root.
    pub fn load_bert(
        pooler_vb: VarBuilder,
        root: VarBuilder,
        cfg: &HfConfig,
    ) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        Ok(Self::Bert {
            pooler: candle_nn::linear(h, h, pooler_vb.pp("pooler").pp("dense"))?,
            classifier: output_layer(root.pp("classifier"), h)?,
        })
    }

    /// Loads the RoBERTa classification head from the checkpoint root.
    pub fn load_roberta(root: VarBuilder, cfg: &HfConfig) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        let head = root.pp("classifier");
        Ok(Self::Roberta {
            dense: candle_nn::linear(h, h, head.pp("dense"))?,
            out_proj: output_layer(head.pp("out_proj"), h)?,
        })
    }

    /// Number of labels the head outputs.
    pub fn label_count(&self) -> usize {
        let layer = match self {
            Self::Bert { classifier, .. } => classifier,
            Self::Roberta { out_proj, .. } => out_proj,
        };
        layer.weight().dims().first().copied().unwrap_or(1)
    }

    /// (batch, num_labels) logits from the last hidden state.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor, EngineError> {
        let cls = first_token(hidden)?;
        let (first, second) = match self {
            Self::Bert { pooler, classifier } => (pooler, classifier),
            Self::Roberta { dense, out_proj } => (dense, out_proj),
        };
        Ok(second.forward(&first.forward(&cls)?.tanh()?)?)
    }
}

/// The final projection, sized by its weight: `config.json` often omits `num_labels` (transformers
/// does not write its default of 2), so the checkpoint is the only reliable source.
fn output_layer(vb: VarBuilder, hidden: usize) -> Result<Linear, EngineError> {
    let weight = vb.get_unchecked("weight")?;
    let labels = weight.dims().first().copied().unwrap_or(0);
    if labels == 0 || weight.dims() != [labels, hidden] {
        return Err(EngineError::InvalidModel(format!(
            "classifier weight has shape {:?}, expected (num_labels, {hidden})",
            weight.dims()
        )));
    }
    let bias = vb.get(labels, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
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
