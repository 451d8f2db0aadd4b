//! Qwen3 decoder layers on candle tensors: every device, every precision, padded batches.
//!
//! A pass runs either a prefix alone (one row, causal) keeping each layer's keys and values, or
//! a right-padded batch of rows that all follow the same prefix: their queries attend to the
//! prefix's keys and values and then causally to their own. Right padding needs no mask of its
//! own: a real token never sees a later position, and padding only ever comes later.

use candle_core::{DType, Device, Module, Tensor, D};

use super::weights::LayerWeights;
use crate::families::padded_input::MASKED_SCORE;
use crate::kernels::rope::RopeCache;
use crate::modes::Precision;
use crate::precision::Projection;
use crate::EngineError;

/// A prefix's keys and values after every layer, each (1, kv_heads, len, head_dim).
pub struct CandlePrefix {
    pub len: usize,
    pub layers: Vec<(Tensor, Tensor)>,
}

impl CandlePrefix {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
            .sum()
    }
}

/// RMSNorm over the last dimension (any rank).
pub(super) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor, EngineError> {
    let dims = x.dims().to_vec();
    let last = *dims
        .last()
        .ok_or_else(|| EngineError::Internal("rms_norm of a scalar".into()))?;
    let flat = x.reshape(((), last))?;
    Ok(candle_nn::ops::rms_norm(&flat, weight, eps)?.reshape(dims)?)
}

/// cos and sin of `positions`, (len, head_dim / 2) each, from the same table as the packed path.
pub(super) fn rope_tables(
    rope: &RopeCache,
    positions: std::ops::Range<usize>,
    device: &Device,
) -> Result<(Tensor, Tensor), EngineError> {
    let table = rope.covering(positions.end)?;
    let (cos, sin) = table.cos_sin();
    let half = table.half();
    let span = positions.start * half..positions.end * half;
    let shape = (positions.len(), half);
    Ok((
        Tensor::from_slice(&cos[span.clone()], shape, device)?,
        Tensor::from_slice(&sin[span], shape, device)?,
    ))
}

/// The additive (rows, prefix + rows) mask: row i sees the prefix and own positions ≤ i.
fn causal_mask(prefix: usize, rows: usize, device: &Device) -> Result<Tensor, EngineError> {
    let n = prefix + rows;
    let values: Vec<f32> = (0..rows)
        .flat_map(|i| (0..n).map(move |j| if j <= prefix + i { 0.0 } else { MASKED_SCORE }))
        .collect();
    Ok(Tensor::from_vec(values, (rows, n), device)?)
}

/// One decoder layer: pre-norm attention and pre-norm SwiGLU MLP, each added to the residual.
pub(super) struct CandleLayer {
    qkv: Projection,
    o: Projection,
    gate_up: Projection,
    down: Projection,
    input_norm: Tensor,
    post_attention_norm: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f32,
}

impl CandleLayer {
    pub(super) fn new(
        w: &LayerWeights,
        heads: usize,
        kv_heads: usize,
        eps: f64,
        precision: Precision,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let on = |t: &Tensor| -> Result<Tensor, EngineError> { Ok(t.to_device(device)?) };
        let proj = |t: &Tensor, b: &Option<Tensor>| -> Result<Projection, EngineError> {
            Projection::new(on(t)?, b.as_ref().map(on).transpose()?, precision)
        };
        Ok(Self {
            qkv: proj(&w.qkv, &w.qkv_bias)?,
            o: proj(&w.o, &w.o_bias)?,
            gate_up: proj(&w.gate_up, &None)?,
            down: proj(&w.down, &None)?,
            input_norm: on(&w.input_norm)?,
            post_attention_norm: on(&w.post_attention_norm)?,
            q_norm: on(&w.q_norm)?,
            k_norm: on(&w.k_norm)?,
            heads,
            kv_heads,
            head_dim: w.q_norm.dim(0)?,
            intermediate: w.down.dim(1)?,
            eps: eps as f32,
        })
    }

    /// Bytes of the layer's weights as stored.
    pub(super) fn weight_bytes(&self) -> usize {
        let norms = self.input_norm.elem_count()
            + self.post_attention_norm.elem_count()
            + self.q_norm.elem_count()
            + self.k_norm.elem_count();
        self.qkv.weight_bytes()
            + self.o.weight_bytes()
            + self.gate_up.weight_bytes()
            + self.down.weight_bytes()
            + norms * 4
    }

    /// `x` (batch, rows, hidden) after this layer, and the layer's own keys and values
    /// (batch, kv_heads, rows, head_dim). `prefix`: the prefix's keys and values for this layer.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        prefix: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor, Tensor), EngineError> {
        let (b, s, _) = x.dims3()?;
        let (hq, hk, d) = (self.heads, self.kv_heads, self.head_dim);
        let qkv = self
            .qkv
            .forward(&rms_norm(x, &self.input_norm, self.eps)?)?;
        let heads_of =
            |start: usize, n: usize, norm: Option<&Tensor>| -> Result<Tensor, EngineError> {
                let t = qkv.narrow(2, start * d, n * d)?.reshape((b, s, n, d))?;
                let t = match norm {
                    Some(w) => rms_norm(&t, w, self.eps)?,
                    None => t,
                };
                Ok(t.transpose(1, 2)?.contiguous()?)
            };
        let q = candle_nn::rotary_emb::rope(&heads_of(0, hq, Some(&self.q_norm))?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&heads_of(hq, hk, Some(&self.k_norm))?, cos, sin)?;
        let v = heads_of(hq + hk, hk, None)?;
        let (k_all, v_all) = match prefix {
            Some((pk, pv)) => {
                let p = pk.dim(2)?;
                (
                    Tensor::cat(&[&pk.broadcast_as((b, hk, p, d))?, &k], 2)?,
                    Tensor::cat(&[&pv.broadcast_as((b, hk, p, d))?, &v], 2)?,
                )
            }
            None => (k.clone(), v.clone()),
        };
        let n = k_all.dim(2)?;
        // Grouped-query attention: each key/value head serves heads / kv_heads query heads.
        let repeat = |t: &Tensor| -> Result<Tensor, EngineError> {
            Ok(t.unsqueeze(2)?
                .broadcast_as((b, hk, hq / hk, n, d))?
                .reshape((b, hq, n, d))?)
        };
        let (k_all, v_all) = (repeat(&k_all)?, repeat(&v_all)?);
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (q.matmul(&k_all.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v_all.dtype())?;
        let attended = probs
            .matmul(&v_all)?
            .transpose(1, 2)?
            .reshape((b, s, hq * d))?;
        let x = (x + self.o.forward(&attended)?)?;
        let gate_up = self
            .gate_up
            .forward(&rms_norm(&x, &self.post_attention_norm, self.eps)?)?;
        let i = self.intermediate;
        let act = (gate_up.narrow(D::Minus1, 0, i)?.silu()? * gate_up.narrow(D::Minus1, i, i)?)?;
        let x = (&x + self.down.forward(&act)?)?;
        Ok((x, k, v))
    }
}

/// Runs `layers` over the prefix embeddings `x` (1, len, hidden), keeping keys and values.
pub(super) fn run_prefix(
    layers: &[CandleLayer],
    rope: &RopeCache,
    x: Tensor,
) -> Result<CandlePrefix, EngineError> {
    let len = x.dim(1)?;
    let device = x.device().clone();
    let (cos, sin) = rope_tables(rope, 0..len, &device)?;
    let mask = causal_mask(0, len, &device)?;
    let mut x = x;
    let mut kept = Vec::with_capacity(layers.len());
    for layer in layers {
        let (next, k, v) = layer.forward(&x, &cos, &sin, &mask, None)?;
        kept.push((k, v));
        x = next;
    }
    Ok(CandlePrefix { len, layers: kept })
}

/// Runs `layers` over right-padded rows `x` (batch, rows, hidden) that follow `prefix`.
pub(super) fn run_rows(
    layers: &[CandleLayer],
    rope: &RopeCache,
    x: Tensor,
    prefix: Option<&CandlePrefix>,
) -> Result<Tensor, EngineError> {
    let rows = x.dim(1)?;
    let device = x.device().clone();
    let p = prefix.map_or(0, |p| p.len);
    let (cos, sin) = rope_tables(rope, p..p + rows, &device)?;
    let mask = causal_mask(p, rows, &device)?;
    let mut x = x;
    for (i, layer) in layers.iter().enumerate() {
        let kv = match prefix {
            Some(p) => Some(p.layers.get(i).ok_or_else(|| {
                EngineError::Internal("a prefix with fewer layers than the model".into())
            })?),
            None => None,
        };
        x = layer.forward(&x, &cos, &sin, &mask, kv)?.0;
    }
    Ok(x)
}
