//! BERT-family layers on candle tensors (padded batches): embeddings, self-attention,
//! feed-forward, and the checkpoint's per-layer weights that both kernel paths build from.
//!
//! We own this forward pass rather than using `candle-transformers`' `BertModel` because the
//! stock one builds its padding mask from `f32::MIN` (NaN once activations are bf16/f16), has no
//! RoBERTa position offset, and runs three projections where one fused QKV matmul does.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use crate::families::padded_input::EncoderInput;
use crate::hf_config::{HfConfig, HiddenAct};
use crate::modes::Precision;
use crate::precision::{Projection, WordEmbeddings};
use crate::EngineError;

/// Word, position and token-type embeddings, summed and normalised.
pub(super) struct Embeddings {
    words: WordEmbeddings,
    positions: Embedding,
    token_types: Option<Embedding>,
    layer_norm: LayerNorm,
}

impl Embeddings {
    pub(super) fn load(
        vb: VarBuilder,
        cfg: &HfConfig,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        // type_vocab_size = 1 (XLM-R): every token uses the single row, whatever the tokenizer says.
        let token_types = if cfg.type_vocab_size > 0 {
            Some(candle_nn::embedding(
                cfg.type_vocab_size,
                h,
                vb.pp("token_type_embeddings"),
            )?)
        } else {
            None
        };
        Ok(Self {
            words: WordEmbeddings::new(
                vb.pp("word_embeddings")
                    .get((cfg.vocab_size, h), "weight")?,
                precision,
            )?,
            positions: candle_nn::embedding(
                cfg.max_position_embeddings,
                h,
                vb.pp("position_embeddings"),
            )?,
            token_types,
            layer_norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    pub(super) fn forward(
        &self,
        input: &EncoderInput,
        single_type: bool,
    ) -> Result<Tensor, EngineError> {
        let mut x = self.words.forward(&input.input_ids)?;
        x = (x + self.positions.forward(&input.position_ids)?)?;
        if let Some(types) = &self.token_types {
            let type_ids = if single_type {
                input.token_type_ids.zeros_like()?
            } else {
                input.token_type_ids.clone()
            };
            x = (x + types.forward(&type_ids)?)?;
        }
        Ok(self.layer_norm.forward(&x)?)
    }
}

struct SelfAttention {
    /// Query, key and value projections fused into one (3h × h) matmul.
    qkv: Projection,
    output: Projection,
    layer_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(w: &LayerWeights, precision: Precision) -> Result<Self, EngineError> {
        Ok(Self {
            qkv: Projection::new(w.qkv.0.clone(), Some(w.qkv.1.clone()), precision)?,
            output: Projection::new(w.attn_out.0.clone(), Some(w.attn_out.1.clone()), precision)?,
            layer_norm: LayerNorm::new(w.attn_norm.0.clone(), w.attn_norm.1.clone(), w.eps),
            heads: w.heads,
            head_dim: w.qkv.0.dim(1)? / w.heads,
        })
    }

    fn forward(&self, x: &Tensor, attention_bias: &Tensor) -> Result<Tensor, EngineError> {
        let (b, s, h) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, s, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        // Softmax runs in f32 whatever the activation dtype, so the mask can never overflow.
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(attention_bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let projected = self.output.forward(&context)?;
        Ok(self.layer_norm.forward(&(projected + x)?)?)
    }
}

struct FeedForward {
    intermediate: Projection,
    output: Projection,
    layer_norm: LayerNorm,
    act: HiddenAct,
}

impl FeedForward {
    fn new(w: &LayerWeights, precision: Precision) -> Result<Self, EngineError> {
        Ok(Self {
            intermediate: Projection::new(w.ff_in.0.clone(), Some(w.ff_in.1.clone()), precision)?,
            output: Projection::new(w.ff_out.0.clone(), Some(w.ff_out.1.clone()), precision)?,
            layer_norm: LayerNorm::new(w.ff_norm.0.clone(), w.ff_norm.1.clone(), w.eps),
            act: w.act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        let hidden = self.intermediate.forward(x)?;
        let hidden = match self.act {
            HiddenAct::Gelu => hidden.gelu_erf()?,
            HiddenAct::GeluApproximate => hidden.gelu()?,
            HiddenAct::Relu => hidden.relu()?,
            HiddenAct::Silu => hidden.silu()?,
        };
        let out = self.output.forward(&hidden)?;
        Ok(self.layer_norm.forward(&(out + x)?)?)
    }
}

/// One transformer layer's f32 weights as the checkpoint names them, with Q, K and V already
/// fused: the one place that knows the checkpoint layout, whichever forward pass runs them.
pub struct LayerWeights {
    /// (3h × h) weight and (3h) bias: query, key and value stacked.
    pub qkv: (Tensor, Tensor),
    pub attn_out: (Tensor, Tensor),
    /// LayerNorm gamma and beta after attention.
    pub attn_norm: (Tensor, Tensor),
    /// (i × h) and (i): the intermediate projection.
    pub ff_in: (Tensor, Tensor),
    /// (h × i) and (h).
    pub ff_out: (Tensor, Tensor),
    pub ff_norm: (Tensor, Tensor),
    pub heads: usize,
    pub eps: f64,
    pub act: HiddenAct,
}

impl LayerWeights {
    /// Reads layer `vb` (`encoder.layer.{i}`).
    pub fn load(vb: VarBuilder, cfg: &HfConfig) -> Result<Self, EngineError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        if !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(EngineError::InvalidModel(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            )));
        }
        let linear = |vb: VarBuilder, outputs: usize, inputs: usize| -> Result<_, EngineError> {
            Ok((
                vb.get((outputs, inputs), "weight")?,
                vb.get(outputs, "bias")?,
            ))
        };
        let norm = |vb: VarBuilder| -> Result<_, EngineError> {
            Ok((vb.get(h, "weight")?, vb.get(h, "bias")?))
        };
        let attention = vb.pp("attention");
        let (qw, qb) = linear(attention.pp("self").pp("query"), h, h)?;
        let (kw, kb) = linear(attention.pp("self").pp("key"), h, h)?;
        let (vw, vbias) = linear(attention.pp("self").pp("value"), h, h)?;
        Ok(Self {
            qkv: (
                Tensor::cat(&[qw, kw, vw], 0)?,
                Tensor::cat(&[qb, kb, vbias], 0)?,
            ),
            attn_out: linear(attention.pp("output").pp("dense"), h, h)?,
            attn_norm: norm(attention.pp("output").pp("LayerNorm"))?,
            ff_in: linear(vb.pp("intermediate").pp("dense"), i, h)?,
            ff_out: linear(vb.pp("output").pp("dense"), h, i)?,
            ff_norm: norm(vb.pp("output").pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            act: cfg.hidden_act,
        })
    }

    /// Every layer of the encoder under `vb`.
    pub fn load_all(vb: &VarBuilder, cfg: &HfConfig) -> Result<Vec<Self>, EngineError> {
        (0..cfg.num_hidden_layers)
            .map(|i| Self::load(vb.pp("encoder").pp("layer").pp(i.to_string()), cfg))
            .collect()
    }
}

/// One transformer layer on candle: post-LN self-attention, then post-LN feed-forward.
pub(super) struct Layer {
    attention: SelfAttention,
    feed_forward: FeedForward,
}

impl Layer {
    pub(super) fn new(w: &LayerWeights, precision: Precision) -> Result<Self, EngineError> {
        Ok(Self {
            attention: SelfAttention::new(w, precision)?,
            feed_forward: FeedForward::new(w, precision)?,
        })
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        attention_bias: &Tensor,
    ) -> Result<Tensor, EngineError> {
        let x = self.attention.forward(x, attention_bias)?;
        self.feed_forward.forward(&x)
    }

    /// Bytes of the layer's weights as stored.
    pub(super) fn weight_bytes(&self) -> usize {
        let (a, f) = (&self.attention, &self.feed_forward);
        a.qkv.weight_bytes()
            + a.output.weight_bytes()
            + layer_norm_bytes(&a.layer_norm)
            + f.intermediate.weight_bytes()
            + f.output.weight_bytes()
            + layer_norm_bytes(&f.layer_norm)
    }
}

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

fn layer_norm_bytes(ln: &LayerNorm) -> usize {
    tensor_bytes(ln.weight()) + ln.bias().map_or(0, tensor_bytes)
}

impl Embeddings {
    /// Bytes of the embedding tables and their LayerNorm as stored.
    pub(super) fn weight_bytes(&self) -> usize {
        self.words.weight_bytes()
            + tensor_bytes(self.positions.embeddings())
            + self
                .token_types
                .as_ref()
                .map_or(0, |t| tensor_bytes(t.embeddings()))
            + layer_norm_bytes(&self.layer_norm)
    }
}
