//! A DeBERTa-v2/v3 checkpoint's tensors as both forward passes take them: f32, Q/K/V fused, and
//! the relative-position terms projected once at load.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::config::DebertaConfig;
use crate::EngineError;

/// A linear layer's (out × in) weight and (out) bias.
pub type Linear = (Tensor, Tensor);

/// One layer, f32.
pub struct LayerWeights {
    /// (3h × h) and (3h): query, key and value projections stacked.
    pub qkv: Linear,
    pub attn_out: Linear,
    /// LayerNorm gamma and beta after attention.
    pub attn_norm: Linear,
    pub ff_in: Linear,
    pub ff_out: Linear,
    pub ff_norm: Linear,
    /// c2p: the (2·span × h) relative-embedding table through the key projection (`key_proj`,
    /// or `pos_key_proj` without `share_att_key`), times the attention scale.
    pub pos_key: Option<Tensor>,
    /// p2c: the same through the query projection (`query_proj` / `pos_query_proj`), scaled.
    pub pos_query: Option<Tensor>,
}

impl LayerWeights {
    /// Reads layer `vb` (`deberta.encoder.layer.{i}`); `rel` is the (LayerNorm'd) relative
    /// embedding table when relative attention is on.
    fn load(
        vb: VarBuilder,
        cfg: &DebertaConfig,
        rel: Option<&Tensor>,
    ) -> Result<Self, EngineError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let linear =
            |vb: VarBuilder, outputs: usize, inputs: usize| -> Result<Linear, EngineError> {
                Ok((
                    vb.get((outputs, inputs), "weight")?,
                    vb.get(outputs, "bias")?,
                ))
            };
        let norm = |vb: VarBuilder| -> Result<Linear, EngineError> {
            Ok((vb.get(h, "weight")?, vb.get(h, "bias")?))
        };
        let attention = vb.pp("attention").pp("self");
        let query = linear(attention.pp("query_proj"), h, h)?;
        let key = linear(attention.pp("key_proj"), h, h)?;
        let value = linear(attention.pp("value_proj"), h, h)?;
        let scale = f64::from(cfg.attention_scale());
        // Constant per layer: projected here once rather than in every forward pass, and in f32
        // whatever the precision of the content projections.
        let project = |table: &Tensor, (w, b): &Linear| -> Result<Tensor, EngineError> {
            Ok((table.matmul(&w.t()?)?.broadcast_add(b)? * scale)?)
        };
        let (mut pos_key, mut pos_query) = (None, None);
        if let Some(rel) = rel {
            if cfg.c2p() {
                let proj = if cfg.share_att_key {
                    key.clone()
                } else {
                    linear(attention.pp("pos_key_proj"), h, h)?
                };
                pos_key = Some(project(rel, &proj)?);
            }
            if cfg.p2c() {
                let proj = if cfg.share_att_key {
                    query.clone()
                } else {
                    linear(attention.pp("pos_query_proj"), h, h)?
                };
                pos_query = Some(project(rel, &proj)?);
            }
        }
        let output = vb.pp("attention").pp("output");
        Ok(Self {
            qkv: (
                Tensor::cat(&[&query.0, &key.0, &value.0], 0)?,
                Tensor::cat(&[&query.1, &key.1, &value.1], 0)?,
            ),
            attn_out: linear(output.pp("dense"), h, h)?,
            attn_norm: norm(output.pp("LayerNorm"))?,
            ff_in: linear(vb.pp("intermediate").pp("dense"), i, h)?,
            ff_out: linear(vb.pp("output").pp("dense"), h, i)?,
            ff_norm: norm(vb.pp("output").pp("LayerNorm"))?,
            pos_key,
            pos_query,
        })
    }

    /// Every layer under `encoder` (`deberta.encoder`).
    pub fn load_all(encoder: &VarBuilder, cfg: &DebertaConfig) -> Result<Vec<Self>, EngineError> {
        let rel = if cfg.relative_attention {
            let rows = 2 * cfg.attention_span() as usize;
            let table = encoder
                .pp("rel_embeddings")
                .get((rows, cfg.hidden_size), "weight")?;
            Some(if cfg.norm_rel_embeddings() {
                let ln = encoder.pp("LayerNorm");
                let h = cfg.hidden_size;
                LayerNorm::new(ln.get(h, "weight")?, ln.get(h, "bias")?, cfg.layer_norm_eps)
                    .forward(&table)?
            } else {
                table
            })
        } else {
            None
        };
        (0..cfg.num_hidden_layers)
            .map(|i| Self::load(encoder.pp("layer").pp(i.to_string()), cfg, rel.as_ref()))
            .collect()
    }
}
