//! `config.json` of a ModernBERT checkpoint, in either form it is found in: transformers 4.x
//! (the Hub's checkpoints: `global_attn_every_n_layers`, `global_rope_theta`,
//! `local_rope_theta`) or transformers 5 (`layer_types`, `rope_parameters`). Fields default the
//! way `ModernBertConfig` defaults them, so sparse configs load.
//!
//! Upstream: `transformers/models/modernbert/configuration_modernbert.py`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::EngineError;

/// An activation function named by `hidden_activation` or `classifier_activation`
/// (transformers' `ACT2FN` names; `gelu` is the exact erf form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Activation {
    Gelu,
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    Relu,
    #[serde(alias = "swish")]
    Silu,
    Tanh,
}

/// How the classifier pools the last hidden state (`classifier_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ClassifierPooling {
    /// The first token's ([CLS]) state.
    Cls,
    /// The mean over the sequence's tokens.
    Mean,
}

/// Attention of one layer (`layer_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) enum LayerKind {
    /// Every token sees the whole sequence; RoPE with the global base.
    #[serde(rename = "full_attention")]
    Global,
    /// A token sees tokens within `local_attention / 2` positions; RoPE with the local base.
    #[serde(rename = "sliding_attention")]
    Local,
}

#[derive(Debug, Clone, Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
}

/// The fields of a ModernBERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ModernBertConfig {
    pub(super) vocab_size: usize,
    pub(super) hidden_size: usize,
    pub(super) num_hidden_layers: usize,
    pub(super) num_attention_heads: usize,
    pub(super) intermediate_size: usize,
    #[serde(default = "defaults::gelu")]
    pub(super) hidden_activation: Activation,
    #[serde(default = "defaults::max_position_embeddings")]
    pub(super) max_position_embeddings: usize,
    #[serde(default = "defaults::norm_eps")]
    pub(super) norm_eps: f64,
    #[serde(default)]
    pub(super) norm_bias: bool,
    #[serde(default)]
    pub(super) attention_bias: bool,
    #[serde(default)]
    pub(super) mlp_bias: bool,
    #[serde(default)]
    pub(super) classifier_bias: bool,
    #[serde(default = "defaults::gelu")]
    pub(super) classifier_activation: Activation,
    #[serde(default = "defaults::pooling")]
    pub(super) classifier_pooling: ClassifierPooling,
    #[serde(default = "defaults::local_attention")]
    pub(super) local_attention: usize,
    #[serde(default = "defaults::global_every")]
    global_attn_every_n_layers: usize,
    #[serde(default)]
    layer_types: Option<Vec<LayerKind>>,
    #[serde(default = "defaults::global_theta")]
    global_rope_theta: f64,
    #[serde(default = "defaults::local_theta")]
    local_rope_theta: f64,
    #[serde(default)]
    rope_parameters: Option<BTreeMap<String, RopeParameters>>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

mod defaults {
    use super::{Activation, ClassifierPooling};

    pub(super) fn gelu() -> Activation {
        Activation::Gelu
    }
    pub(super) fn max_position_embeddings() -> usize {
        8192
    }
    pub(super) fn norm_eps() -> f64 {
        1e-5
    }
    pub(super) fn pooling() -> ClassifierPooling {
        ClassifierPooling::Cls
    }
    pub(super) fn local_attention() -> usize {
        128
    }
    pub(super) fn global_every() -> usize {
        3
    }
    pub(super) fn global_theta() -> f64 {
        160_000.0
    }
    pub(super) fn local_theta() -> f64 {
        10_000.0
    }
}

impl ModernBertConfig {
    /// Parses `config.json` text and checks its shape.
    pub(super) fn parse(text: &str) -> Result<Self, EngineError> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    fn invalid(message: String) -> EngineError {
        EngineError::InvalidModel(format!("config.json: {message}"))
    }

    /// Refuses shapes the forward pass cannot run, before any weight is read.
    pub(super) fn validate(&self) -> Result<(), EngineError> {
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
        ];
        for (field, value, max) in sizes {
            if !(1..=max).contains(&value) {
                return Err(Self::invalid(format!(
                    "{field} is {value}; a model needs 1 to {max}"
                )));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Self::invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Self::invalid(format!(
                "the head size {} (hidden_size / num_attention_heads) must be even for rotary embeddings",
                self.head_dim()
            )));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(Self::invalid(format!(
                "norm_eps is {}; it must be a finite number, 0 or more",
                self.norm_eps
            )));
        }
        if self.layer_types.is_none() && self.global_attn_every_n_layers == 0 {
            return Err(Self::invalid("global_attn_every_n_layers is 0".into()));
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(Self::invalid(format!(
                    "layer_types has {} entries for {} layers",
                    types.len(),
                    self.num_hidden_layers
                )));
            }
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(Self::invalid("rope_scaling is not supported".into()));
        }
        if let Some(params) = &self.rope_parameters {
            for (kind, p) in params {
                if p.rope_type.as_deref().is_some_and(|t| t != "default") {
                    return Err(Self::invalid(format!(
                        "rope_parameters.{kind}.rope_type {:?} is not supported (only \"default\")",
                        p.rope_type
                    )));
                }
            }
        }
        for kind in [LayerKind::Global, LayerKind::Local] {
            let theta = self.rope_theta(kind);
            if !(theta.is_finite() && theta > 0.0) {
                return Err(Self::invalid(format!(
                    "rotary base {theta} for {kind:?} layers"
                )));
            }
        }
        Ok(())
    }

    /// Values per attention head.
    pub(super) fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Each layer's attention: `layer_types` where given, else global every
    /// `global_attn_every_n_layers`-th layer starting with layer 0 (transformers' rule).
    pub(super) fn layer_kinds(&self) -> Vec<LayerKind> {
        match &self.layer_types {
            Some(types) => types.clone(),
            None => (0..self.num_hidden_layers)
                .map(|i| {
                    if i.is_multiple_of(self.global_attn_every_n_layers) {
                        LayerKind::Global
                    } else {
                        LayerKind::Local
                    }
                })
                .collect(),
        }
    }

    /// Keys farther than this from a query are masked in local layers: `local_attention // 2`
    /// (inclusive), as transformers' `sliding_window` and flash-attention's window (w, w).
    pub(super) fn half_window(&self) -> usize {
        self.local_attention / 2
    }

    /// The RoPE base of `kind` layers: `rope_parameters` where given, else the 4.x fields.
    pub(super) fn rope_theta(&self, kind: LayerKind) -> f64 {
        let (key, fallback) = match kind {
            LayerKind::Global => ("full_attention", self.global_rope_theta),
            LayerKind::Local => ("sliding_attention", self.local_rope_theta),
        };
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(|p| p.rope_theta)
            .unwrap_or(fallback)
    }

    /// The longest input, before tokenizer limits: RoPE has no table, so the trained context.
    pub(super) fn position_limit(&self) -> usize {
        self.max_position_embeddings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = r#"{"vocab_size": 50368, "hidden_size": 768, "num_hidden_layers": 22,
        "num_attention_heads": 12, "intermediate_size": 1152, "global_attn_every_n_layers": 3,
        "global_rope_theta": 160000.0, "local_rope_theta": 10000.0, "local_attention": 128,
        "classifier_pooling": "mean"}"#;

    #[test]
    fn reads_the_hub_form_with_transformers_defaults() {
        let c = ModernBertConfig::parse(HUB).unwrap();
        let kinds = c.layer_kinds();
        assert_eq!(kinds.len(), 22);
        assert_eq!(kinds[0], LayerKind::Global);
        assert_eq!(kinds[1], LayerKind::Local);
        assert_eq!(kinds[3], LayerKind::Global);
        assert_eq!(kinds[21], LayerKind::Global);
        assert_eq!(c.half_window(), 64);
        assert_eq!(c.rope_theta(LayerKind::Global), 160000.0);
        assert_eq!(c.rope_theta(LayerKind::Local), 10000.0);
        assert_eq!(c.classifier_pooling, ClassifierPooling::Mean);
        assert_eq!(c.hidden_activation, Activation::Gelu);
        assert!(!c.norm_bias && !c.attention_bias && !c.mlp_bias && !c.classifier_bias);
        assert_eq!(c.norm_eps, 1e-5);
    }

    #[test]
    fn layer_types_and_rope_parameters_win_over_the_older_fields() {
        let text = HUB.replace(
            "\"classifier_pooling\": \"mean\"",
            r#""num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"],
               "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 5.0},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 7.0}}"#,
        );
        let text = text.replace("\"num_hidden_layers\": 22,", "");
        let c = ModernBertConfig::parse(&text).unwrap();
        assert_eq!(c.layer_kinds(), vec![LayerKind::Local, LayerKind::Global]);
        assert_eq!(c.rope_theta(LayerKind::Global), 5.0);
        assert_eq!(c.rope_theta(LayerKind::Local), 7.0);
    }

    #[test]
    fn refuses_what_the_forward_pass_cannot_run() {
        for (edit, field) in [
            (
                ("\"num_attention_heads\": 12", "\"num_attention_heads\": 0"),
                "num_attention_heads",
            ),
            (
                (
                    "\"num_attention_heads\": 12",
                    "\"num_attention_heads\": 256",
                ),
                "head size",
            ),
            (
                (
                    "\"global_attn_every_n_layers\": 3",
                    "\"global_attn_every_n_layers\": 0",
                ),
                "global_attn",
            ),
            (
                (
                    "\"local_rope_theta\": 10000.0",
                    "\"local_rope_theta\": -1.0",
                ),
                "rotary base",
            ),
            (
                (
                    "\"local_attention\": 128",
                    "\"local_attention\": 128, \"rope_scaling\": {\"factor\": 2}",
                ),
                "rope_scaling",
            ),
        ] {
            let text = HUB.replace(edit.0, edit.1);
            match ModernBertConfig::parse(&text) {
                Err(EngineError::InvalidModel(m)) => assert!(m.contains(field), "{m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
