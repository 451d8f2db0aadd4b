//! DeBERTa's layers over packed sequences (no padding anywhere): the projections are
//! [`PackedLinear`]s on the kernels layer (f32, bf16 or int8 compute, residual add and GELU
//! fused where the precision allows, exactly as the BERT family runs them), the disentangled
//! attention is our own op (`kernels::disentangled_attention`) with positions restarting at 0
//! in every sequence. f16 has no fast CPU GEMM: f16 models run the candle layers.

use std::sync::Mutex;

use candle_core::Tensor;

use super::weights::{LayerWeights, Linear};
use crate::hf_config::HiddenAct;
use crate::kernels::disentangled_attention::{
    AttentionScratch, DisentangledAttention, RelativePositions,
};
use crate::kernels::{quantize_rows, sized, Ctx, Epilogue, PackedLinear};
use crate::modes::Precision;
use crate::EngineError;

/// Whether the packed path can run `precision` for a model with this activation (the fused
/// epilogue is exact GELU).
pub fn supports(precision: Precision, act: HiddenAct) -> bool {
    act == HiddenAct::Gelu && PackedLinear::supports(precision)
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

struct Layer {
    qkv: PackedLinear,
    attn_out: PackedLinear,
    attn_norm: (Vec<f32>, Vec<f32>),
    ff_in: PackedLinear,
    ff_out: PackedLinear,
    ff_norm: (Vec<f32>, Vec<f32>),
    /// Scaled (2·span × hidden) position keys / queries (see `LayerWeights`).
    pos_key: Option<Vec<f32>>,
    pos_query: Option<Vec<f32>>,
}

impl Layer {
    fn weight_bytes(&self) -> usize {
        let floats = self.attn_norm.0.len()
            + self.attn_norm.1.len()
            + self.ff_norm.0.len()
            + self.ff_norm.1.len()
            + self.pos_key.as_ref().map_or(0, Vec::len)
            + self.pos_query.as_ref().map_or(0, Vec::len);
        self.qkv.weight_bytes()
            + self.attn_out.weight_bytes()
            + self.ff_in.weight_bytes()
            + self.ff_out.weight_bytes()
            + floats * 4
    }
}

/// Activation buffers, kept between forward passes.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    attended: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    inter_bf16: Vec<u16>,
    x_bf16: Vec<u16>,
    quantized: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<f32>,
    attention: AttentionScratch,
}

/// What one forward pass uses exclusively (the kernel handles are `Send`, not `Sync`).
struct State {
    ctx: Ctx,
    layers: Vec<Layer>,
    scratch: Scratch,
}

/// The attention's fixed part: sizes, scale and position scheme.
#[derive(Clone, Copy)]
struct AttentionShape {
    heads: usize,
    head_dim: usize,
    scale: f32,
    positions: RelativePositions,
    threads: usize,
}

/// The layers on the packed kernels.
pub struct PackedLayers {
    state: Mutex<State>,
    precision: Precision,
    hidden: usize,
    intermediate: usize,
    attention: AttentionShape,
    implementation: String,
    weight_bytes: usize,
}

/// Threads for the attention op: as many as the GEMMs' OpenMP pool (`OMP_NUM_THREADS`, else
/// every CPU this process may use), so that the two take turns on the same cores.
fn attention_threads() -> usize {
    std::env::var("OMP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl PackedLayers {
    /// Builds the layers in `precision` (f32, bf16 or int8). `positions` is `None` without
    /// relative attention (the layers then carry no position tables).
    pub fn new(
        weights: &[LayerWeights],
        heads: usize,
        eps: f64,
        scale: f32,
        positions: Option<RelativePositions>,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let first = weights
            .first()
            .ok_or_else(|| EngineError::InvalidModel("the encoder has no layers".into()))?;
        let hidden = first.qkv.0.dim(1)?;
        let intermediate = first.ff_in.0.dim(0)?;
        let ctx = Ctx::new(heads, hidden / heads, eps as f32)?;
        let fused = precision != Precision::Int8;
        let residual = Epilogue {
            accumulate: fused,
            ..Default::default()
        };
        let gelu = Epilogue {
            gelu: fused,
            bf16_output: precision == Precision::Bf16,
            ..Default::default()
        };
        let linear =
            |w: &Linear, epilogue| PackedLinear::new(&w.0, Some(&w.1), precision, epilogue);
        let layers = weights
            .iter()
            .map(|w| {
                let norm = |p: &Linear| -> Result<_, EngineError> {
                    Ok((f32_values(&p.0)?, f32_values(&p.1)?))
                };
                let table = |t: &Option<Tensor>| t.as_ref().map(f32_values).transpose();
                Ok(Layer {
                    qkv: linear(&w.qkv, Epilogue::default())?,
                    attn_out: linear(&w.attn_out, residual)?,
                    attn_norm: norm(&w.attn_norm)?,
                    ff_in: linear(&w.ff_in, gelu)?,
                    ff_out: linear(&w.ff_out, residual)?,
                    ff_norm: norm(&w.ff_norm)?,
                    pos_key: table(&w.pos_key)?,
                    pos_query: table(&w.pos_query)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut implementation = layers
            .first()
            .map(|l| l.qkv.implementation())
            .unwrap_or_default();
        if precision == Precision::Int8 && crate::kernels::int8_weight_limit() < 127 {
            implementation.push_str(", 7-bit weights: no VNNI");
        }
        let weight_bytes = layers.iter().map(Layer::weight_bytes).sum();
        // Without relative attention the layers have no tables and no span is ever read.
        let positions = match positions {
            Some(p) => p,
            None => RelativePositions::new(-1, 1)?,
        };
        Ok(Self {
            state: Mutex::new(State {
                ctx,
                layers,
                scratch: Scratch::default(),
            }),
            precision,
            hidden,
            intermediate,
            attention: AttentionShape {
                heads,
                head_dim: hidden / heads,
                scale,
                positions,
                threads: attention_threads(),
            },
            implementation,
            weight_bytes,
        })
    }

    /// The kernel family in use (for logs and `/info`).
    pub fn implementation(&self) -> &str {
        &self.implementation
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Runs every layer over `x` (tokens × hidden, the embeddings' output) in place; sequence
    /// i owns rows `offsets[i]..offsets[i + 1]`.
    pub fn forward(&self, x: &mut [f32], offsets: &[usize]) -> Result<(), EngineError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| EngineError::Internal("packed DeBERTa state poisoned".into()))?;
        let State {
            ctx,
            layers,
            scratch,
        } = &mut *state;
        let (h, i) = (self.hidden, self.intermediate);
        let m = x.len() / h;
        let qkv = sized(&mut scratch.qkv, m * 3 * h);
        let attended = sized(&mut scratch.attended, m * h);
        let shape = self.attention;
        let attention_scratch = &mut scratch.attention;
        let mut attend = |layer: &Layer, qkv: &[f32], out: &mut [f32]| {
            DisentangledAttention {
                heads: shape.heads,
                head_dim: shape.head_dim,
                scale: shape.scale,
                pos_key: layer.pos_key.as_deref(),
                pos_query: layer.pos_query.as_deref(),
                positions: shape.positions,
            }
            .forward(qkv, offsets, out, attention_scratch, shape.threads)
        };
        match self.precision {
            Precision::Int8 => {
                let q_in = sized(&mut scratch.quantized, m * i.max(h));
                let scales = sized(&mut scratch.scales, m);
                let zps = sized(&mut scratch.zero_points, m);
                let tmp = sized(&mut scratch.tmp, m * h);
                let inter = sized(&mut scratch.inter, m * i);
                for layer in layers.iter() {
                    let q = &mut q_in[..m * h];
                    quantize_rows(x, h, q, scales, zps)?;
                    ctx.gemm(layer.qkv.gemm(), m, q, qkv)?;
                    layer.qkv.int8_epilogue(qkv, scales, zps, None)?;
                    attend(layer, qkv, attended)?;
                    quantize_rows(attended, h, q, scales, zps)?;
                    ctx.gemm(layer.attn_out.gemm(), m, q, tmp)?;
                    layer.attn_out.int8_epilogue(tmp, scales, zps, Some(x))?;
                    ctx.layer_norm(x, &layer.attn_norm.0, &layer.attn_norm.1)?;
                    quantize_rows(x, h, q, scales, zps)?;
                    ctx.gemm(layer.ff_in.gemm(), m, q, inter)?;
                    layer.ff_in.int8_epilogue(inter, scales, zps, None)?;
                    ctx.gelu(inter)?;
                    let q = &mut q_in[..m * i];
                    quantize_rows(inter, i, q, scales, zps)?;
                    ctx.gemm(layer.ff_out.gemm(), m, q, tmp)?;
                    layer.ff_out.int8_epilogue(tmp, scales, zps, Some(x))?;
                    ctx.layer_norm(x, &layer.ff_norm.0, &layer.ff_norm.1)?;
                }
            }
            Precision::Bf16 => {
                let xb = sized(&mut scratch.x_bf16, m * h);
                let inter = sized(&mut scratch.inter_bf16, m * i);
                for layer in layers.iter() {
                    ctx.convert_bf16(x, xb)?;
                    ctx.gemm(layer.qkv.gemm(), m, xb, qkv)?;
                    attend(layer, qkv, attended)?;
                    ctx.convert_bf16(attended, xb)?;
                    ctx.gemm(layer.attn_out.gemm(), m, xb, x)?;
                    ctx.layer_norm(x, &layer.attn_norm.0, &layer.attn_norm.1)?;
                    ctx.convert_bf16(x, xb)?;
                    ctx.gemm(layer.ff_in.gemm(), m, xb, inter)?;
                    ctx.gemm(layer.ff_out.gemm(), m, inter, x)?;
                    ctx.layer_norm(x, &layer.ff_norm.0, &layer.ff_norm.1)?;
                }
            }
            Precision::F32 | Precision::F16 => {
                let inter = sized(&mut scratch.inter, m * i);
                for layer in layers.iter() {
                    ctx.gemm(layer.qkv.gemm(), m, x, qkv)?;
                    attend(layer, qkv, attended)?;
                    ctx.gemm(layer.attn_out.gemm(), m, attended, x)?;
                    ctx.layer_norm(x, &layer.attn_norm.0, &layer.attn_norm.1)?;
                    ctx.gemm(layer.ff_in.gemm(), m, x, inter)?;
                    ctx.gemm(layer.ff_out.gemm(), m, inter, x)?;
                    ctx.layer_norm(x, &layer.ff_norm.0, &layer.ff_norm.1)?;
                }
            }
        }
        Ok(())
    }
}
