//! The BERT-family transformer encoder (BERT, RoBERTa, XLM-RoBERTa), written on candle tensors.
//!
//! We own this forward pass rather than using `candle-transformers`' `BertModel` because the
//! stock one builds its padding mask from `f32::MIN` (NaN once activations are bf16/f16), has no
//! RoBERTa position offset, and runs three projections where one fused QKV matmul does.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::hf_config::{HfConfig, HiddenAct};
use super::precision::{Precision, Projection, WordEmbeddings};
use super::EngineError;

/// The additive mask value for padded keys: finite in every dtype we run, and far enough below
/// any attention score that `exp` of it is exactly zero in f32.
const MASKED_SCORE: f32 = -1.0e30;

/// A padded batch ready for the encoder.
#[derive(Debug)]
pub struct EncoderInput {
    /// (batch, seq) token ids.
    pub input_ids: Tensor,
    /// (batch, seq) token type ids.
    pub token_type_ids: Tensor,
    /// (batch, seq) position ids.
    pub position_ids: Tensor,
    /// (batch, 1, 1, seq) additive f32 mask: 0 for real tokens, [`MASKED_SCORE`] for padding.
    pub attention_bias: Tensor,
    /// (batch, seq) f32: 1 for real tokens, 0 for padding (pooling needs it).
    pub token_mask: Tensor,
}

impl EncoderInput {
    /// Right-pads `sequences` (ids and type ids per sequence) to the longest one.
    pub fn pad(
        sequences: &[(&[u32], &[u32])],
        pad_id: u32,
        position_offset: usize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let batch = sequences.len();
        let seq = sequences
            .iter()
            .map(|(ids, _)| ids.len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![pad_id; batch * seq];
        let mut types = vec![0u32; batch * seq];
        let mut positions = vec![0u32; batch * seq];
        let mut mask = vec![0f32; batch * seq];
        let mut bias = vec![MASKED_SCORE; batch * seq];
        for (row, (seq_ids, seq_types)) in sequences.iter().enumerate() {
            let base = row * seq;
            for (i, &id) in seq_ids.iter().enumerate() {
                ids[base + i] = id;
                types[base + i] = seq_types.get(i).copied().unwrap_or(0);
                positions[base + i] = (position_offset + i) as u32;
                mask[base + i] = 1.0;
                bias[base + i] = 0.0;
            }
            // Pads take the padding position, as RoBERTa's position ids do; they are masked anyway.
            for p in positions[base + seq_ids.len()..base + seq].iter_mut() {
                *p = position_offset.saturating_sub(1) as u32;
            }
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (batch, seq), device)?,
            token_type_ids: Tensor::from_vec(types, (batch, seq), device)?,
            position_ids: Tensor::from_vec(positions, (batch, seq), device)?,
            attention_bias: Tensor::from_vec(bias, (batch, 1, 1, seq), device)?,
            token_mask: Tensor::from_vec(mask, (batch, seq), device)?,
        })
    }
}

struct Embeddings {
    words: WordEmbeddings,
    positions: Embedding,
    token_types: Option<Embedding>,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &HfConfig, precision: Precision) -> Result<Self, EngineError> {
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

    fn forward(&self, input: &EncoderInput, single_type: bool) -> Result<Tensor, EngineError> {
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
    fn load(vb: VarBuilder, cfg: &HfConfig, precision: Precision) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        if !h.is_multiple_of(cfg.num_attention_heads) {
            return Err(EngineError::InvalidModel(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            )));
        }
        let part = |name: &str| -> Result<(Tensor, Tensor), EngineError> {
            let p = vb.pp("self").pp(name);
            Ok((p.get((h, h), "weight")?, p.get(h, "bias")?))
        };
        let (qw, qb) = part("query")?;
        let (kw, kb) = part("key")?;
        let (vw, vbias) = part("value")?;
        let qkv = Projection::new(
            Tensor::cat(&[qw, kw, vw], 0)?,
            Some(Tensor::cat(&[qb, kb, vbias], 0)?),
            precision,
        )?;
        let out = vb.pp("output");
        Ok(Self {
            qkv,
            output: projection(out.pp("dense"), h, h, precision)?,
            layer_norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, out.pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
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
    fn load(vb: VarBuilder, cfg: &HfConfig, precision: Precision) -> Result<Self, EngineError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            intermediate: projection(vb.pp("intermediate").pp("dense"), h, i, precision)?,
            output: projection(vb.pp("output").pp("dense"), i, h, precision)?,
            layer_norm: candle_nn::layer_norm(
                h,
                cfg.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
            act: cfg.hidden_act,
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

/// Loads the f32 weight and bias under `vb` as a projection in `precision`.
fn projection(
    vb: VarBuilder,
    inputs: usize,
    outputs: usize,
    precision: Precision,
) -> Result<Projection, EngineError> {
    let weight = vb.get((outputs, inputs), "weight")?;
    let bias = vb.get(outputs, "bias")?;
    Projection::new(weight, Some(bias), precision)
}

struct Layer {
    attention: SelfAttention,
    feed_forward: FeedForward,
}

/// Embeddings plus the stack of transformer layers; returns the last hidden state.
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    single_type: bool,
}

impl Encoder {
    /// Loads the encoder from `vb` (f32), which must point at the model prefix (`bert.`,
    /// `roberta.` or the root for sentence-transformers checkpoints), with its projections in
    /// `precision`.
    pub fn load(vb: VarBuilder, cfg: &HfConfig, precision: Precision) -> Result<Self, EngineError> {
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg, precision)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let lv = vb.pp("encoder").pp("layer").pp(i.to_string());
                Ok(Layer {
                    attention: SelfAttention::load(lv.pp("attention"), cfg, precision)?,
                    feed_forward: FeedForward::load(lv.clone(), cfg, precision)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Self {
            embeddings,
            layers,
            single_type: cfg.type_vocab_size <= 1,
        })
    }

    /// Bytes of all weights as stored (embeddings, projections, LayerNorms).
    pub fn weight_bytes(&self) -> usize {
        let e = &self.embeddings;
        let tensor_bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let layer_norm =
            |ln: &LayerNorm| tensor_bytes(ln.weight()) + ln.bias().map_or(0, tensor_bytes);
        let mut total = e.words.weight_bytes()
            + tensor_bytes(e.positions.embeddings())
            + e.token_types
                .as_ref()
                .map_or(0, |t| tensor_bytes(t.embeddings()))
            + layer_norm(&e.layer_norm);
        for layer in &self.layers {
            let (a, f) = (&layer.attention, &layer.feed_forward);
            total += a.qkv.weight_bytes() + a.output.weight_bytes() + layer_norm(&a.layer_norm);
            total +=
                f.intermediate.weight_bytes() + f.output.weight_bytes() + layer_norm(&f.layer_norm);
        }
        total
    }

    /// (batch, seq, hidden) last hidden state.
    pub fn forward(&self, input: &EncoderInput) -> Result<Tensor, EngineError> {
        let mut x = self.embeddings.forward(input, self.single_type)?;
        for layer in &self.layers {
            x = layer.attention.forward(&x, &input.attention_bias)?;
            x = layer.feed_forward.forward(&x)?;
        }
        Ok(x)
    }
}

/// The first token's hidden state of every row: (batch, hidden).
pub fn first_token(hidden: &Tensor) -> Result<Tensor, EngineError> {
    Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?)
}

/// Mean of the hidden states over real tokens: (batch, hidden).
pub fn masked_mean(hidden: &Tensor, token_mask: &Tensor) -> Result<Tensor, EngineError> {
    let mask = token_mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(summed.broadcast_div(&counts)?)
}
