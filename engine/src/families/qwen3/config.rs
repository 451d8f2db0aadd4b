//! The `config.json` fields of a Qwen3 checkpoint (transformers' `Qwen3Config`), defaulted the
//! way transformers defaults them and checked before any weight is read.
//!
//! Two layouts exist in the wild: the one Qwen ships (transformers 4.5x: a top-level
//! `rope_theta` and `rope_scaling: null`) and the one transformers 5 writes
//! (`rope_parameters: {rope_type, rope_theta}`); both load.

use serde::Deserialize;

use crate::EngineError;

#[derive(Debug, Deserialize)]
struct RopeParameters {
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
    /// transformers 4.x spelled the type `type`.
    #[serde(default, rename = "type")]
    legacy_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

fn default_hidden_act() -> String {
    "silu".into()
}
fn default_max_positions() -> usize {
    32768
}
fn default_eps() -> f64 {
    1e-6
}
/// transformers' default `rope_theta` for Qwen3 (`RopeParameters` without one).
const DEFAULT_ROPE_THETA: f64 = 10000.0;

/// A validated Qwen3 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub attention_bias: bool,
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidModel(format!("config.json: {}", msg.into()))
}

impl Qwen3Config {
    /// Parses `config.json` text; refuses what this implementation does not compute exactly
    /// (other activations, sliding-window layers, scaled RoPE) rather than scoring wrongly.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if heads > 0 => raw.hidden_size / heads,
            None => 0,
        };
        let sizes = [
            ("vocab_size", raw.vocab_size, 1 << 24),
            ("hidden_size", raw.hidden_size, 1 << 16),
            ("intermediate_size", raw.intermediate_size, 1 << 20),
            ("num_hidden_layers", raw.num_hidden_layers, 1024),
            ("num_attention_heads", heads, 1 << 12),
            ("num_key_value_heads", kv_heads, 1 << 12),
            ("head_dim", head_dim, 1 << 12),
            (
                "max_position_embeddings",
                raw.max_position_embeddings,
                1 << 24,
            ),
        ];
        for (name, value, max) in sizes {
            if value == 0 || value > max {
                return Err(invalid(format!("{name} = {value} (must be 1..={max})")));
            }
        }
        if !heads.is_multiple_of(kv_heads) {
            return Err(invalid(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(invalid(format!(
                "head_dim {head_dim} is odd; RoPE rotates halves"
            )));
        }
        if raw.hidden_act != "silu" && raw.hidden_act != "swish" {
            return Err(invalid(format!(
                "hidden_act {:?} (Qwen3 uses silu)",
                raw.hidden_act
            )));
        }
        if !(raw.rms_norm_eps.is_finite() && raw.rms_norm_eps >= 0.0) {
            return Err(invalid(format!("rms_norm_eps {}", raw.rms_norm_eps)));
        }
        let sliding = raw.use_sliding_window
            || raw
                .layer_types
                .as_ref()
                .is_some_and(|t| t.iter().any(|l| l != "full_attention"));
        if sliding {
            return Err(invalid("sliding-window attention layers are not supported"));
        }
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        if let Some(kind) = rope.and_then(|r| r.rope_type.as_deref().or(r.legacy_type.as_deref())) {
            if kind != "default" {
                return Err(invalid(format!(
                    "rope type {kind:?} (only the default RoPE is supported)"
                )));
            }
        }
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA);
        if !(rope_theta.is_finite() && rope_theta > 1.0) {
            return Err(invalid(format!("rope_theta {rope_theta}")));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            tie_word_embeddings: raw.tie_word_embeddings,
            rope_theta,
            attention_bias: raw.attention_bias,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = r#"{"architectures": ["Qwen3ForCausalLM"], "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 1024, "intermediate_size": 3072, "max_position_embeddings": 40960,
        "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
        "tie_word_embeddings": true, "use_sliding_window": false, "vocab_size": 151669}"#;

    #[test]
    fn reads_the_shipped_layout_and_the_transformers_5_layout_alike() {
        let shipped = Qwen3Config::parse(SHIPPED).expect("shipped layout");
        assert_eq!(shipped.rope_theta, 1e6);
        assert_eq!(
            (
                shipped.num_attention_heads,
                shipped.num_key_value_heads,
                shipped.head_dim
            ),
            (16, 8, 128)
        );
        let v5 = SHIPPED
            .replace(r#""rope_scaling": null, "rope_theta": 1000000,"#, "")
            .replace(
                '}',
                r#", "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}"#,
            );
        assert_eq!(Qwen3Config::parse(&v5).expect("v5 layout"), shipped);
    }

    #[test]
    fn refuses_what_it_would_compute_wrongly() {
        for (from, to) in [
            (
                r#""use_sliding_window": false"#,
                r#""use_sliding_window": true"#,
            ),
            (
                r#""rope_scaling": null"#,
                r#""rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#,
            ),
            (r#""hidden_act": "silu""#, r#""hidden_act": "gelu""#),
            (r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 3"#),
            (r#""head_dim": 128"#, r#""head_dim": 0"#),
        ] {
            let text = SHIPPED.replace(from, to);
            assert_ne!(text, SHIPPED, "{from}");
            assert!(
                matches!(Qwen3Config::parse(&text), Err(EngineError::InvalidModel(_))),
                "accepted {to}"
            );
        }
    }
}
