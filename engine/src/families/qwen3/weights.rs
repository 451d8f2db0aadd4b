//! The checkpoint's tensors, read once into the shapes both kernel paths build from.
//!
//! Qwen3 checkpoints name their tensors `model.embed_tokens`, `model.layers.{i}.self_attn.
//! {q,k,v,o}_proj`, `…self_attn.{q,k}_norm`, `…mlp.{gate,up,down}_proj`, `…input_layernorm`,
//! `…post_attention_layernorm`, `model.norm`, and then `lm_head` (causal LM, absent when the
//! embeddings are tied) or `score` (sequence classification). Some exports drop the `model.`
//! level; both load.

use candle_core::{IndexOp, Tensor};
use candle_nn::VarBuilder;

use super::config::Qwen3Config;
use crate::EngineError;

/// One decoder layer's f32 weights, with the projections that read the same input fused.
pub struct LayerWeights {
    /// ((heads + 2·kv_heads)·head_dim × hidden): query, key and value stacked.
    pub qkv: Tensor,
    pub qkv_bias: Option<Tensor>,
    /// (hidden × heads·head_dim).
    pub o: Tensor,
    pub o_bias: Option<Tensor>,
    /// (2·intermediate × hidden): gate then up.
    pub gate_up: Tensor,
    /// (hidden × intermediate).
    pub down: Tensor,
    /// RMSNorm weights: before attention, before the MLP, and per head on queries and keys.
    pub input_norm: Tensor,
    pub post_attention_norm: Tensor,
    pub q_norm: Tensor,
    pub k_norm: Tensor,
}

impl LayerWeights {
    fn load(vb: VarBuilder, cfg: &Qwen3Config) -> Result<Self, EngineError> {
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        let w = |vb: VarBuilder, out: usize, inp: usize| vb.get((out, inp), "weight");
        let qkv = Tensor::cat(
            &[
                w(attn.pp("q_proj"), q_out, h)?,
                w(attn.pp("k_proj"), kv_out, h)?,
                w(attn.pp("v_proj"), kv_out, h)?,
            ],
            0,
        )?;
        let (qkv_bias, o_bias) = if cfg.attention_bias {
            let b = |name: &str, n: usize| attn.pp(name).get(n, "bias");
            (
                Some(Tensor::cat(
                    &[
                        b("q_proj", q_out)?,
                        b("k_proj", kv_out)?,
                        b("v_proj", kv_out)?,
                    ],
                    0,
                )?),
                Some(b("o_proj", h)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            qkv,
            qkv_bias,
            o: w(attn.pp("o_proj"), h, q_out)?,
            o_bias,
            gate_up: Tensor::cat(
                &[w(mlp.pp("gate_proj"), i, h)?, w(mlp.pp("up_proj"), i, h)?],
                0,
            )?,
            down: w(mlp.pp("down_proj"), h, i)?,
            input_norm: vb.pp("input_layernorm").get(h, "weight")?,
            post_attention_norm: vb.pp("post_attention_layernorm").get(h, "weight")?,
            q_norm: attn.pp("q_norm").get(d, "weight")?,
            k_norm: attn.pp("k_norm").get(d, "weight")?,
        })
    }
}

/// Everything but the head: embeddings, layers, final norm.
pub struct BodyWeights {
    /// (vocab × hidden).
    pub embed_tokens: Tensor,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
}

/// The scoring rule's weights.
pub enum HeadWeights {
    /// `Qwen3ForCausalLM`: the "yes" and "no" rows of the LM head, (2 × hidden); the raw score is
    /// their logit difference.
    YesNo(Tensor),
    /// `Qwen3ForSequenceClassification` with one label: the (1 × hidden) `score` head.
    Score(Tensor),
}

/// Which form of checkpoint is loaded, and for the causal form which tokens answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadForm {
    CausalLm { yes: u32, no: u32 },
    SequenceClassification,
}

/// `vb` at the decoder body: `model.` where the checkpoint has it, else the root.
fn body_vb<'a>(vb: &VarBuilder<'a>) -> Result<VarBuilder<'a>, EngineError> {
    if vb.contains_tensor("model.embed_tokens.weight") {
        Ok(vb.pp("model"))
    } else if vb.contains_tensor("embed_tokens.weight") {
        Ok(vb.clone())
    } else {
        Err(EngineError::InvalidModel(
            "no embed_tokens.weight tensor (under '' or model.)".into(),
        ))
    }
}

/// Reads the body and the head of a checkpoint.
pub fn load(
    vb: &VarBuilder,
    cfg: &Qwen3Config,
    form: HeadForm,
) -> Result<(BodyWeights, HeadWeights), EngineError> {
    let body = body_vb(vb)?;
    let h = cfg.hidden_size;
    let embed_tokens = body.pp("embed_tokens").get((cfg.vocab_size, h), "weight")?;
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| LayerWeights::load(body.pp("layers").pp(i.to_string()), cfg))
        .collect::<Result<Vec<_>, EngineError>>()?;
    let norm = body.pp("norm").get(h, "weight")?;
    let head = match form {
        HeadForm::CausalLm { yes, no } => {
            for id in [yes, no] {
                if id as usize >= cfg.vocab_size {
                    return Err(EngineError::InvalidModel(format!(
                        "answer token id {id} is outside the vocabulary of {}",
                        cfg.vocab_size
                    )));
                }
            }
            // Tied checkpoints store no lm_head (transformers ties it to the embeddings even
            // where a copy is stored); untied ones (Qwen3-Reranker-8B) do.
            let table = if cfg.tie_word_embeddings {
                embed_tokens.clone()
            } else if vb.contains_tensor("lm_head.weight") {
                vb.pp("lm_head").get((cfg.vocab_size, h), "weight")?
            } else {
                return Err(EngineError::InvalidModel(
                    "tie_word_embeddings is false but there is no lm_head.weight".into(),
                ));
            };
            HeadWeights::YesNo(Tensor::stack(
                &[table.i(yes as usize)?, table.i(no as usize)?],
                0,
            )?)
        }
        HeadForm::SequenceClassification => {
            let score = vb.pp("score").get_unchecked("weight")?;
            if score.dims() != [1, h] {
                return Err(EngineError::InvalidModel(format!(
                    "score.weight has shape {:?}; a reranker has one label over {h} values",
                    score.dims()
                )));
            }
            HeadWeights::Score(score)
        }
    };
    Ok((
        BodyWeights {
            embed_tokens,
            layers,
            norm,
        },
        head,
    ))
}
