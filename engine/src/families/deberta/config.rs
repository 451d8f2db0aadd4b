//! DeBERTa-v2/v3 `config.json`, read the way transformers' `DebertaV2Config` reads it.
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/deberta_v2/configuration_deberta_v2.py>

use serde::Deserialize;

use crate::hf_config::HiddenAct;
use crate::EngineError;

/// The fields of a `deberta-v2` `config.json` the forward pass needs; each defaults as
/// `DebertaV2Config` defaults it, so sparse configs load.
#[derive(Debug, Clone, Deserialize)]
pub struct DebertaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// 0 (DeBERTa-v3): no token-type embeddings; the tokenizer's type ids are then ignored.
    #[serde(default)]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub relative_attention: bool,
    /// Below 1: `max_position_embeddings`.
    #[serde(default = "minus_one")]
    pub max_relative_positions: i64,
    /// Below 1: relative positions are not log-bucketed.
    #[serde(default = "minus_one")]
    pub position_buckets: i64,
    /// Whether absolute position embeddings are added to the word embeddings (v3: no).
    #[serde(default = "yes")]
    pub position_biased_input: bool,
    #[serde(default)]
    pub pos_att_type: PosAttType,
    /// `"layer_norm"` (v3): the relative-embedding table goes through a LayerNorm first.
    #[serde(default)]
    pub norm_rel_ebd: Option<String>,
    /// Whether the relative terms reuse the content query/key projections (v3: yes) or have
    /// their own `pos_key_proj` / `pos_query_proj`.
    #[serde(default)]
    pub share_att_key: bool,
    #[serde(default = "gelu_name")]
    pub pooler_hidden_act: String,
    #[serde(default)]
    pub pooler_hidden_size: Option<usize>,
    #[serde(default)]
    pub embedding_size: Option<usize>,
    #[serde(default)]
    pub attention_head_size: Option<usize>,
    #[serde(default)]
    pub conv_kernel_size: Option<usize>,
}

/// `pos_att_type`: a list (`["p2c", "c2p"]`) or, in older configs, one `"p2c|c2p"` string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum PosAttType {
    #[default]
    Absent,
    List(Vec<String>),
    Joined(String),
}

impl PosAttType {
    /// Whether `kind` (`c2p` or `p2c`) is listed.
    pub fn has(&self, kind: &str) -> bool {
        let matches = |s: &str| s.trim().eq_ignore_ascii_case(kind);
        match self {
            Self::Absent => false,
            Self::List(items) => items.iter().any(|s| matches(s)),
            Self::Joined(s) => s.split('|').any(matches),
        }
    }
}

/// The pooler's activation (`ACT2FN[pooler_hidden_act]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerAct {
    Hidden(HiddenAct),
    Tanh,
    Identity,
}

fn gelu() -> HiddenAct {
    HiddenAct::Gelu
}
fn gelu_name() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-7
}
fn default_max_positions() -> usize {
    512
}
fn minus_one() -> i64 {
    -1
}
fn yes() -> bool {
    true
}

impl DebertaConfig {
    /// Parses `config.json` text and refuses what this implementation does not run.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| EngineError::InvalidModel(format!("config.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), EngineError> {
        let invalid = |what: String| Err(EngineError::InvalidModel(format!("config.json: {what}")));
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
                return invalid(format!("{field} is {value}; a model needs {min} to {max}"));
            }
        }
        let h = self.hidden_size;
        if !h.is_multiple_of(self.num_attention_heads) {
            return invalid(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return invalid(format!("layer_norm_eps is {}", self.layer_norm_eps));
        }
        // Variants transformers supports that no DeBERTa-v2/v3 reranker uses: refused rather
        // than run wrongly.
        let head_dim = h / self.num_attention_heads;
        for (field, value, expected) in [
            ("embedding_size", self.embedding_size, h),
            ("pooler_hidden_size", self.pooler_hidden_size, h),
            ("attention_head_size", self.attention_head_size, head_dim),
        ] {
            if value.is_some_and(|v| v != expected) {
                return invalid(format!(
                    "{field} {value:?} other than {expected} is not supported"
                ));
            }
        }
        if self.conv_kernel_size.unwrap_or(0) > 0 {
            return invalid(
                "conv_kernel_size > 0 (the DeBERTa-v2 convolution layer) is not supported".into(),
            );
        }
        let span = self.attention_span();
        if self.relative_attention && !(1..=1 << 16).contains(&span) {
            return invalid(format!(
                "relative attention over {span} positions (position_buckets {}, max_relative_positions {})",
                self.position_buckets, self.max_relative_positions
            ));
        }
        self.pooler_act()?;
        Ok(())
    }

    /// `max_relative_positions` after its default.
    pub fn max_relative_positions(&self) -> i64 {
        if self.max_relative_positions < 1 {
            self.max_position_embeddings as i64
        } else {
            self.max_relative_positions
        }
    }

    /// `att_span` (`pos_ebd_size`): the relative-embedding table has twice as many rows.
    pub fn attention_span(&self) -> i64 {
        if self.position_buckets > 0 {
            self.position_buckets
        } else {
            self.max_relative_positions()
        }
    }

    /// Content → position term.
    pub fn c2p(&self) -> bool {
        self.pos_att_type.has("c2p")
    }

    /// Position → content term.
    pub fn p2c(&self) -> bool {
        self.pos_att_type.has("p2c")
    }

    /// `1 / √(head_dim · scale_factor)`; scale_factor counts the listed relative terms whether
    /// or not relative attention is on, as transformers does.
    pub fn attention_scale(&self) -> f32 {
        let head_dim = (self.hidden_size / self.num_attention_heads) as f32;
        let factor = 1 + usize::from(self.c2p()) + usize::from(self.p2c());
        1.0 / (head_dim * factor as f32).sqrt()
    }

    /// Whether the relative-embedding table is LayerNorm'd (`norm_rel_ebd` lists `layer_norm`).
    pub fn norm_rel_embeddings(&self) -> bool {
        self.norm_rel_ebd.as_deref().is_some_and(|s| {
            s.split('|')
                .any(|p| p.trim().eq_ignore_ascii_case("layer_norm"))
        })
    }

    pub fn pooler_act(&self) -> Result<PoolerAct, EngineError> {
        Ok(match self.pooler_hidden_act.as_str() {
            "tanh" => PoolerAct::Tanh,
            "linear" | "identity" => PoolerAct::Identity,
            name => PoolerAct::Hidden(
                serde_json::from_value(serde_json::Value::String(name.into())).map_err(|_| {
                    EngineError::InvalidModel(format!(
                        "config.json: pooler_hidden_act {name:?} is not supported"
                    ))
                })?,
            ),
        })
    }
}
