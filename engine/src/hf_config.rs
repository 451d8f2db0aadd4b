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
    /// Parses `config.json` text and checks its shape, naming the file in the error.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses shapes no encoder can run, before any weight is read: sizes of 0 (heads, layers:
    /// divisions by zero and empty encoders further down), a hidden size the heads do not
    /// divide, no room in the position table, a negative or non-finite LayerNorm epsilon, and
    /// sizes so large that buffer arithmetic (here and in oneDNN's C layer) could overflow.
    pub fn validate(&self) -> Result<(), EngineError> {
        let sizes = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_hidden_layers", self.num_hidden_layers, 1024),
            ("num_attention_heads", self.num_attention_heads, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 20,
            ),
            ("type_vocab_size", self.type_vocab_size, 1 << 16),
        ];
        for (field, value, max) in sizes {
            let min = usize::from(field != "type_vocab_size");
            if !(min..=max).contains(&value) {
                return Err(EngineError::InvalidModel(format!(
                    "config.json: {field} is {value}; a model needs {min} to {max}"
                )));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(EngineError::InvalidModel(format!(
                "config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.position_limit() == 0 {
            return Err(EngineError::InvalidModel(format!(
                "config.json: max_position_embeddings {} leaves no position after the offset {}",
                self.max_position_embeddings,
                self.position_offset()
            )));
        }
        if let Some(kind) = self
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(EngineError::InvalidModel(format!(
                "config.json: position_embedding_type {kind:?}; only absolute positions are supported"
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(EngineError::InvalidModel(format!(
                "config.json: layer_norm_eps is {}; it must be a finite number, 0 or more",
                self.layer_norm_eps
            )));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use candle_core::Device;

    use crate::{EngineError, Kernels, LoadOptions, ModelFiles, Precision, Reranker};

    /// A copy of fixture `name` in a directory of its own, with `edit` applied to its
    /// `config.json`; removed when dropped.
    struct EditedFixture(PathBuf);

    impl EditedFixture {
        fn new(name: &str, label: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Self {
            let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name);
            let dir = std::env::temp_dir().join(format!(
                "rerank-fixture-{}-{name}-{label}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            for entry in std::fs::read_dir(&source).expect("fixture") {
                let path = entry.expect("entry").path();
                let file_name = path.file_name().expect("file name");
                std::fs::copy(&path, dir.join(file_name)).expect("copy");
            }
            let config_path = dir.join("config.json");
            let mut config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
                    .expect("json");
            edit(&mut config);
            std::fs::write(&config_path, config.to_string()).expect("write config");
            Self(dir)
        }
    }

    impl Drop for EditedFixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(dir: &Path, kernels: Kernels) -> Result<Reranker, EngineError> {
        let files = ModelFiles::from_dir(dir, "edited")?;
        Reranker::load(
            &files,
            &LoadOptions {
                kernels,
                ..LoadOptions::new(Device::Cpu, 4096, Precision::F32)
            },
        )
    }

    /// Shapes no encoder can run (0 attention heads panicked with a division by zero before)
    /// are refused at load with `InvalidModel` naming the field, on either kernels.
    #[test]
    fn impossible_shapes_are_refused_at_load() {
        let cases: &[(&str, &str, serde_json::Value)] = &[
            ("heads-0", "num_attention_heads", 0.into()),
            ("heads-3", "num_attention_heads", 3.into()),
            ("hidden-0", "hidden_size", 0.into()),
            ("layers-0", "num_hidden_layers", 0.into()),
            ("intermediate-0", "intermediate_size", 0.into()),
            ("vocab-0", "vocab_size", 0.into()),
            ("positions-0", "max_position_embeddings", 0.into()),
            ("eps-negative", "layer_norm_eps", (-1.0).into()),
            ("heads-huge", "num_attention_heads", (1u64 << 40).into()),
            ("hidden-huge", "hidden_size", (1u64 << 40).into()),
        ];
        let mut failures = Vec::new();
        for (label, field, value) in cases {
            let fixture = EditedFixture::new("bert-ce", label, |c| c[field] = value.clone());
            for kernels in [Kernels::OneDnn, Kernels::Candle] {
                let dir = fixture.0.clone();
                let outcome = std::panic::catch_unwind(move || load(&dir, kernels).map(|_| ()));
                let failure = match outcome {
                    Err(_) => "load panicked".to_string(),
                    Ok(Ok(())) => "loaded".to_string(),
                    Ok(Err(EngineError::InvalidModel(message))) if message.contains(field) => {
                        continue
                    }
                    Ok(Err(other)) => format!("not InvalidModel naming the field: {other}"),
                };
                failures.push(format!("{field} = {value} ({kernels:?}): {failure}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The unedited fixture still loads.
        let fixture = EditedFixture::new("bert-ce", "unedited", |_| {});
        assert!(load(&fixture.0, Kernels::OneDnn).is_ok());
    }
}
