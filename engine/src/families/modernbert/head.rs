//! ModernBERT's classification head: pooling (`classifier_pooling`), `norm(act(dense(pooled)))`,
//! then the classifier. It runs on candle tensors in f32 on both kernel paths (one row per
//! sequence: nothing to gain from the packed kernels).

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::config::{Activation, ClassifierPooling, ModernBertConfig};
use super::layers::{activate, layer_norm};
use super::weights::HeadWeights;
use crate::heads::{first_token, masked_mean};
use crate::EngineError;

/// Pooling, prediction head and classifier of `ModernBertForSequenceClassification`.
pub(super) struct ModernBertHead {
    pooling: ClassifierPooling,
    dense: Linear,
    act: Activation,
    norm: LayerNorm,
    classifier: Linear,
}

impl ModernBertHead {
    pub(super) fn new(w: &HeadWeights, cfg: &ModernBertConfig) -> Self {
        Self {
            pooling: cfg.classifier_pooling,
            dense: Linear::new(w.dense.weight.clone(), w.dense.bias.clone()),
            act: cfg.classifier_activation,
            norm: layer_norm(&w.norm, cfg.norm_eps),
            classifier: Linear::new(w.classifier.weight.clone(), w.classifier.bias.clone()),
        }
    }

    /// Labels per pair.
    pub(super) fn label_count(&self) -> usize {
        self.classifier
            .weight()
            .dims()
            .first()
            .copied()
            .unwrap_or(1)
    }

    /// (batch, num_labels) logits from the (batch, seq, hidden) last hidden state and the
    /// (batch, seq) f32 token mask (1 for real tokens).
    pub(super) fn forward(
        &self,
        hidden: &Tensor,
        token_mask: &Tensor,
    ) -> Result<Tensor, EngineError> {
        let pooled = match self.pooling {
            ClassifierPooling::Cls => first_token(hidden)?,
            ClassifierPooling::Mean => masked_mean(hidden, token_mask)?,
        };
        let x = activate(&self.dense.forward(&pooled)?, self.act)?;
        Ok(self.classifier.forward(&self.norm.forward(&x)?)?)
    }
}
