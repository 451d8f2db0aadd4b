//! ModernBERT's encoder on candle tensors over right-padded batches: every device, every
//! precision (the projections stored as [`Precision`] says; see `crate::precision`).
//!
//! Padding is masked in every layer by an additive f32 bias of [`MASKED_SCORE`]; local layers add
//! a band that masks keys more than `local_attention / 2` positions away. Scores go to f32 before
//! the masks and the softmax, so the masks never overflow a reduced dtype.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::LayerNorm;

use super::config::{Activation, LayerKind, ModernBertConfig};
use super::weights::{EncoderWeights, LayerWeights, LinearWeights, NormWeights};
use crate::families::padded_input::MASKED_SCORE;
use crate::kernels::rope::RopeCache;
use crate::modes::Precision;
use crate::precision::{Projection, WordEmbeddings};
use crate::EngineError;

/// `act(x)` on a tensor.
pub(super) fn activate(x: &Tensor, act: Activation) -> Result<Tensor, EngineError> {
    Ok(match act {
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Relu => x.relu()?,
        Activation::Silu => x.silu()?,
        Activation::Tanh => x.tanh()?,
    })
}

/// A candle LayerNorm from checkpoint weights, with or without beta.
pub(super) fn layer_norm(w: &NormWeights, eps: f64) -> LayerNorm {
    match &w.bias {
        Some(b) => LayerNorm::new(w.weight.clone(), b.clone(), eps),
        None => LayerNorm::new_no_bias(w.weight.clone(), eps),
    }
}

fn projection(w: &LinearWeights, precision: Precision) -> Result<Projection, EngineError> {
    Projection::new(w.weight.clone(), w.bias.clone(), precision)
}

/// Bytes of a LayerNorm's parameters.
fn norm_bytes(norm: &LayerNorm) -> usize {
    let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    bytes(norm.weight()) + norm.bias().map_or(0, bytes)
}

/// The cos/sin tensors of one forward pass: (seq × head_dim/2) each.
struct Rotation {
    cos: Tensor,
    sin: Tensor,
}

impl Rotation {
    fn new(cache: &RopeCache, seq: usize, device: &Device) -> Result<Self, EngineError> {
        let table = cache.covering(seq)?;
        let (cos, sin) = table.cos_sin();
        let half = cos.len() / table.positions().max(1);
        Ok(Self {
            cos: Tensor::from_slice(&cos[..seq * half], (seq, half), device)?,
            sin: Tensor::from_slice(&sin[..seq * half], (seq, half), device)?,
        })
    }

    /// Rotates (batch, heads, seq, head_dim) `x` by positions 0..seq.
    fn apply(&self, x: &Tensor) -> Result<Tensor, EngineError> {
        let cos = self.cos.to_dtype(x.dtype())?;
        let sin = self.sin.to_dtype(x.dtype())?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}

/// One encoder layer on candle.
struct Layer {
    kind: LayerKind,
    /// `None` in layer 0.
    attn_norm: Option<LayerNorm>,
    wqkv: Projection,
    wo: Projection,
    mlp_norm: LayerNorm,
    wi: Projection,
    mlp_wo: Projection,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    act: Activation,
}

impl Layer {
    fn new(
        w: &LayerWeights,
        cfg: &ModernBertConfig,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            kind: w.kind,
            attn_norm: w.attn_norm.as_ref().map(|n| layer_norm(n, cfg.norm_eps)),
            wqkv: projection(&w.wqkv, precision)?,
            wo: projection(&w.wo, precision)?,
            mlp_norm: layer_norm(&w.mlp_norm, cfg.norm_eps),
            wi: projection(&w.wi, precision)?,
            mlp_wo: projection(&w.mlp_wo, precision)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            intermediate: cfg.intermediate_size,
            act: cfg.hidden_activation,
        })
    }

    fn weight_bytes(&self) -> usize {
        self.attn_norm.as_ref().map_or(0, norm_bytes)
            + norm_bytes(&self.mlp_norm)
            + [&self.wqkv, &self.wo, &self.wi, &self.mlp_wo]
                .iter()
                .map(|p| p.weight_bytes())
                .sum::<usize>()
    }

    /// One layer over (batch, seq, hidden) `x`; `bias` is this layer kind's additive f32 score
    /// mask, broadcastable to (batch, heads, seq, seq).
    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        rotation: &Rotation,
    ) -> Result<Tensor, EngineError> {
        let (b, s, h) = x.dims3()?;
        let normed = match &self.attn_norm {
            Some(norm) => norm.forward(x)?,
            None => x.clone(),
        };
        let qkv = self
            .wqkv
            .forward(&normed)?
            .reshape((b, s, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = rotation.apply(&qkv.get(0)?)?;
        let k = rotation.apply(&qkv.get(1)?)?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let x = (x + self.wo.forward(&context)?)?;
        // GeGLU: Wi's output is the activation's input, then its gate.
        let gated = self.wi.forward(&self.mlp_norm.forward(&x)?)?;
        let input = gated.narrow(D::Minus1, 0, self.intermediate)?;
        let gate = gated.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        let hidden = (activate(&input, self.act)? * gate)?;
        Ok((x + self.mlp_wo.forward(&hidden)?)?)
    }
}

/// The additive masks of one padded batch.
struct Masks {
    /// (batch, 1, 1, seq): padding, for global layers.
    padding: Tensor,
    /// (batch, 1, seq, seq): padding plus the sliding-window band, for local layers.
    local: Tensor,
}

impl Masks {
    /// Masks for rows of these `lengths`, right-padded to the longest.
    fn new(lengths: &[usize], half_window: usize, device: &Device) -> Result<Self, EngineError> {
        let seq = lengths.iter().copied().max().unwrap_or(0);
        let mut padding = vec![MASKED_SCORE; lengths.len() * seq];
        for (row, &len) in lengths.iter().enumerate() {
            padding[row * seq..row * seq + len].fill(0.0);
        }
        let band: Vec<f32> = (0..seq * seq)
            .map(|n| {
                if (n / seq).abs_diff(n % seq) <= half_window {
                    0.0
                } else {
                    MASKED_SCORE
                }
            })
            .collect();
        let padding = Tensor::from_vec(padding, (lengths.len(), 1, 1, seq), device)?;
        let band = Tensor::from_vec(band, (1, 1, seq, seq), device)?;
        Ok(Self {
            local: padding.broadcast_add(&band)?,
            padding,
        })
    }
}

/// Word embeddings and their norm: the input of both kernel paths.
pub(super) struct Embeddings {
    words: WordEmbeddings,
    norm: LayerNorm,
}

impl Embeddings {
    pub(super) fn new(
        weights: &EncoderWeights,
        cfg: &ModernBertConfig,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            words: WordEmbeddings::new(weights.tok_embeddings.clone(), precision)?,
            norm: layer_norm(&weights.embed_norm, cfg.norm_eps),
        })
    }

    /// (…, hidden) normalized embeddings of `ids`.
    pub(super) fn forward(&self, ids: &Tensor) -> Result<Tensor, EngineError> {
        Ok(self.norm.forward(&self.words.forward(ids)?)?)
    }

    pub(super) fn weight_bytes(&self) -> usize {
        self.words.weight_bytes() + norm_bytes(&self.norm)
    }
}

/// The layers and the final norm on candle tensors.
pub(super) struct CandleLayers {
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    global_rope: RopeCache,
    local_rope: RopeCache,
    half_window: usize,
}

impl CandleLayers {
    /// Builds the layers from f32 `weights` with projections in `precision`; `global_rope` and
    /// `local_rope` give the two kinds' rotations.
    pub(super) fn new(
        weights: &EncoderWeights,
        cfg: &ModernBertConfig,
        precision: Precision,
        global_rope: RopeCache,
        local_rope: RopeCache,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            layers: weights
                .layers
                .iter()
                .map(|w| Layer::new(w, cfg, precision))
                .collect::<Result<_, _>>()?,
            final_norm: layer_norm(&weights.final_norm, cfg.norm_eps),
            global_rope,
            local_rope,
            half_window: cfg.half_window(),
        })
    }

    pub(super) fn weight_bytes(&self) -> usize {
        self.layers.iter().map(Layer::weight_bytes).sum::<usize>() + norm_bytes(&self.final_norm)
    }

    /// The (batch, seq, hidden) last hidden state, after `final_norm`, of the embedded
    /// right-padded batch `x` whose rows hold these `lengths` of real tokens.
    pub(super) fn forward(&self, x: Tensor, lengths: &[usize]) -> Result<Tensor, EngineError> {
        let (_, seq, _) = x.dims3()?;
        let device = x.device().clone();
        let masks = Masks::new(lengths, self.half_window, &device)?;
        let global = Rotation::new(&self.global_rope, seq, &device)?;
        let local = Rotation::new(&self.local_rope, seq, &device)?;
        let mut x = x;
        for layer in &self.layers {
            x = match layer.kind {
                LayerKind::Global => layer.forward(&x, &masks.padding, &global)?,
                LayerKind::Local => layer.forward(&x, &masks.local, &local)?,
            };
        }
        Ok(self.final_norm.forward(&x)?)
    }
}
