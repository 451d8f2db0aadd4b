//! ModernBERT cross-encoders (`ModernBertForSequenceClassification`, e.g.
//! Alibaba-NLP/gte-reranker-modernbert-base).
//!
//! Upstream: `transformers/models/modernbert/modeling_modernbert.py`. What differs from BERT:
//! - no position embeddings: rotary embeddings (rotate-half) on queries and keys, with one base for
//!   global layers (`global_rope_theta`) and one for local ones (`local_rope_theta`);
//! - alternating attention: every `global_attn_every_n_layers`-th layer (from layer 0) sees the
//!   whole sequence, the others only keys within `local_attention / 2` positions;
//! - pre-norm layers (layer 0 has no attention norm: the embeddings are already normalized), a
//!   fused `Wqkv`, a GeGLU MLP (`Wi` → input and gate halves → act(input) · gate → `Wo`), biases
//!   and LayerNorm betas only where `attention_bias` / `mlp_bias` / `norm_bias` say, and a final
//!   norm;
//! - the head pools the CLS row or the mean over real tokens (`classifier_pooling`), then
//!   dense → `classifier_activation` → norm → classifier.
//!
//! Token type ids are not used. Files:
//! - [`config`]: `config.json` (both the transformers 4.x and 5 forms).
//! - [`weights`]: the checkpoint layout, shared by both kernel paths.
//! - [`layers`]: the layers on candle (padded batches).
//! - [`packed`]: the layers on the packed kernels.
//! - [`head`]: pooling and the classification head.

mod config;
mod head;
mod layers;
mod packed;
mod weights;

use candle_core::{DType, Device, Tensor};

use super::padded_input::{unpack, EncoderInput};
use super::{Family, LoadContext, Sequence};
use crate::heads::raw_score;
use crate::kernels;
use crate::kernels::rope::RopeCache;
use crate::modes::{Kernels, Precision};
use crate::precision::supports;
use crate::{EngineError, ModelKind};
use config::{LayerKind, ModernBertConfig};
use head::ModernBertHead;
use layers::{CandleLayers, Embeddings};
use packed::PackedLayers;
use weights::{EncoderWeights, HeadWeights};

/// The architectures (`architectures[0]` of `config.json`) this family loads, with their kind.
pub const ARCHITECTURES: &[(&str, ModelKind)] = &[(
    "ModernBertForSequenceClassification",
    ModelKind::CrossEncoder,
)];

enum Body {
    Candle(CandleLayers),
    Packed(Box<PackedLayers>),
}

/// A loaded ModernBERT cross-encoder.
pub struct ModernBert {
    embeddings: Embeddings,
    body: Body,
    head: ModernBertHead,
    hidden: usize,
    max_positions: usize,
    pad_id: u32,
    precision: Precision,
    device: Device,
}

impl ModernBert {
    /// Loads the network described by `ctx`.
    pub fn load(ctx: &LoadContext) -> Result<Box<dyn Family>, EngineError> {
        if ctx.kind != ModelKind::CrossEncoder {
            return Err(EngineError::InvalidModel(
                "ModernBERT loads as a cross-encoder only".into(),
            ));
        }
        let cfg = ModernBertConfig::parse(ctx.config_json)?;
        let precision = if supports(ctx.precision, &[cfg.hidden_size, cfg.intermediate_size]) {
            ctx.precision
        } else {
            tracing::warn!(
                requested = ctx.precision.name(),
                hidden_size = cfg.hidden_size,
                intermediate_size = cfg.intermediate_size,
                "int8 (Q8_0) needs sizes that are multiples of 32; running float32"
            );
            Precision::F32
        };
        let weights = EncoderWeights::load(&ctx.weights.pp("model"), &cfg)?;
        let head = ModernBertHead::new(&HeadWeights::load(&ctx.weights, &cfg)?, &cfg);
        let rope = |kind| {
            RopeCache::new(
                cfg.rope_theta(kind) as f32,
                cfg.head_dim(),
                cfg.position_limit(),
            )
        };
        let body = match packed_layers(&weights, &cfg, precision, ctx.kernels) {
            Some(layers) => Body::Packed(Box::new(layers)),
            None => Body::Candle(CandleLayers::new(
                &weights,
                &cfg,
                precision,
                rope(LayerKind::Global)?,
                rope(LayerKind::Local)?,
            )?),
        };
        Ok(Box::new(Self {
            embeddings: Embeddings::new(&weights, &cfg, precision)?,
            body,
            head,
            hidden: cfg.hidden_size,
            max_positions: cfg.position_limit(),
            pad_id: ctx.pad_id,
            precision,
            device: ctx.device.clone(),
        }))
    }

    /// One forward pass over `rows`, packed or padded as the layers run: the (batch, longest,
    /// hidden) last hidden state (after the final norm) and the (batch, longest) token mask.
    fn forward_batch(&self, rows: &[Sequence<'_>]) -> Result<(Tensor, Tensor), EngineError> {
        if rows.iter().any(|r| !r.prefix.is_empty()) {
            return Err(EngineError::Internal(
                "an encoder was given a shared prefix".into(),
            ));
        }
        // Token types do not exist in ModernBERT.
        let sequences: Vec<(&[u32], &[u32])> = rows.iter().map(|r| (r.ids, &[][..])).collect();
        match &self.body {
            Body::Candle(layers) => {
                let input = EncoderInput::pad(&sequences, self.pad_id, 0, &self.device)?;
                let lengths: Vec<usize> = rows.iter().map(|r| r.ids.len()).collect();
                let x = self.embeddings.forward(&input.input_ids)?;
                Ok((layers.forward(x, &lengths)?, input.token_mask))
            }
            Body::Packed(layers) => {
                let input = EncoderInput::packed(&sequences, 0, &self.device)?;
                let embedded = self.embeddings.forward(&input.input_ids)?;
                let mut x: Vec<f32> = embedded.flatten_all()?.to_vec1::<f32>()?;
                let mut offsets = Vec::with_capacity(rows.len() + 1);
                offsets.push(0usize);
                for r in rows {
                    offsets.push(offsets.last().copied().unwrap_or(0) + r.ids.len());
                }
                layers.forward(&mut x, &offsets)?;
                let offsets: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
                unpack(&x, &offsets, self.hidden, &self.device)
            }
        }
    }
}

/// The packed layers, where `kernels` asks for them and they can run this model in `precision`;
/// `None` (with the reason logged) means candle's.
fn packed_layers(
    weights: &EncoderWeights,
    cfg: &ModernBertConfig,
    precision: Precision,
    kernels: Kernels,
) -> Option<PackedLayers> {
    if kernels != Kernels::OneDnn {
        return None;
    }
    if !kernels::available() {
        tracing::info!("built without oneDNN; using candle");
        return None;
    }
    if !packed::supports(precision, cfg.hidden_activation) {
        tracing::info!(
            precision = precision.name(),
            activation = ?cfg.hidden_activation,
            "the packed kernels do not cover this model/precision; using candle"
        );
        return None;
    }
    if precision == Precision::Bf16 && !kernels::native_bf16() {
        tracing::warn!(
            "this CPU has no native bf16 (AVX512-BF16): bf16 runs on candle kernels \
             (bf16 weights, f32 compute), slower than QUANTIZATION=none here"
        );
        return None;
    }
    let rope = |kind| {
        RopeCache::new(
            cfg.rope_theta(kind) as f32,
            cfg.head_dim(),
            cfg.position_limit(),
        )
    };
    let built = rope(LayerKind::Global).and_then(|global| {
        PackedLayers::new(weights, cfg, precision, global, rope(LayerKind::Local)?)
    });
    match built {
        Ok(layers) => {
            tracing::info!(
                precision = precision.name(),
                kernel = layers.implementation(),
                "ModernBERT layers on the packed kernels"
            );
            Some(layers)
        }
        Err(e) => {
            tracing::warn!(error = %e, "packed kernels unavailable; using candle");
            None
        }
    }
}

impl Family for ModernBert {
    fn kernels(&self) -> Kernels {
        match self.body {
            Body::Candle(_) => Kernels::Candle,
            Body::Packed(_) => Kernels::OneDnn,
        }
    }

    fn kernels_name(&self) -> String {
        match &self.body {
            Body::Candle(_) => "candle".into(),
            Body::Packed(layers) => format!("onednn ({})", layers.implementation()),
        }
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn weight_bytes(&self) -> usize {
        let layers = match &self.body {
            Body::Candle(layers) => layers.weight_bytes(),
            Body::Packed(layers) => layers.weight_bytes(),
        };
        self.embeddings.weight_bytes() + layers
    }

    fn label_count(&self) -> Option<usize> {
        Some(self.head.label_count())
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn is_packed(&self) -> bool {
        matches!(self.body, Body::Packed(_))
    }

    fn score(&self, batch: &[Sequence<'_>]) -> Result<Vec<f32>, EngineError> {
        let (hidden, mask) = self.forward_batch(batch)?;
        let logits = self
            .head
            .forward(&hidden, &mask)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        Ok(logits.iter().map(|row| raw_score(row)).collect())
    }
}
