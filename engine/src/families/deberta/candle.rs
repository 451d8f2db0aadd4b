//! DeBERTa's transformer layers on candle tensors over padded batches: any device, any
//! precision (reduced precisions store the projections' weights only; see `crate::precision`).

use candle_core::{DType, Module, Tensor};
use candle_nn::LayerNorm;

use super::weights::LayerWeights;
use crate::hf_config::HiddenAct;
use crate::kernels::disentangled_attention::RelativePositions;
use crate::modes::Precision;
use crate::precision::Projection;
use crate::EngineError;

struct Layer {
    qkv: Projection,
    attn_out: Projection,
    attn_norm: LayerNorm,
    ff_in: Projection,
    ff_out: Projection,
    ff_norm: LayerNorm,
    /// (heads, 2·span, head_dim) scaled position keys / queries, f32.
    pos_key: Option<Tensor>,
    pos_query: Option<Tensor>,
}

/// The layers as candle modules.
pub struct CandleLayers {
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    scale: f64,
    positions: Option<RelativePositions>,
    act: HiddenAct,
}

/// Per-head layout of a (2·span × hidden) position table: (heads, 2·span, head_dim).
fn per_head(table: &Tensor, heads: usize) -> Result<Tensor, EngineError> {
    let (rows, hidden) = table.dims2()?;
    Ok(table
        .reshape((rows, heads, hidden / heads))?
        .transpose(0, 1)?
        .contiguous()?)
}

impl CandleLayers {
    pub fn new(
        weights: &[LayerWeights],
        heads: usize,
        scale: f32,
        positions: Option<RelativePositions>,
        act: HiddenAct,
        eps: f64,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let layers = weights
            .iter()
            .map(|w| {
                let proj = |(weight, bias): &(Tensor, Tensor)| {
                    Projection::new(weight.clone(), Some(bias.clone()), precision)
                };
                let norm = |(g, b): &(Tensor, Tensor)| LayerNorm::new(g.clone(), b.clone(), eps);
                Ok(Layer {
                    qkv: proj(&w.qkv)?,
                    attn_out: proj(&w.attn_out)?,
                    attn_norm: norm(&w.attn_norm),
                    ff_in: proj(&w.ff_in)?,
                    ff_out: proj(&w.ff_out)?,
                    ff_norm: norm(&w.ff_norm),
                    pos_key: w.pos_key.as_ref().map(|t| per_head(t, heads)).transpose()?,
                    pos_query: w
                        .pos_query
                        .as_ref()
                        .map(|t| per_head(t, heads))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let hidden = weights.first().map_or(Ok(0), |w| w.qkv.0.dim(1))?;
        Ok(Self {
            layers,
            heads,
            head_dim: hidden / heads.max(1),
            scale: f64::from(scale),
            positions,
            act,
        })
    }

    /// Bytes of the layers' weights as stored (position tables included).
    pub fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let norm = |n: &LayerNorm| bytes(n.weight()) + n.bias().map_or(0, bytes);
        self.layers
            .iter()
            .map(|l| {
                l.qkv.weight_bytes()
                    + l.attn_out.weight_bytes()
                    + l.ff_in.weight_bytes()
                    + l.ff_out.weight_bytes()
                    + norm(&l.attn_norm)
                    + norm(&l.ff_norm)
                    + l.pos_key.as_ref().map_or(0, bytes)
                    + l.pos_query.as_ref().map_or(0, bytes)
            })
            .sum()
    }

    /// Runs every layer over `x` (batch, seq, hidden) with the additive key mask `bias`
    /// (batch, 1, 1, seq, f32).
    pub fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor, EngineError> {
        let seq = x.dim(1)?;
        let relative = match &self.positions {
            Some(p) if seq > 0 => Some(RelativeIndex::new(p, seq, x.device())?),
            _ => None,
        };
        let mut x = x.clone();
        for layer in &self.layers {
            x = self.attention(layer, &x, bias, relative.as_ref())?;
            let hidden = layer.ff_in.forward(&x)?;
            let hidden = match self.act {
                HiddenAct::Gelu => hidden.gelu_erf()?,
                HiddenAct::GeluApproximate => hidden.gelu()?,
                HiddenAct::Relu => hidden.relu()?,
                HiddenAct::Silu => hidden.silu()?,
            };
            x = layer
                .ff_norm
                .forward(&(layer.ff_out.forward(&hidden)? + &x)?)?;
        }
        Ok(x)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        bias: &Tensor,
        relative: Option<&RelativeIndex>,
    ) -> Result<Tensor, EngineError> {
        let (b, s, h) = x.dims3()?;
        let qkv = layer
            .qkv
            .forward(x)?
            .reshape((b, s, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let mut scores = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(rel) = relative {
            // Both terms are gathers from a (batch, heads, seq, width) product, taken as one
            // index_select over its flattened last two dimensions.
            let gather = |product: Tensor, index: &Tensor| -> Result<Tensor, EngineError> {
                Ok(product
                    .reshape((b, self.heads, s * rel.width))?
                    .index_select(index, 2)?
                    .reshape((b, self.heads, s, s))?)
            };
            if let Some(pk) = &layer.pos_key {
                // c2p[b, h, i, w] = q_i · PK[lo + w]; score (i, j) takes w = idx(i − j) − lo.
                let pk = pk.narrow(1, rel.lo, rel.width)?;
                let c2p = q.broadcast_matmul(&pk.t()?)?.contiguous()?;
                scores = (scores + gather(c2p, &rel.c2p)?)?;
            }
            if let Some(pq) = &layer.pos_query {
                // p2c[b, h, j, w] = k_j · PQ[lo + w]; score (i, j) takes p2c[j, idx(i − j) − lo].
                let pq = pq.narrow(1, rel.lo, rel.width)?;
                let p2c = k.broadcast_matmul(&pq.t()?)?.contiguous()?;
                scores = (scores + gather(p2c, &rel.p2c)?)?;
            }
        }
        // Softmax in f32 with a finite mask: no NaN whatever the dtype.
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        let out = layer.attn_out.forward(&context)?;
        Ok(layer.attn_norm.forward(&(out + x)?)?)
    }
}

/// The gather indices of one padded batch (positions run 0..seq in every row), into a
/// product flattened to (batch, heads, seq · width): seq² entries, shared by every row and head.
struct RelativeIndex {
    /// First and count of the position-table rows this length reaches.
    lo: usize,
    width: usize,
    /// Entry (i, j): `i · width + idx(i − j) − lo`.
    c2p: Tensor,
    /// Entry (i, j): `j · width + idx(i − j) − lo`.
    p2c: Tensor,
}

impl RelativeIndex {
    fn new(
        positions: &RelativePositions,
        seq: usize,
        device: &candle_core::Device,
    ) -> Result<Self, EngineError> {
        // table[r + seq − 1] = idx(r), r = −(seq − 1)..=seq − 1, non-decreasing in r.
        let table = positions.table(seq);
        let lo = table.first().copied().unwrap_or(0) as usize;
        let hi = table.last().copied().unwrap_or(0) as usize;
        let width = hi - lo + 1;
        if u32::try_from(seq * width).is_err() {
            return Err(EngineError::InvalidModel(format!(
                "{seq} tokens are too many for relative attention over {width} positions"
            )));
        }
        let mut c2p = Vec::with_capacity(seq * seq);
        let mut p2c = Vec::with_capacity(seq * seq);
        for i in 0..seq {
            for j in 0..seq {
                let w = table[seq - 1 + i - j] as usize - lo;
                c2p.push((i * width + w) as u32);
                p2c.push((j * width + w) as u32);
            }
        }
        Ok(Self {
            lo,
            width,
            c2p: Tensor::from_vec(c2p, seq * seq, device)?,
            p2c: Tensor::from_vec(p2c, seq * seq, device)?,
        })
    }
}
