//! The BERT-family transformer encoder (BERT, RoBERTa, XLM-RoBERTa), written on candle tensors.
//!
//! We own this forward pass rather than using `candle-transformers`' `BertModel` because the
//! stock one builds its padding mask from `f32::MIN` (NaN once activations are bf16/f16), has no
//! RoBERTa position offset, and runs three projections where one fused QKV matmul does.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::batching::{packed_batches, token_budget_batches};
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
    /// All `sequences` concatenated into one row of tokens (batch 1), for the packed encoder:
    /// positions restart at every sequence; the mask and bias are unused there.
    pub fn packed(
        sequences: &[(&[u32], &[u32])],
        position_offset: usize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let total: usize = sequences.iter().map(|(ids, _)| ids.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for (seq_ids, seq_types) in sequences {
            ids.extend_from_slice(seq_ids);
            types.extend((0..seq_ids.len()).map(|i| seq_types.get(i).copied().unwrap_or(0)));
            positions.extend((0..seq_ids.len()).map(|i| (position_offset + i) as u32));
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (1, total), device)?,
            token_type_ids: Tensor::from_vec(types, (1, total), device)?,
            position_ids: Tensor::from_vec(positions, (1, total), device)?,
            attention_bias: Tensor::zeros((1, 1, 1, total), DType::F32, device)?,
            token_mask: Tensor::ones((1, total), DType::F32, device)?,
        })
    }

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

struct Layer {
    attention: SelfAttention,
    feed_forward: FeedForward,
}

/// Which implementation runs the transformer layers on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Candle tensors over padded batches: every device, every precision.
    Candle,
    /// oneDNN over packed sequences (in builds with oneDNN): CPU only, f32/bf16/int8, GELU
    /// models; anything else falls back to [`Kernels::Candle`].
    OneDnn,
}

impl Kernels {
    /// The kernels these (`CPU_KERNELS`) become on `device`: oneDNN only on the CPU. The packed
    /// oneDNN pass reads and writes host memory, so on a GPU it would copy every activation
    /// across PCIe and run the layers on the CPU; every other device runs candle's kernels.
    pub fn on_device(self, device: &Device) -> Self {
        if self == Self::OneDnn && !device.is_cpu() {
            tracing::info!("oneDNN kernels are CPU-only; candle kernels on this device");
            Self::Candle
        } else {
            self
        }
    }
}

enum Body {
    Candle(Vec<Layer>),
    #[cfg(has_onednn)]
    Packed(Box<super::onednn::PackedLayers>),
}

/// Embeddings plus the stack of transformer layers; returns the last hidden state.
pub struct Encoder {
    embeddings: Embeddings,
    body: Body,
    single_type: bool,
    #[cfg_attr(not(has_onednn), allow(dead_code))]
    hidden: usize,
}

impl Encoder {
    /// Loads the encoder from `vb` (f32), which must point at the model prefix (`bert.`,
    /// `roberta.` or the root for sentence-transformers checkpoints), with its projections in
    /// `precision`, on `kernels` where they can run it (never oneDNN off the CPU: see
    /// [`Kernels::on_device`]).
    pub fn load(
        vb: VarBuilder,
        cfg: &HfConfig,
        precision: Precision,
        kernels: Kernels,
    ) -> Result<Self, EngineError> {
        let kernels = kernels.on_device(vb.device());
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg, precision)?;
        let weights = LayerWeights::load_all(&vb, cfg)?;
        let body = match Self::packed(&weights, cfg, precision, kernels)? {
            Some(body) => body,
            None => Body::Candle(
                weights
                    .iter()
                    .map(|w| {
                        Ok(Layer {
                            attention: SelfAttention::new(w, precision)?,
                            feed_forward: FeedForward::new(w, precision)?,
                        })
                    })
                    .collect::<Result<Vec<_>, EngineError>>()?,
            ),
        };
        Ok(Self {
            embeddings,
            body,
            single_type: cfg.type_vocab_size <= 1,
            hidden: cfg.hidden_size,
        })
    }

    #[cfg(has_onednn)]
    fn packed(
        weights: &[LayerWeights],
        cfg: &HfConfig,
        precision: Precision,
        kernels: Kernels,
    ) -> Result<Option<Body>, EngineError> {
        if kernels != Kernels::OneDnn {
            return Ok(None);
        }
        if !super::onednn::supports(precision, cfg.hidden_act) {
            tracing::info!(
                precision = precision.name(),
                activation = ?cfg.hidden_act,
                "oneDNN kernels do not cover this model/precision; using candle"
            );
            return Ok(None);
        }
        if precision == Precision::Bf16 && !super::native_bf16() {
            // oneDNN 2.x has no bf16 matmul below AVX-512 (and only an emulated one without
            // AVX512-BF16); candle keeps bf16 weights and computes in f32.
            tracing::warn!(
                "this CPU has no native bf16 (AVX512-BF16): bf16 runs on candle kernels \
                 (bf16 weights, f32 compute), slower than QUANTIZATION=none here"
            );
            return Ok(None);
        }
        match super::onednn::PackedLayers::new(weights, precision) {
            Ok(layers) => {
                tracing::info!(
                    precision = precision.name(),
                    kernel = layers.implementation(),
                    "transformer layers on oneDNN (packed sequences)"
                );
                Ok(Some(Body::Packed(Box::new(layers))))
            }
            Err(e) => {
                tracing::warn!(error = %e, "oneDNN unavailable; using candle");
                Ok(None)
            }
        }
    }

    #[cfg(not(has_onednn))]
    fn packed(
        _weights: &[LayerWeights],
        _cfg: &HfConfig,
        _precision: Precision,
        kernels: Kernels,
    ) -> Result<Option<Body>, EngineError> {
        if kernels == Kernels::OneDnn {
            tracing::info!("built without oneDNN; using candle");
        }
        Ok(None)
    }

    /// Whether the layers run over packed sequences (then batches are bounded by real tokens,
    /// not `rows × longest`).
    pub fn is_packed(&self) -> bool {
        !matches!(self.body, Body::Candle(_))
    }

    /// Groups inputs of these token `lengths` into forward passes within `max_batch_tokens`:
    /// counted in real tokens when the layers run packed, in `rows × longest` when padded.
    pub fn batches(&self, lengths: &[usize], max_batch_tokens: usize) -> Vec<Vec<usize>> {
        if self.is_packed() {
            packed_batches(lengths, max_batch_tokens)
        } else {
            token_budget_batches(lengths, max_batch_tokens)
        }
    }

    /// One forward pass over `sequences` (ids and type ids), packed or padded as the layers
    /// run: the (batch, longest, hidden) last hidden state and the (batch, longest) token mask.
    pub fn forward_batch(
        &self,
        sequences: &[(&[u32], &[u32])],
        pad_id: u32,
        position_offset: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor), EngineError> {
        if self.is_packed() {
            return self.forward_packed(sequences, position_offset, device);
        }
        let input = EncoderInput::pad(sequences, pad_id, position_offset, device)?;
        let hidden = self.forward(&input)?;
        Ok((hidden, input.token_mask))
    }

    /// The kernels actually running the layers.
    pub fn kernels(&self) -> Kernels {
        match self.body {
            Body::Candle(_) => Kernels::Candle,
            #[cfg(has_onednn)]
            Body::Packed(_) => Kernels::OneDnn,
        }
    }

    /// `candle`, or `onednn (<kernel family>)`, for `/info`.
    pub fn kernels_name(&self) -> String {
        match &self.body {
            Body::Candle(_) => "candle".into(),
            #[cfg(has_onednn)]
            Body::Packed(layers) => format!("onednn ({})", layers.implementation()),
        }
    }

    /// Bytes of all weights as stored (embeddings, projections, LayerNorms).
    pub fn weight_bytes(&self) -> usize {
        let e = &self.embeddings;
        let tensor_bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let layer_norm =
            |ln: &LayerNorm| tensor_bytes(ln.weight()) + ln.bias().map_or(0, tensor_bytes);
        let embeddings = e.words.weight_bytes()
            + tensor_bytes(e.positions.embeddings())
            + e.token_types
                .as_ref()
                .map_or(0, |t| tensor_bytes(t.embeddings()))
            + layer_norm(&e.layer_norm);
        let layers: usize = match &self.body {
            Body::Candle(layers) => layers
                .iter()
                .map(|layer| {
                    let (a, f) = (&layer.attention, &layer.feed_forward);
                    a.qkv.weight_bytes()
                        + a.output.weight_bytes()
                        + layer_norm(&a.layer_norm)
                        + f.intermediate.weight_bytes()
                        + f.output.weight_bytes()
                        + layer_norm(&f.layer_norm)
                })
                .sum(),
            #[cfg(has_onednn)]
            Body::Packed(layers) => layers.weight_bytes(),
        };
        embeddings + layers
    }

    /// (batch, seq, hidden) last hidden state of a padded batch.
    pub fn forward(&self, input: &EncoderInput) -> Result<Tensor, EngineError> {
        let mut x = self.embeddings.forward(input, self.single_type)?;
        match &self.body {
            Body::Candle(layers) => {
                for layer in layers {
                    x = layer.attention.forward(&x, &input.attention_bias)?;
                    x = layer.feed_forward.forward(&x)?;
                }
                Ok(x)
            }
            #[cfg(has_onednn)]
            Body::Packed(_) => Err(EngineError::Internal(
                "padded batch sent to the packed encoder".into(),
            )),
        }
    }

    /// Runs `sequences` packed end to end (no padding inside the layers) and returns the
    /// same (batch, longest, hidden) hidden state and (batch, longest) token mask as a padded
    /// forward pass would, for the heads.
    #[cfg(has_onednn)]
    fn forward_packed(
        &self,
        sequences: &[(&[u32], &[u32])],
        position_offset: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor), EngineError> {
        let Body::Packed(layers) = &self.body else {
            return Err(EngineError::Internal(
                "packed batch sent to the padded encoder".into(),
            ));
        };
        let input = EncoderInput::packed(sequences, position_offset, device)?;
        let embedded = self.embeddings.forward(&input, self.single_type)?;
        let mut x: Vec<f32> = embedded.flatten_all()?.to_vec1::<f32>()?;
        let mut offsets = Vec::with_capacity(sequences.len() + 1);
        offsets.push(0i64);
        for (ids, _) in sequences {
            offsets.push(offsets.last().copied().unwrap_or(0) + ids.len() as i64);
        }
        layers.forward(&mut x, &offsets)?;
        unpack(&x, &offsets, self.hidden, device)
    }

    /// Without oneDNN there is no packed path ([`Encoder::is_packed`] is always false).
    #[cfg(not(has_onednn))]
    fn forward_packed(
        &self,
        _sequences: &[(&[u32], &[u32])],
        _position_offset: usize,
        _device: &Device,
    ) -> Result<(Tensor, Tensor), EngineError> {
        Err(EngineError::Internal(
            "this build has no packed encoder".into(),
        ))
    }
}

/// Scatters packed rows back into a zero-padded (batch, longest, hidden) tensor plus its mask.
#[cfg(has_onednn)]
fn unpack(
    packed: &[f32],
    offsets: &[i64],
    hidden: usize,
    device: &Device,
) -> Result<(Tensor, Tensor), EngineError> {
    let batch = offsets.len().saturating_sub(1);
    let lengths: Vec<usize> = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let mut padded = vec![0f32; batch * longest * hidden];
    let mut mask = vec![0f32; batch * longest];
    for (row, (&start, &len)) in offsets.iter().zip(&lengths).enumerate() {
        let start = start as usize * hidden;
        let dst = row * longest * hidden;
        padded[dst..dst + len * hidden].copy_from_slice(&packed[start..start + len * hidden]);
        mask[row * longest..row * longest + len].fill(1.0);
    }
    Ok((
        Tensor::from_vec(padded, (batch, longest, hidden), device)?,
        Tensor::from_vec(mask, (batch, longest), device)?,
    ))
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
