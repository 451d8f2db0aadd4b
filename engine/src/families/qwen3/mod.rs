//! Qwen3 decoder rerankers: `Qwen3ForCausalLM` scored as the Qwen3-Reranker model card does
//! (log-odds of the next token being "yes" rather than "no"), and the converted
//! `Qwen3ForSequenceClassification` ("seq-cls") form, whose one-label `score` head is read at
//! the last token.
//!
//! Architecture (transformers `models/qwen3/modeling_qwen3.py`): token embeddings; per layer a
//! pre-RMSNorm causal attention with grouped-query heads, a per-head RMSNorm on queries and keys
//! before rotary position embedding, and a pre-RMSNorm SwiGLU MLP, each added to the residual
//! stream; a final RMSNorm. Only the rows of the LM head for "yes" and "no" are ever multiplied,
//! never the vocabulary projection.
//!
//! Rows arrive as (shared prefix, own ids) — [`template`] splits the card's prompt that way —
//! and each distinct prefix's keys and values are computed once per pass (or taken from a small
//! cache of recent prefixes), then every row runs only its own tokens against them. This is the
//! same computation as running each whole input, not an approximation.
//!
//! - [`config`]: the `config.json` fields.
//! - [`weights`]: the checkpoint's tensors, shared by both kernel paths.
//! - [`candle_layers`]: the layers on candle (every device and precision).
//! - [`packed_layers`]: the layers on the packed kernels (CPU; f32, bf16, int8).
//! - [`prefix_cache`]: recent prefixes' keys and values.
//! - [`template`]: the card's prompt and its tokenization.

mod candle_layers;
mod config;
mod packed_layers;
mod prefix_cache;
pub mod template;
mod weights;

use std::sync::{Arc, Mutex};

use candle_core::{Device, IndexOp, Tensor};

use super::{Family, LoadContext, Sequence};
use crate::kernels::causal_attention::HeadLayout;
use crate::kernels::rms_norm::rms_norm_rows_in_place;
use crate::kernels::rope::RopeCache;
use crate::kernels::{self};
use crate::modes::{Kernels, Precision};
use crate::precision::{supports, WordEmbeddings};
use crate::{EngineError, ModelKind};
use candle_layers::{CandleLayer, CandlePrefix};
use config::Qwen3Config;
use packed_layers::{PackedBody, PackedPrefix, PackedRows};
use prefix_cache::{CacheBytes, PrefixCache};
use weights::HeadForm;

/// A family loader, as the architecture table holds them.
type Loader = fn(&LoadContext) -> Result<Box<dyn Family>, EngineError>;

/// The architectures this family loads, with their kind and loader. Both read the card's
/// prompt: a causal LM scores the "yes"/"no" logits, a converted seq-cls its `score` head.
pub fn architectures() -> [(&'static str, ModelKind, Loader); 2] {
    [
        (
            "Qwen3ForCausalLM",
            ModelKind::CrossEncoder,
            Qwen3::load_causal_lm as Loader,
        ),
        (
            "Qwen3ForSequenceClassification",
            ModelKind::CrossEncoder,
            Qwen3::load_sequence_classification as Loader,
        ),
    ]
}

/// Whether `architecture` is a decoder reranker of this family: its inputs are the card's
/// prompt (see [`template`]), not a tokenizer's pair encoding.
pub fn is_decoder(architecture: &str) -> bool {
    architectures()
        .iter()
        .any(|(name, _, _)| *name == architecture)
}

/// Bytes of prefix keys and values kept across passes: a few requests' worth for Qwen3-0.6B
/// (28 layers × 2 × 8 heads × 128 values × 4 bytes = 229 KiB per prefix token, so ~290 tokens).
pub const PREFIX_CACHE_BYTES: usize = 64 << 20;

impl CacheBytes for CandlePrefix {
    fn bytes(&self) -> usize {
        CandlePrefix::bytes(self)
    }
}

impl CacheBytes for PackedPrefix {
    fn bytes(&self) -> usize {
        PackedPrefix::bytes(self)
    }
}

enum Body {
    Candle {
        layers: Vec<CandleLayer>,
        cache: Mutex<PrefixCache<CandlePrefix>>,
    },
    Packed {
        layers: Box<PackedBody>,
        cache: Mutex<PrefixCache<PackedPrefix>>,
    },
}

/// A loaded Qwen3 reranker.
pub struct Qwen3 {
    embeddings: WordEmbeddings,
    body: Body,
    final_norm: Vec<f32>,
    /// (outputs × hidden) f32: "yes" and "no" rows, or the score head's row.
    head: Vec<f32>,
    form: HeadForm,
    rope: RopeCache,
    hidden: usize,
    eps: f32,
    max_positions: usize,
    vocab_size: usize,
    pad_id: u32,
    precision: Precision,
    device: Device,
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

impl Qwen3 {
    /// Loads a `Qwen3ForCausalLM` reranker: the score is logit("yes") − logit("no").
    pub fn load_causal_lm(ctx: &LoadContext) -> Result<Box<dyn Family>, EngineError> {
        let id = |token: &str| {
            ctx.tokenizer.token_to_id(token).ok_or_else(|| {
                EngineError::InvalidModel(format!(
                    "the tokenizer has no {token:?} token, which a Qwen3 reranker answers with"
                ))
            })
        };
        Self::load(
            ctx,
            HeadForm::CausalLm {
                yes: id("yes")?,
                no: id("no")?,
            },
        )
    }

    /// Loads a converted `Qwen3ForSequenceClassification` reranker (one label).
    pub fn load_sequence_classification(ctx: &LoadContext) -> Result<Box<dyn Family>, EngineError> {
        Self::load(ctx, HeadForm::SequenceClassification)
    }

    /// Loads the network described by `ctx`; `form` says which head the checkpoint has.
    fn load(ctx: &LoadContext, form: HeadForm) -> Result<Box<dyn Family>, EngineError> {
        let cfg = Qwen3Config::parse(ctx.config_json)?;
        let (body_w, head_w) = weights::load(&ctx.weights, &cfg, form)?;
        let layout = HeadLayout {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        };
        let inner = [cfg.hidden_size, layout.out_width(), cfg.intermediate_size];
        let mut precision = ctx.precision;
        let packed = packed_body(&body_w.layers, &cfg, layout, precision, ctx.kernels);
        if packed.is_none() && !supports(precision, &inner) {
            tracing::warn!(
                requested = precision.name(),
                "int8 (Q8_0) needs hidden, attention and intermediate sizes that are multiples of 32; running float32"
            );
            precision = Precision::F32;
        }
        let body = match packed {
            Some(layers) => Body::Packed {
                layers: Box::new(layers),
                cache: Mutex::new(PrefixCache::new(PREFIX_CACHE_BYTES)),
            },
            None => Body::Candle {
                layers: body_w
                    .layers
                    .iter()
                    .map(|w| {
                        CandleLayer::new(
                            w,
                            layout.heads,
                            layout.kv_heads,
                            cfg.rms_norm_eps,
                            precision,
                            ctx.device,
                        )
                    })
                    .collect::<Result<_, EngineError>>()?,
                cache: Mutex::new(PrefixCache::new(PREFIX_CACHE_BYTES)),
            },
        };
        let embed_precision = if supports(precision, &[cfg.hidden_size]) {
            precision
        } else {
            Precision::F32
        };
        let head = match &head_w {
            weights::HeadWeights::YesNo(t) | weights::HeadWeights::Score(t) => f32_values(t)?,
        };
        Ok(Box::new(Self {
            embeddings: WordEmbeddings::new(
                body_w.embed_tokens.to_device(ctx.device)?,
                embed_precision,
            )?,
            body,
            final_norm: f32_values(&body_w.norm)?,
            head,
            form,
            rope: RopeCache::new(
                cfg.rope_theta as f32,
                cfg.head_dim,
                cfg.max_position_embeddings,
            )?,
            hidden: cfg.hidden_size,
            eps: cfg.rms_norm_eps as f32,
            max_positions: cfg.max_position_embeddings,
            vocab_size: cfg.vocab_size,
            pad_id: ctx.pad_id,
            precision,
            device: ctx.device.clone(),
        }))
    }

    /// (shape × hidden) f32 embeddings of `ids`, on the model's device.
    fn embed(
        &self,
        ids: &[u32],
        shape: impl Into<candle_core::Shape>,
    ) -> Result<Tensor, EngineError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(EngineError::Internal(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        self.embeddings
            .forward(&Tensor::from_slice(ids, shape, &self.device)?)
    }

    /// Each distinct non-empty prefix of `batch`, in order of first appearance, and each row's
    /// index into that list.
    fn distinct_prefixes<'a>(batch: &[Sequence<'a>]) -> (Vec<&'a [u32]>, Vec<Option<usize>>) {
        let mut distinct: Vec<&[u32]> = Vec::new();
        let index = batch
            .iter()
            .map(|row| {
                if row.prefix.is_empty() {
                    return None;
                }
                Some(
                    distinct
                        .iter()
                        .position(|p| *p == row.prefix)
                        .unwrap_or_else(|| {
                            distinct.push(row.prefix);
                            distinct.len() - 1
                        }),
                )
            })
            .collect();
        (distinct, index)
    }

    /// Cached prefixes, or `None` for those to compute.
    fn lookup<V: CacheBytes>(
        cache: &Mutex<PrefixCache<V>>,
        prefixes: &[&[u32]],
    ) -> Result<Vec<Option<Arc<V>>>, EngineError> {
        let mut cache = cache
            .lock()
            .map_err(|_| EngineError::Internal("prefix cache poisoned".into()))?;
        Ok(prefixes.iter().map(|p| cache.get(p)).collect())
    }

    fn remember<V: CacheBytes>(
        cache: &Mutex<PrefixCache<V>>,
        ids: &[u32],
        value: &Arc<V>,
    ) -> Result<(), EngineError> {
        cache
            .lock()
            .map_err(|_| EngineError::Internal("prefix cache poisoned".into()))?
            .insert(ids, Arc::clone(value));
        Ok(())
    }

    /// The last position's hidden state of every row (rows × hidden), on the packed kernels.
    fn last_hidden_packed(
        &self,
        layers: &PackedBody,
        cache: &Mutex<PrefixCache<PackedPrefix>>,
        batch: &[Sequence<'_>],
    ) -> Result<Vec<f32>, EngineError> {
        let (prefixes, index) = Self::distinct_prefixes(batch);
        let mut found = Self::lookup(cache, &prefixes)?;
        let missing: Vec<usize> = (0..prefixes.len())
            .filter(|&i| found[i].is_none())
            .collect();
        if !missing.is_empty() {
            let ids: Vec<u32> = missing
                .iter()
                .flat_map(|&i| prefixes[i].iter().copied())
                .collect();
            let mut x = f32_values(&self.embed(&ids, ids.len())?)?;
            let lens: Vec<usize> = missing.iter().map(|&i| prefixes[i].len()).collect();
            for (&i, kv) in missing
                .iter()
                .zip(layers.run_prefixes(&self.rope, &mut x, &lens)?)
            {
                let kv = Arc::new(kv);
                Self::remember(cache, prefixes[i], &kv)?;
                found[i] = Some(kv);
            }
        }
        let ids: Vec<u32> = batch.iter().flat_map(|r| r.ids.iter().copied()).collect();
        let mut x = f32_values(&self.embed(&ids, ids.len())?)?;
        let rows: Vec<PackedRows<'_>> = batch
            .iter()
            .zip(&index)
            .map(|(r, i)| PackedRows {
                len: r.ids.len(),
                prefix: i.and_then(|i| found[i].as_deref()),
            })
            .collect();
        layers.run_rows(&self.rope, &mut x, &rows)
    }

    /// The last position's hidden state of every row (rows × hidden), on candle: one padded
    /// batch per distinct prefix.
    fn last_hidden_candle(
        &self,
        layers: &[CandleLayer],
        cache: &Mutex<PrefixCache<CandlePrefix>>,
        batch: &[Sequence<'_>],
    ) -> Result<Vec<f32>, EngineError> {
        let (prefixes, index) = Self::distinct_prefixes(batch);
        let mut found = Self::lookup(cache, &prefixes)?;
        for (i, p) in prefixes.iter().enumerate() {
            if found[i].is_none() {
                let x = self.embed(p, (1, p.len()))?;
                let kv = Arc::new(candle_layers::run_prefix(layers, &self.rope, x)?);
                Self::remember(cache, p, &kv)?;
                found[i] = Some(kv);
            }
        }
        let h = self.hidden;
        let mut out = vec![0f32; batch.len() * h];
        // Rows without a prefix form one more group.
        let groups = (0..prefixes.len()).map(Some).chain(std::iter::once(None));
        for group in groups {
            let members: Vec<usize> = (0..batch.len()).filter(|&r| index[r] == group).collect();
            if members.is_empty() {
                continue;
            }
            let longest = members
                .iter()
                .map(|&r| batch[r].ids.len())
                .max()
                .unwrap_or(0);
            let mut ids = vec![self.pad_id; members.len() * longest];
            for (slot, &r) in members.iter().enumerate() {
                ids[slot * longest..][..batch[r].ids.len()].copy_from_slice(batch[r].ids);
            }
            let x = self.embed(&ids, (members.len(), longest))?;
            let prefix = group.and_then(|g| found[g].as_deref());
            let hidden = candle_layers::run_rows(layers, &self.rope, x, prefix)?;
            for (slot, &r) in members.iter().enumerate() {
                let last = hidden.i((slot, batch[r].ids.len() - 1))?;
                out[r * h..(r + 1) * h].copy_from_slice(&f32_values(&last)?);
            }
        }
        Ok(out)
    }
}

impl Family for Qwen3 {
    fn kernels(&self) -> Kernels {
        match self.body {
            Body::Candle { .. } => Kernels::Candle,
            Body::Packed { .. } => Kernels::OneDnn,
        }
    }

    fn kernels_name(&self) -> String {
        match &self.body {
            Body::Candle { .. } => "candle".into(),
            Body::Packed { layers, .. } => format!("onednn ({})", layers.implementation()),
        }
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn weight_bytes(&self) -> usize {
        let layers = match &self.body {
            Body::Candle { layers, .. } => layers.iter().map(CandleLayer::weight_bytes).sum(),
            Body::Packed { layers, .. } => layers.weight_bytes(),
        };
        self.embeddings.weight_bytes() + layers + (self.final_norm.len() + self.head.len()) * 4
    }

    fn label_count(&self) -> Option<usize> {
        match self.form {
            HeadForm::CausalLm { .. } => None,
            HeadForm::SequenceClassification => Some(1),
        }
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn is_packed(&self) -> bool {
        matches!(self.body, Body::Packed { .. })
    }

    fn score(&self, batch: &[Sequence<'_>]) -> Result<Vec<f32>, EngineError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for row in batch {
            if row.ids.is_empty() {
                return Err(EngineError::Internal(
                    "a decoder row needs at least one token of its own".into(),
                ));
            }
            if row.len() > self.max_positions {
                return Err(EngineError::InputTooLong {
                    given: row.len(),
                    max: self.max_positions,
                });
            }
        }
        let mut hidden = match &self.body {
            Body::Candle { layers, cache } => self.last_hidden_candle(layers, cache, batch)?,
            Body::Packed { layers, cache } => self.last_hidden_packed(layers, cache, batch)?,
        };
        rms_norm_rows_in_place(&mut hidden, self.hidden, &self.final_norm, self.eps);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let h = self.hidden;
        Ok(hidden
            .chunks_exact(h)
            .map(|x| match self.form {
                HeadForm::CausalLm { .. } => dot(x, &self.head[..h]) - dot(x, &self.head[h..2 * h]),
                HeadForm::SequenceClassification => dot(x, &self.head[..h]),
            })
            .collect())
    }
}

/// The packed layers where `kernels` asks for them and they can run `precision`; `None` (with
/// the reason logged) means candle's.
fn packed_body(
    weights: &[weights::LayerWeights],
    cfg: &Qwen3Config,
    layout: HeadLayout,
    precision: Precision,
    kernels: Kernels,
) -> Option<PackedBody> {
    if kernels != Kernels::OneDnn {
        return None;
    }
    if !kernels::available() {
        tracing::info!("built without oneDNN; using candle");
        return None;
    }
    if precision == Precision::F16 {
        tracing::info!(
            "f16 has no packed CPU kernel; Qwen3 runs on candle (f16 weights, f32 compute)"
        );
        return None;
    }
    if precision == Precision::Bf16 && !kernels::native_bf16() {
        tracing::warn!("this CPU has no native bf16 (AVX512-BF16): bf16 runs on candle kernels");
        return None;
    }
    match PackedBody::new(weights, layout, cfg.rms_norm_eps, precision) {
        Ok(body) => Some(body),
        Err(e) => {
            tracing::warn!(error = %e, "packed kernels unavailable for this model; using candle");
            None
        }
    }
}
