//! The checkpoint layout of `ModernBertForSequenceClassification`: every tensor the forward
//! pass reads, in f32, named as transformers names them. Both kernel paths build from these, so
//! this is the one place that knows the layout.
//!
//! ```text
//! model.embeddings.tok_embeddings.weight   (vocab × h)
//! model.embeddings.norm.{weight,bias?}
//! model.layers.{i}.attn_norm.{weight,bias?}   absent in layer 0 (an Identity in transformers)
//! model.layers.{i}.attn.Wqkv.{weight,bias?}   (3h × h): q, k, v stacked
//! model.layers.{i}.attn.Wo.{weight,bias?}     (h × h)
//! model.layers.{i}.mlp_norm.{weight,bias?}
//! model.layers.{i}.mlp.Wi.{weight,bias?}      (2i × h): GeGLU input, then gate
//! model.layers.{i}.mlp.Wo.{weight,bias?}      (h × i)
//! model.final_norm.{weight,bias?}
//! head.dense.{weight,bias?}, head.norm.{weight,bias?}, classifier.{weight,bias}
//! ```
//! Biases are present exactly where `attention_bias`, `mlp_bias`, `norm_bias` and
//! `classifier_bias` say; the classifier always has one.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::config::{LayerKind, ModernBertConfig};
use crate::EngineError;

/// A linear layer: (out × in) weight and, where the config has one, its bias.
#[derive(Debug, Clone)]
pub(super) struct LinearWeights {
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
}

impl LinearWeights {
    fn load(vb: VarBuilder, out: usize, inp: usize, bias: bool) -> Result<Self, EngineError> {
        Ok(Self {
            weight: vb.get((out, inp), "weight")?,
            bias: bias.then(|| vb.get(out, "bias")).transpose()?,
        })
    }
}

/// A LayerNorm's gamma and, where `norm_bias` is set, beta.
#[derive(Debug, Clone)]
pub(super) struct NormWeights {
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
}

impl NormWeights {
    fn load(vb: VarBuilder, size: usize, bias: bool) -> Result<Self, EngineError> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: bias.then(|| vb.get(size, "bias")).transpose()?,
        })
    }
}

/// One encoder layer.
#[derive(Debug, Clone)]
pub(super) struct LayerWeights {
    pub(super) kind: LayerKind,
    /// `None` in layer 0, whose input is the embeddings' already normalized output.
    pub(super) attn_norm: Option<NormWeights>,
    pub(super) wqkv: LinearWeights,
    pub(super) wo: LinearWeights,
    pub(super) mlp_norm: NormWeights,
    pub(super) wi: LinearWeights,
    pub(super) mlp_wo: LinearWeights,
}

/// The encoder: embeddings, layers, final norm.
#[derive(Debug, Clone)]
pub(super) struct EncoderWeights {
    pub(super) tok_embeddings: Tensor,
    pub(super) embed_norm: NormWeights,
    pub(super) layers: Vec<LayerWeights>,
    pub(super) final_norm: NormWeights,
}

/// The sequence-classification head.
#[derive(Debug, Clone)]
pub(super) struct HeadWeights {
    pub(super) dense: LinearWeights,
    pub(super) norm: NormWeights,
    /// (num_labels × h), with its bias.
    pub(super) classifier: LinearWeights,
}

impl EncoderWeights {
    /// Reads the encoder under `vb` (the checkpoint's `model.` prefix).
    pub(super) fn load(vb: &VarBuilder, cfg: &ModernBertConfig) -> Result<Self, EngineError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let embeddings = vb.pp("embeddings");
        let layers = cfg
            .layer_kinds()
            .into_iter()
            .enumerate()
            .map(|(n, kind)| {
                let lv = vb.pp("layers").pp(n.to_string());
                Ok(LayerWeights {
                    kind,
                    attn_norm: if n == 0 {
                        None
                    } else {
                        Some(NormWeights::load(lv.pp("attn_norm"), h, cfg.norm_bias)?)
                    },
                    wqkv: LinearWeights::load(
                        lv.pp("attn").pp("Wqkv"),
                        3 * h,
                        h,
                        cfg.attention_bias,
                    )?,
                    wo: LinearWeights::load(lv.pp("attn").pp("Wo"), h, h, cfg.attention_bias)?,
                    mlp_norm: NormWeights::load(lv.pp("mlp_norm"), h, cfg.norm_bias)?,
                    wi: LinearWeights::load(lv.pp("mlp").pp("Wi"), 2 * i, h, cfg.mlp_bias)?,
                    mlp_wo: LinearWeights::load(lv.pp("mlp").pp("Wo"), h, i, cfg.mlp_bias)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Self {
            tok_embeddings: embeddings
                .pp("tok_embeddings")
                .get((cfg.vocab_size, h), "weight")?,
            embed_norm: NormWeights::load(embeddings.pp("norm"), h, cfg.norm_bias)?,
            layers,
            final_norm: NormWeights::load(vb.pp("final_norm"), h, cfg.norm_bias)?,
        })
    }
}

impl HeadWeights {
    /// Reads the head from the checkpoint root; the label count comes from the classifier's
    /// weight (configs often omit `num_labels`).
    pub(super) fn load(root: &VarBuilder, cfg: &ModernBertConfig) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        let head = root.pp("head");
        let classifier = root.pp("classifier");
        let weight = classifier.get_unchecked("weight")?;
        let labels = weight.dims().first().copied().unwrap_or(0);
        if labels == 0 || weight.dims() != [labels, h] {
            return Err(EngineError::InvalidModel(format!(
                "classifier weight has shape {:?}, expected (num_labels, {h})",
                weight.dims()
            )));
        }
        Ok(Self {
            dense: LinearWeights::load(head.pp("dense"), h, h, cfg.classifier_bias)?,
            norm: NormWeights::load(head.pp("norm"), h, cfg.norm_bias)?,
            classifier: LinearWeights {
                weight,
                bias: Some(classifier.get(labels, "bias")?),
            },
        })
    }
}
