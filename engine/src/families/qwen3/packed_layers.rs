//! Qwen3 decoder layers on the packed kernels: rows of every sequence concatenated without
//! padding, projections on [`PackedLinear`] (f32, bf16 or int8 GEMMs), and the kernels layer's
//! plain-Rust RMSNorm, RoPE, SwiGLU and causal grouped-query attention after a shared prefix.
//!
//! Two kinds of pass:
//! - a prefix pass runs shared prefixes (each causal on its own) and keeps every layer's keys
//!   and values; its last layer stops once those are computed;
//! - a row pass runs the rows that follow those prefixes, each attending to its prefix's keys
//!   and values and then causally to its own; in the last layer only each row's final position
//!   goes on through the output projection and the MLP, the one position that is scored.

use std::sync::Mutex;

use candle_core::Tensor;

use super::weights::LayerWeights;
use crate::kernels::causal_attention::{causal_attention, HeadLayout, PrefixKv, Sequence};
use crate::kernels::rms_norm::{rms_norm_rows, rms_norm_rows_in_place};
use crate::kernels::rope::{RopeCache, RopeTable};
use crate::kernels::swiglu::silu_mul;
use crate::kernels::{sized, Ctx, Epilogue, LinearScratch, PackedLinear};
use crate::modes::Precision;
use crate::EngineError;

/// A prefix's keys and values after every layer: `len` rows of `kv_heads × head_dim` each.
pub struct PackedPrefix {
    pub len: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl PackedPrefix {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * 4)
            .sum()
    }
}

/// One sequence of a row pass: how many rows it has, and the prefix they follow.
pub struct PackedRows<'a> {
    pub len: usize,
    pub prefix: Option<&'a PackedPrefix>,
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

struct PackedLayer {
    qkv: PackedLinear,
    /// Adds into the residual stream (accumulating epilogue).
    o: PackedLinear,
    gate_up: PackedLinear,
    /// Adds into the residual stream.
    down: PackedLinear,
    input_norm: Vec<f32>,
    post_attention_norm: Vec<f32>,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
}

/// Activation buffers, kept between passes (fresh multi-megabyte allocations cost page faults).
#[derive(Default)]
struct Buffers {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    last_x: Vec<f32>,
    last_attended: Vec<f32>,
    linear: LinearScratch,
}

/// The oneDNN handles (context and projections) must be driven by one thread at a time, so they
/// live behind one mutex with the buffers they fill.
struct State {
    ctx: Ctx,
    layers: Vec<PackedLayer>,
    buffers: Buffers,
}

/// The decoder's layers on the packed kernels.
pub struct PackedBody {
    state: Mutex<State>,
    layout: HeadLayout,
    hidden: usize,
    intermediate: usize,
    eps: f32,
    implementation: String,
    weight_bytes: usize,
}

impl PackedBody {
    /// Builds the layers from their f32 weights in `precision` (f32, bf16 or int8).
    pub fn new(
        weights: &[LayerWeights],
        layout: HeadLayout,
        eps: f64,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let first = weights
            .first()
            .ok_or_else(|| EngineError::InvalidModel("the decoder has no layers".into()))?;
        let hidden = first.o.dim(0)?;
        let intermediate = first.down.dim(1)?;
        let residual = Epilogue {
            accumulate: true,
            ..Default::default()
        };
        let layers = weights
            .iter()
            .map(|w| {
                Ok(PackedLayer {
                    qkv: PackedLinear::new(
                        &w.qkv,
                        w.qkv_bias.as_ref(),
                        precision,
                        Epilogue::default(),
                    )?,
                    o: PackedLinear::new(&w.o, w.o_bias.as_ref(), precision, residual)?,
                    gate_up: PackedLinear::new(&w.gate_up, None, precision, Epilogue::default())?,
                    down: PackedLinear::new(&w.down, None, precision, residual)?,
                    input_norm: f32_values(&w.input_norm)?,
                    post_attention_norm: f32_values(&w.post_attention_norm)?,
                    q_norm: f32_values(&w.q_norm)?,
                    k_norm: f32_values(&w.k_norm)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let implementation = layers
            .first()
            .map(|l| l.qkv.implementation())
            .unwrap_or_default();
        let ctx = Ctx::new(layout.heads, layout.head_dim, eps as f32)?;
        let weight_bytes = layers
            .iter()
            .map(|l| {
                let norms = l.input_norm.len()
                    + l.post_attention_norm.len()
                    + l.q_norm.len()
                    + l.k_norm.len();
                l.qkv.weight_bytes()
                    + l.o.weight_bytes()
                    + l.gate_up.weight_bytes()
                    + l.down.weight_bytes()
                    + norms * 4
            })
            .sum();
        Ok(Self {
            state: Mutex::new(State {
                ctx,
                layers,
                buffers: Buffers::default(),
            }),
            layout,
            hidden,
            intermediate,
            eps: eps as f32,
            implementation,
            weight_bytes,
        })
    }

    /// The GEMM kernel family in use (for `/info`).
    pub fn implementation(&self) -> &str {
        &self.implementation
    }

    /// Bytes of the weights as stored.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, EngineError> {
        self.state
            .lock()
            .map_err(|_| EngineError::Internal("packed decoder state poisoned".into()))
    }

    /// Normalizes `x`, projects it to queries, keys and values (into `b.qkv`), normalizes each
    /// query and key head and rotates them to `positions`.
    fn project_qkv(
        &self,
        layer: &PackedLayer,
        ctx: &mut Ctx,
        b: &mut Buffers,
        rope: &RopeTable,
        x: &[f32],
        positions: &[u32],
    ) -> Result<(), EngineError> {
        let HeadLayout {
            heads,
            kv_heads,
            head_dim: d,
        } = self.layout;
        let (h, w) = (self.hidden, self.layout.qkv_width());
        let m = positions.len();
        let normed = sized(&mut b.normed, m * h);
        rms_norm_rows(x, normed, h, &layer.input_norm, self.eps);
        let qkv = sized(&mut b.qkv, m * w);
        layer.qkv.forward(ctx, normed, qkv, &mut b.linear)?;
        for row in qkv.chunks_exact_mut(w) {
            rms_norm_rows_in_place(&mut row[..heads * d], d, &layer.q_norm, self.eps);
            rms_norm_rows_in_place(
                &mut row[heads * d..(heads + kv_heads) * d],
                d,
                &layer.k_norm,
                self.eps,
            );
        }
        rope.apply(qkv, w, 0, heads + kv_heads, positions)
    }

    /// `x += o(attended)`, then `x += down(silu(gate) · up)` of the normalized `x`.
    fn finish_layer(
        &self,
        layer: &PackedLayer,
        ctx: &mut Ctx,
        b: &mut Buffers,
        x: &mut [f32],
        attended: &[f32],
    ) -> Result<(), EngineError> {
        let (h, i) = (self.hidden, self.intermediate);
        let m = x.len() / h;
        layer.o.forward(ctx, attended, x, &mut b.linear)?;
        let normed = sized(&mut b.normed, m * h);
        rms_norm_rows(x, normed, h, &layer.post_attention_norm, self.eps);
        let gate_up = sized(&mut b.gate_up, m * 2 * i);
        layer.gate_up.forward(ctx, normed, gate_up, &mut b.linear)?;
        let act = sized(&mut b.act, m * i);
        silu_mul(gate_up, i, act);
        layer.down.forward(ctx, act, x, &mut b.linear)
    }

    /// Runs prefixes (embeddings `x`, `lens` rows each, every one causal on its own) and keeps
    /// each one's keys and values per layer.
    pub fn run_prefixes(
        &self,
        rope: &RopeCache,
        x: &mut [f32],
        lens: &[usize],
    ) -> Result<Vec<PackedPrefix>, EngineError> {
        let mut guard = self.lock()?;
        let State {
            ctx,
            layers,
            buffers: b,
        } = &mut *guard;
        let positions: Vec<u32> = lens.iter().flat_map(|&n| 0..n as u32).collect();
        let rope = rope.covering(lens.iter().copied().max().unwrap_or(0))?;
        let (w, kvw) = (self.layout.qkv_width(), self.layout.kv_width());
        let (k_at, v_at) = (
            self.layout.heads * self.layout.head_dim,
            self.layout.out_width() + kvw,
        );
        let mut kept: Vec<PackedPrefix> = lens
            .iter()
            .map(|&len| PackedPrefix {
                len,
                keys: Vec::new(),
                values: Vec::new(),
            })
            .collect();
        let sequences = sequences(lens, &[]);
        let last = layers.len().saturating_sub(1);
        for (l, layer) in layers.iter().enumerate() {
            self.project_qkv(layer, ctx, b, &rope, x, &positions)?;
            let mut rows = b.qkv.chunks_exact(w);
            for p in kept.iter_mut() {
                let (mut keys, mut values) = (
                    Vec::with_capacity(p.len * kvw),
                    Vec::with_capacity(p.len * kvw),
                );
                for row in rows.by_ref().take(p.len) {
                    keys.extend_from_slice(&row[k_at..k_at + kvw]);
                    values.extend_from_slice(&row[v_at..v_at + kvw]);
                }
                p.keys.push(keys);
                p.values.push(values);
            }
            if l == last {
                break;
            }
            let attended = sized(&mut b.attended, positions.len() * self.layout.out_width());
            causal_attention(self.layout, &b.qkv, &sequences, attended);
            let attended = std::mem::take(&mut b.attended);
            let result = self.finish_layer(layer, ctx, b, x, &attended);
            b.attended = attended;
            result?;
        }
        Ok(kept)
    }

    /// Runs `rows` (embeddings `x`, packed in order) after their prefixes; returns the hidden
    /// state of each sequence's last row (before the final norm), `hidden` values each.
    pub fn run_rows(
        &self,
        rope: &RopeCache,
        x: &mut [f32],
        rows: &[PackedRows<'_>],
    ) -> Result<Vec<f32>, EngineError> {
        let mut guard = self.lock()?;
        let State {
            ctx,
            layers,
            buffers: b,
        } = &mut *guard;
        let positions: Vec<u32> = rows
            .iter()
            .flat_map(|r| {
                let p = r.prefix.map_or(0, |p| p.len) as u32;
                p..p + r.len as u32
            })
            .collect();
        let lens: Vec<usize> = rows.iter().map(|r| r.len).collect();
        let rope = rope.covering(positions.iter().max().map_or(0, |&p| p as usize + 1))?;
        let (h, ow) = (self.hidden, self.layout.out_width());
        let last = layers.len().saturating_sub(1);
        for (l, layer) in layers.iter().enumerate() {
            self.project_qkv(layer, ctx, b, &rope, x, &positions)?;
            let prefixes: Vec<PrefixKv<'_>> = rows
                .iter()
                .map(|r| match r.prefix {
                    Some(p) => Ok(PrefixKv {
                        keys: p.keys.get(l).ok_or_else(missing_layer)?,
                        values: p.values.get(l).ok_or_else(missing_layer)?,
                        len: p.len,
                    }),
                    None => Ok(PrefixKv::EMPTY),
                })
                .collect::<Result<_, EngineError>>()?;
            let sequences = sequences(&lens, &prefixes);
            let mut attended = std::mem::take(&mut b.attended);
            let out = sized(&mut attended, positions.len() * ow);
            causal_attention(self.layout, &b.qkv, &sequences, out);
            let result = if l < last {
                self.finish_layer(layer, ctx, b, x, out)
            } else {
                // Only the scored position of each sequence goes on.
                let mut last_x = std::mem::take(&mut b.last_x);
                let mut last_attended = std::mem::take(&mut b.last_attended);
                last_x.clear();
                last_attended.clear();
                for s in &sequences {
                    let r = s.end - 1;
                    last_x.extend_from_slice(&x[r * h..(r + 1) * h]);
                    last_attended.extend_from_slice(&out[r * ow..(r + 1) * ow]);
                }
                let result = self.finish_layer(layer, ctx, b, &mut last_x, &last_attended);
                b.last_attended = last_attended;
                let hidden = last_x.clone();
                b.last_x = last_x;
                b.attended = attended;
                return result.map(|()| hidden);
            };
            b.attended = attended;
            result?;
        }
        Err(EngineError::Internal("the decoder has no layers".into()))
    }
}

fn missing_layer() -> EngineError {
    EngineError::Internal("a prefix with fewer layers than the model".into())
}

/// Packed sequences of `lens` rows, each after `prefixes[i]` (none where `prefixes` is empty).
fn sequences<'a>(lens: &[usize], prefixes: &[PrefixKv<'a>]) -> Vec<Sequence<'a>> {
    let mut start = 0;
    lens.iter()
        .enumerate()
        .map(|(i, &len)| {
            let s = Sequence {
                start,
                end: start + len,
                prefix: prefixes.get(i).copied().unwrap_or(PrefixKv::EMPTY),
            };
            start += len;
            s
        })
        .collect()
}
