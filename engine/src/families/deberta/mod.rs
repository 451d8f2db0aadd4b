//! DeBERTa-v2/v3 cross-encoders (`DebertaV2ForSequenceClassification`, e.g.
//! mixedbread-ai/mxbai-rerank-base-v1): transformers' `modeling_deberta_v2.py`, at parity.
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/deberta_v2/modeling_deberta_v2.py>
//!
//! What sets DeBERTa apart from BERT is its attention: besides query·key, each score gets a
//! content→position (c2p) and a position→content (p2c) term from a table of relative-position
//! embeddings, positions farther than `position_buckets / 2` sharing log-sized buckets (see
//! `kernels::disentangled_attention`). v3 adds no absolute positions (`position_biased_input`
//! false) and no token types (`type_vocab_size` 0); the head is a `ContextPooler` (dense on the
//! first token, then `pooler_hidden_act`) and a classifier.
//!
//! - [`config`]: the `config.json` fields and their defaults.
//! - [`weights`]: the checkpoint's tensors; the relative tables projected once at load.
//! - [`candle`]: the layers on candle over padded batches (every device and precision).
//! - [`packed`]: the layers over packed sequences on the kernels layer's GEMMs and our
//!   attention op (f32, bf16, int8; f16 stays on candle).

mod candle;
mod config;
mod packed;
mod weights;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use self::candle::CandleLayers;
use self::config::{DebertaConfig, PoolerAct};
use self::packed::PackedLayers;
use self::weights::LayerWeights;
use super::padded_input::EncoderInput;
use super::{Family, LoadContext, Sequence};
use crate::heads::raw_score;
use crate::hf_config::HiddenAct;
use crate::kernels;
use crate::kernels::disentangled_attention::RelativePositions;
use crate::modes::{Kernels, Precision};
use crate::precision::{supports, WordEmbeddings};
use crate::{EngineError, ModelKind};

/// The architectures this family loads.
pub const ARCHITECTURES: &[(&str, ModelKind)] = &[(
    "DebertaV2ForSequenceClassification",
    ModelKind::CrossEncoder,
)];

/// Word (+ absolute position) (+ token type) embeddings and their LayerNorm.
struct Embeddings {
    words: WordEmbeddings,
    positions: Option<Embedding>,
    token_types: Option<Embedding>,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(
        vb: VarBuilder,
        cfg: &DebertaConfig,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        let embedding = |rows: usize, name: &str| candle_nn::embedding(rows, h, vb.pp(name));
        let words = vb
            .pp("word_embeddings")
            .get((cfg.vocab_size, h), "weight")?;
        Ok(Self {
            words: WordEmbeddings::new(words, precision)?,
            positions: cfg
                .position_biased_input
                .then(|| embedding(cfg.max_position_embeddings, "position_embeddings"))
                .transpose()?,
            token_types: (cfg.type_vocab_size > 0)
                .then(|| embedding(cfg.type_vocab_size, "token_type_embeddings"))
                .transpose()?,
            layer_norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// (rows, seq, hidden) embeddings of `input` (its ids, type ids and position ids).
    fn forward(&self, input: &EncoderInput) -> Result<Tensor, EngineError> {
        let mut x = self.words.forward(&input.input_ids)?;
        if let Some(table) = &self.positions {
            x = (x + table.forward(&input.position_ids)?)?;
        }
        if let Some(table) = &self.token_types {
            x = (x + table.forward(&input.token_type_ids)?)?;
        }
        Ok(self.layer_norm.forward(&x)?)
    }

    fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.words.weight_bytes()
            + self.positions.as_ref().map_or(0, |e| bytes(e.embeddings()))
            + self
                .token_types
                .as_ref()
                .map_or(0, |e| bytes(e.embeddings()))
            + bytes(self.layer_norm.weight())
            + self.layer_norm.bias().map_or(0, bytes)
    }
}

/// `ContextPooler` (dense on the first token, then `pooler_hidden_act`) and the classifier.
struct Head {
    pooler: Linear,
    act: PoolerAct,
    classifier: Linear,
}

impl Head {
    fn load(root: &VarBuilder, cfg: &DebertaConfig) -> Result<Self, EngineError> {
        let h = cfg.hidden_size;
        let classifier = root.pp("classifier");
        // Sized by its weight: config.json often omits num_labels.
        let weight = classifier.get_unchecked("weight")?;
        let labels = weight.dims().first().copied().unwrap_or(0);
        if labels == 0 || weight.dims() != [labels, h] {
            return Err(EngineError::InvalidModel(format!(
                "classifier weight has shape {:?}, expected (num_labels, {h})",
                weight.dims()
            )));
        }
        Ok(Self {
            pooler: candle_nn::linear(h, h, root.pp("pooler").pp("dense"))?,
            act: cfg.pooler_act()?,
            classifier: Linear::new(weight, Some(classifier.get(labels, "bias")?)),
        })
    }

    /// (rows, labels) logits from the (rows, hidden) first-token states.
    fn forward(&self, first: &Tensor) -> Result<Tensor, EngineError> {
        let pooled = self.pooler.forward(first)?;
        let pooled = match self.act {
            PoolerAct::Tanh => pooled.tanh()?,
            PoolerAct::Identity => pooled,
            PoolerAct::Hidden(HiddenAct::Gelu) => pooled.gelu_erf()?,
            PoolerAct::Hidden(HiddenAct::GeluApproximate) => pooled.gelu()?,
            PoolerAct::Hidden(HiddenAct::Relu) => pooled.relu()?,
            PoolerAct::Hidden(HiddenAct::Silu) => pooled.silu()?,
        };
        Ok(self.classifier.forward(&pooled)?)
    }

    fn label_count(&self) -> usize {
        self.classifier
            .weight()
            .dims()
            .first()
            .copied()
            .unwrap_or(1)
    }

    fn weight_bytes(&self) -> usize {
        let bytes =
            |l: &Linear| (l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count)) * 4;
        bytes(&self.pooler) + bytes(&self.classifier)
    }
}

enum Body {
    Candle(CandleLayers),
    Packed(Box<PackedLayers>),
}

/// A loaded DeBERTa-v2/v3 cross-encoder.
pub struct Deberta {
    embeddings: Embeddings,
    body: Body,
    head: Head,
    hidden: usize,
    max_positions: usize,
    pad_id: u32,
    precision: Precision,
    device: Device,
}

impl Deberta {
    /// Loads the network described by `ctx` (tensors `deberta.*`, `pooler.*`, `classifier.*`).
    pub fn load(ctx: &LoadContext) -> Result<Box<dyn Family>, EngineError> {
        let cfg = DebertaConfig::parse(ctx.config_json)?;
        let root = &ctx.weights;
        let model = root.pp("deberta");
        let precision = if supports(ctx.precision, &[cfg.hidden_size, cfg.intermediate_size]) {
            ctx.precision
        } else {
            tracing::warn!(
                requested = ctx.precision.name(),
                "int8 (Q8_0) needs sizes that are multiples of 32; running float32"
            );
            Precision::F32
        };
        let embeddings = Embeddings::load(model.pp("embeddings"), &cfg, precision)?;
        let weights = LayerWeights::load_all(&model.pp("encoder"), &cfg)?;
        let positions = cfg
            .relative_attention
            .then(|| RelativePositions::new(cfg.position_buckets, cfg.max_relative_positions()))
            .transpose()?;
        let (heads, scale) = (cfg.num_attention_heads, cfg.attention_scale());
        let body = match packed_layers(&weights, &cfg, positions, precision, ctx.kernels) {
            Some(layers) => Body::Packed(Box::new(layers)),
            None => Body::Candle(CandleLayers::new(
                &weights,
                heads,
                scale,
                positions,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                precision,
            )?),
        };
        Ok(Box::new(Self {
            embeddings,
            body,
            head: Head::load(root, &cfg)?,
            hidden: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            pad_id: ctx.pad_id,
            precision,
            device: ctx.device.clone(),
        }))
    }

    /// (rows, hidden) first-token states of one forward pass over `rows`.
    fn first_tokens(&self, rows: &[Sequence<'_>]) -> Result<Tensor, EngineError> {
        if rows.iter().any(|r| !r.prefix.is_empty()) {
            return Err(EngineError::Internal(
                "an encoder was given a shared prefix".into(),
            ));
        }
        let sequences: Vec<(&[u32], &[u32])> = rows.iter().map(|r| (r.ids, r.type_ids)).collect();
        match &self.body {
            Body::Candle(layers) => {
                let input = EncoderInput::pad(&sequences, self.pad_id, 0, &self.device)?;
                let x = self.embeddings.forward(&input)?;
                let hidden = layers.forward(&x, &input.attention_bias)?;
                Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?)
            }
            Body::Packed(layers) => {
                let input = EncoderInput::packed(&sequences, 0, &self.device)?;
                let mut x: Vec<f32> = self.embeddings.forward(&input)?.flatten_all()?.to_vec1()?;
                let mut offsets = Vec::with_capacity(sequences.len() + 1);
                offsets.push(0usize);
                for (ids, _) in &sequences {
                    offsets.push(offsets[offsets.len() - 1] + ids.len());
                }
                layers.forward(&mut x, &offsets)?;
                let h = self.hidden;
                let mut first = Vec::with_capacity(sequences.len() * h);
                for w in offsets.windows(2) {
                    // A row is never empty (the tokenizer adds [CLS]); zeros keep the shape.
                    match x.get(w[0] * h..(w[0] + 1) * h) {
                        Some(row) if w[1] > w[0] => first.extend_from_slice(row),
                        _ => first.extend(std::iter::repeat_n(0.0, h)),
                    }
                }
                Ok(Tensor::from_vec(first, (sequences.len(), h), &self.device)?)
            }
        }
    }
}

/// The packed layers, where `kernels` asks for them and they can run this model in `precision`;
/// `None` (with the reason logged) means candle's.
fn packed_layers(
    weights: &[LayerWeights],
    cfg: &DebertaConfig,
    positions: Option<RelativePositions>,
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
            "packed kernels do not cover this model/precision; using candle"
        );
        return None;
    }
    if precision == Precision::Bf16 && !kernels::native_bf16() {
        tracing::warn!(
            "this CPU has no native bf16 (AVX512-BF16): bf16 runs on candle kernels \
             (bf16 weights, f32 compute)"
        );
        return None;
    }
    let (heads, eps, scale) = (
        cfg.num_attention_heads,
        cfg.layer_norm_eps,
        cfg.attention_scale(),
    );
    match PackedLayers::new(weights, heads, eps, scale, positions, precision) {
        Ok(layers) => {
            tracing::info!(
                precision = precision.name(),
                kernel = layers.implementation(),
                "DeBERTa layers on the packed kernels"
            );
            Some(layers)
        }
        Err(e) => {
            tracing::warn!(error = %e, "packed kernels unavailable; using candle");
            None
        }
    }
}

impl Family for Deberta {
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
        self.embeddings.weight_bytes() + layers + self.head.weight_bytes()
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
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self
            .head
            .forward(&self.first_tokens(batch)?)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        Ok(logits.iter().map(|row| raw_score(row)).collect())
    }
}
