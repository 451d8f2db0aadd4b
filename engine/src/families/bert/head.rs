//! The BERT-family classification heads.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::heads::first_token;
use crate::hf_config::HfConfig;
use crate::EngineError;

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
