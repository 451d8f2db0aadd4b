//! The parts of a Hugging Face `config.json` (and its sentence-transformers companions) that the
//! encoder needs. Fields default the way `transformers` defaults them, so sparse configs load.

use serde::Deserialize;

use super::EngineError;

/// Activation of the feed-forward block. `gelu` in `transformers` is the exact (erf) form; the
/// tanh approximations are kept distinct because they move logits by ~1e-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    Gelu,
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluApproximate,
    Relu,
    #[serde(alias = "swish")]
    Silu,
}

/// `config.json` of a BERT-family checkpoint (BERT, RoBERTa, XLM-RoBERTa).
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_hidden_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_max_position_embeddings() -> usize {
    512
}
fn default_type_vocab_size() -> usize {
    2
}

impl HfConfig {
    /// Parses `config.json` text, naming the file in the error.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        serde_json::from_str(text)
            .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))
    }

    /// True for RoBERTa-style models, whose position ids start at `padding_idx + 1`.
    pub fn is_roberta_family(&self) -> bool {
        let by_type = matches!(
            self.model_type.as_deref(),
            Some("roberta" | "xlm-roberta" | "camembert")
        );
        by_type
            || self
                .architectures
                .iter()
                .any(|a| a.starts_with("XLMRoberta") || a.starts_with("Roberta"))
    }

    /// First position id of a sequence: 0 for BERT, `pad_token_id + 1` for RoBERTa.
    pub fn position_offset(&self) -> usize {
        if self.is_roberta_family() {
            self.pad_token_id.unwrap_or(1) as usize + 1
        } else {
            0
        }
    }

    /// The longest input the position table allows, before tokenizer limits are applied.
    pub fn position_limit(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }
}

/// `1_Pooling/config.json` of a sentence-transformers model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolingConfig {
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
}

/// `sentence_bert_config.json`: the sequence length sentence-transformers truncates to.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SentenceBertConfig {
    #[serde(default)]
    pub max_seq_length: Option<usize>,
}

/// `tokenizer_config.json`: only the length limit matters to us.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizerConfig {
    #[serde(default)]
    pub model_max_length: Option<f64>,
}

impl TokenizerConfig {
    /// `model_max_length` when it is a real limit; `transformers` writes 1e30 for "none".
    pub fn max_length(&self) -> Option<usize> {
        self.model_max_length
            .filter(|v| *v > 0.0 && *v < 1e9)
            .map(|v| v as usize)
    }
}
