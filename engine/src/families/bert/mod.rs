//! BERT, RoBERTa and XLM-RoBERTa: cross-encoders (`*ForSequenceClassification`) and
//! sentence-transformers bi-encoders (`*Model` + pooling).
//!
//! - [`layers`]: the layers on candle (padded batches) and the checkpoint's layer weights.
//! - [`packed`]: the same layers on the packed kernels.
//! - [`head`]: the classification heads.

mod head;
mod layers;
mod packed;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::padded_input::{unpack, EncoderInput};
use super::{Family, LoadContext, Sequence};
use crate::heads::{raw_score, Pooling};
use crate::hf_config::HfConfig;
use crate::kernels;
use crate::modes::{Kernels, Precision};
use crate::precision::supports;
use crate::{EngineError, ModelKind};
use head::ClassifierHead;
use layers::{Embeddings, Layer, LayerWeights};
use packed::PackedLayers;

/// The architectures (`architectures[0]` of `config.json`) this family loads, with their kind.
pub const ARCHITECTURES: &[(&str, ModelKind)] = &[
    ("BertForSequenceClassification", ModelKind::CrossEncoder),
    (
        "XLMRobertaForSequenceClassification",
        ModelKind::CrossEncoder,
    ),
    ("RobertaForSequenceClassification", ModelKind::CrossEncoder),
    ("BertModel", ModelKind::BiEncoder),
    ("XLMRobertaModel", ModelKind::BiEncoder),
    ("RobertaModel", ModelKind::BiEncoder),
];

enum Body {
    Candle(Vec<Layer>),
    Packed(Box<PackedLayers>),
}

/// A loaded BERT-family network.
pub struct Bert {
    embeddings: Embeddings,
    body: Body,
    head: Option<ClassifierHead>,
    single_type: bool,
    hidden: usize,
    position_offset: usize,
    position_limit: usize,
    pad_id: u32,
    precision: Precision,
    device: Device,
}

/// Where the encoder's tensors start: `bert.`, `roberta.`, the root for sentence-transformers
/// checkpoints, or `model.`.
fn encoder_prefix(vb: &VarBuilder) -> Result<&'static str, EngineError> {
    ["", "bert", "roberta", "model"]
        .into_iter()
        .find(|p| {
            let name = if p.is_empty() {
                "embeddings.word_embeddings.weight".to_string()
            } else {
                format!("{p}.embeddings.word_embeddings.weight")
            };
            vb.contains_tensor(&name)
        })
        .ok_or_else(|| {
            EngineError::InvalidModel(
                "no embeddings.word_embeddings.weight tensor (under '', bert., roberta. or model.)"
                    .into(),
            )
        })
}

impl Bert {
    /// Loads the network described by `ctx`.
    pub fn load(ctx: &LoadContext) -> Result<Box<dyn Family>, EngineError> {
        let cfg = HfConfig::parse(ctx.config_json)?;
        let vb = ctx.weights.clone();
        let prefix = encoder_prefix(&vb)?;
        let encoder_vb = if prefix.is_empty() {
            vb.clone()
        } else {
            vb.pp(prefix)
        };
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
        let embeddings = Embeddings::load(encoder_vb.pp("embeddings"), &cfg, precision)?;
        let weights = LayerWeights::load_all(&encoder_vb, &cfg)?;
        let body = match packed_layers(&weights, &cfg, precision, ctx.kernels) {
            Some(layers) => Body::Packed(Box::new(layers)),
            None => Body::Candle(
                weights
                    .iter()
                    .map(|w| Layer::new(w, precision))
                    .collect::<Result<Vec<_>, EngineError>>()?,
            ),
        };
        let head = match ctx.kind {
            ModelKind::CrossEncoder if cfg.is_roberta_family() => {
                Some(ClassifierHead::load_roberta(vb.clone(), &cfg)?)
            }
            ModelKind::CrossEncoder => Some(ClassifierHead::load_bert(encoder_vb, vb, &cfg)?),
            ModelKind::BiEncoder => None,
        };
        Ok(Box::new(Self {
            embeddings,
            body,
            head,
            single_type: cfg.type_vocab_size <= 1,
            hidden: cfg.hidden_size,
            position_offset: cfg.position_offset(),
            position_limit: cfg.position_limit(),
            pad_id: ctx.pad_id,
            precision,
            device: ctx.device.clone(),
        }))
    }

    /// One forward pass over `rows`, packed or padded as the layers run: the (batch, longest,
    /// hidden) last hidden state and the (batch, longest) token mask.
    fn forward_batch(&self, rows: &[Sequence<'_>]) -> Result<(Tensor, Tensor), EngineError> {
        if rows.iter().any(|r| !r.prefix.is_empty()) {
            return Err(EngineError::Internal(
                "an encoder was given a shared prefix".into(),
            ));
        }
        let sequences: Vec<(&[u32], &[u32])> = rows.iter().map(|r| (r.ids, r.type_ids)).collect();
        match &self.body {
            Body::Candle(layers) => {
                let input =
                    EncoderInput::pad(&sequences, self.pad_id, self.position_offset, &self.device)?;
                let mut x = self.embeddings.forward(&input, self.single_type)?;
                for layer in layers {
                    x = layer.forward(&x, &input.attention_bias)?;
                }
                Ok((x, input.token_mask))
            }
            Body::Packed(layers) => {
                let input = EncoderInput::packed(&sequences, self.position_offset, &self.device)?;
                let embedded = self.embeddings.forward(&input, self.single_type)?;
                let mut x: Vec<f32> = embedded.flatten_all()?.to_vec1::<f32>()?;
                let mut offsets = Vec::with_capacity(sequences.len() + 1);
                offsets.push(0i64);
                for (ids, _) in &sequences {
                    offsets.push(offsets.last().copied().unwrap_or(0) + ids.len() as i64);
                }
                layers.forward(&mut x, &offsets)?;
                unpack(&x, &offsets, self.hidden, &self.device)
            }
        }
    }
}

/// The packed layers, where `kernels` asks for them and they can run this model in `precision`;
/// `None` (with the reason logged) means candle's.
fn packed_layers(
    weights: &[LayerWeights],
    cfg: &HfConfig,
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
    if !packed::supports(precision, cfg.hidden_act) {
        tracing::info!(
            precision = precision.name(),
            activation = ?cfg.hidden_act,
            "oneDNN kernels do not cover this model/precision; using candle"
        );
        return None;
    }
    if precision == Precision::Bf16 && !kernels::native_bf16() {
        // oneDNN 2.x has no bf16 matmul below AVX-512 (and only an emulated one without
        // AVX512-BF16); candle keeps bf16 weights and computes in f32.
        tracing::warn!(
            "this CPU has no native bf16 (AVX512-BF16): bf16 runs on candle kernels \
             (bf16 weights, f32 compute), slower than QUANTIZATION=none here"
        );
        return None;
    }
    match PackedLayers::new(weights, precision) {
        Ok(layers) => {
            tracing::info!(
                precision = precision.name(),
                kernel = layers.implementation(),
                "transformer layers on oneDNN (packed sequences)"
            );
            Some(layers)
        }
        Err(e) => {
            tracing::warn!(error = %e, "oneDNN unavailable; using candle");
            None
        }
    }
}

impl Family for Bert {
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
            Body::Candle(layers) => layers.iter().map(Layer::weight_bytes).sum(),
            Body::Packed(layers) => layers.weight_bytes(),
        };
        self.embeddings.weight_bytes() + layers
    }

    fn label_count(&self) -> Option<usize> {
        self.head.as_ref().map(ClassifierHead::label_count)
    }

    fn max_positions(&self) -> usize {
        self.position_limit
    }

    fn is_packed(&self) -> bool {
        matches!(self.body, Body::Packed(_))
    }

    fn score(&self, batch: &[Sequence<'_>]) -> Result<Vec<f32>, EngineError> {
        let head = self.head.as_ref().ok_or_else(|| {
            EngineError::Internal("a bi-encoder was asked for cross-encoder scores".into())
        })?;
        let (hidden, _) = self.forward_batch(batch)?;
        let logits = head
            .forward(&hidden)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        Ok(logits.iter().map(|row| raw_score(row)).collect())
    }

    fn embed(
        &self,
        batch: &[Sequence<'_>],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let (hidden, mask) = self.forward_batch(batch)?;
        Ok(pooling
            .forward(&hidden, &mask)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?)
    }
}
