//! BERT-family layers on the packed kernels (the default CPU path where built with oneDNN).
//!
//! Sequences are concatenated into one (tokens × hidden) matrix with no padding: every
//! projection, LayerNorm and GELU runs over real tokens only, and attention runs per sequence
//! (varlen, as flash-attention's `cu_seqlens`). The projections are [`PackedLinear`]s; where
//! the precision allows, the residual add and GELU are fused into the GEMMs. Precision here is
//! compute precision (see [`crate::kernels`]): bf16 keeps the residual stream, LayerNorm and
//! softmax in f32; int8 quantizes each GEMM's input rows on the fly.

use std::sync::Mutex;

use candle_core::Tensor;

use super::layers::LayerWeights;
use crate::hf_config::HiddenAct;
use crate::kernels::{
    int8_gelu_requantize, quantize_rows, sized, Ctx, Epilogue, PackedLinear, RowQuant,
};
use crate::modes::Precision;
use crate::EngineError;

/// Whether the packed path can run `precision` for a model with this activation.
pub fn supports(precision: Precision, act: HiddenAct) -> bool {
    act == HiddenAct::Gelu && PackedLinear::supports(precision)
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

/// Rows per chunk of the batch (whole sequences; a longer sequence is a chunk of its own): 512 ×
/// 1536 f32 FFN activations (MiniLM-L6; base models twice that) stay within two cores' L2 and
/// the shared L3.
const CHUNK_ROWS: usize = 512;

/// Rows per FFN pass in the int8 path, for a chunk that one long sequence makes longer.
const FFN_CHUNK_ROWS: usize = 512;

struct Layer {
    qkv: PackedLinear,
    attn_out: PackedLinear,
    attn_norm: (Vec<f32>, Vec<f32>),
    ff_in: PackedLinear,
    ff_out: PackedLinear,
    ff_norm: (Vec<f32>, Vec<f32>),
    hidden: usize,
    intermediate: usize,
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
    quantized_ffn: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<f32>,
}

struct State {
    ctx: Ctx,
    layers: Vec<Layer>,
    scratch: Scratch,
}

/// The encoder's transformer layers on the packed kernels.
pub struct PackedLayers {
    state: Mutex<State>,
    precision: Precision,
    implementation: String,
    weight_bytes: usize,
}

impl PackedLayers {
    /// Builds the layers from their f32 weights in `precision` (f32, bf16 or int8).
    pub fn new(weights: &[LayerWeights], precision: Precision) -> Result<Self, EngineError> {
        let first = weights
            .first()
            .ok_or_else(|| EngineError::InvalidModel("the encoder has no layers".into()))?;
        let hidden = first.qkv.0.dim(1)?;
        let mut ctx = Ctx::new(first.heads, hidden / first.heads, first.eps as f32)?;
        if precision != Precision::F32 {
            ctx.use_bf16_attention();
        }
        let attention = ctx.attention_kernel();
        let fused = precision != Precision::Int8;
        // The sublayers that end in the residual add it in the GEMM where oneDNN fuses it.
        let residual = Epilogue {
            accumulate: fused,
            ..Default::default()
        };
        let linear = |w: &(Tensor, Tensor), epilogue| {
            PackedLinear::new(&w.0, Some(&w.1), precision, epilogue)
        };
        let layers = weights
            .iter()
            .map(|w| {
                let norm = |p: &(Tensor, Tensor)| -> Result<_, EngineError> {
                    Ok((f32_values(&p.0)?, f32_values(&p.1)?))
                };
                Ok(Layer {
                    qkv: linear(&w.qkv, Epilogue::default())?,
                    attn_out: linear(&w.attn_out, residual)?,
                    attn_norm: norm(&w.attn_norm)?,
                    ff_in: linear(
                        &w.ff_in,
                        Epilogue {
                            gelu: fused,
                            bf16_output: precision == Precision::Bf16,
                            ..Default::default()
                        },
                    )?,
                    ff_out: linear(&w.ff_out, residual)?,
                    ff_norm: norm(&w.ff_norm)?,
                    hidden,
                    intermediate: w.ff_in.0.dim(0)?,
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
        implementation.push_str(attention.describe());
        let weight_bytes = layers
            .iter()
            .map(|l| {
                let norms = (l.attn_norm.0.len()
                    + l.attn_norm.1.len()
                    + l.ff_norm.0.len()
                    + l.ff_norm.1.len())
                    * 4;
                l.qkv.weight_bytes()
                    + l.attn_out.weight_bytes()
                    + l.ff_in.weight_bytes()
                    + l.ff_out.weight_bytes()
                    + norms
            })
            .sum();
        Ok(Self {
            state: Mutex::new(State {
                ctx,
                layers,
                scratch: Scratch::default(),
            }),
            precision,
            implementation,
            weight_bytes,
        })
    }

    /// The oneDNN kernel family in use (for logs and `/info`).
    pub fn implementation(&self) -> &str {
        &self.implementation
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Runs every layer over `x` (tokens × hidden, the embeddings' output), in place; sequence
    /// i owns rows `offsets[i]..offsets[i + 1]`.
    ///
    /// Sequences never see each other, so the batch goes through the encoder in chunks of whole
    /// sequences of about [`CHUNK_ROWS`] rows, each chunk through every layer before the next:
    /// a chunk's activations (and its rows of `x`) stay in the cores' caches from one GEMM,
    /// attention or row pass to the next, where whole-batch passes would stream every
    /// intermediate matrix through memory (on a 2-vCPU Sapphire Rapids with AMX, int8 went from
    /// ~300 to ~430 pairs/s with the FFN alone chunked).
    pub fn forward(&self, x: &mut [f32], offsets: &[i64]) -> Result<(), EngineError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| EngineError::Internal("packed layer state poisoned".into()))?;
        let Some(h) = state.layers.first().map(|l| l.hidden) else {
            return Ok(());
        };
        let mut local = Vec::new();
        let mut start = 0;
        while start + 1 < offsets.len() {
            let mut end = start + 1;
            while end + 1 < offsets.len() && offsets[end + 1] - offsets[start] <= CHUNK_ROWS as i64
            {
                end += 1;
            }
            let (r0, r1) = (offsets[start], offsets[end]);
            let rows = |r: i64| {
                usize::try_from(r).map_err(|_| EngineError::Internal("negative offset".into()))
            };
            let (r0, r1) = (rows(r0)?, rows(r1)?);
            let chunk = x
                .get_mut(r0 * h..r1 * h)
                .ok_or_else(|| EngineError::Internal("offsets beyond the input".into()))?;
            local.clear();
            local.extend(offsets[start..=end].iter().map(|&o| o - offsets[start]));
            self.forward_chunk(&mut state, chunk, &local)?;
            start = end;
        }
        Ok(())
    }

    /// Every layer over one chunk of whole sequences (`offsets` from 0).
    fn forward_chunk(
        &self,
        state: &mut State,
        x: &mut [f32],
        offsets: &[i64],
    ) -> Result<(), EngineError> {
        let State {
            ctx,
            layers,
            scratch,
        } = state;
        let Some(first) = layers.first() else {
            return Ok(());
        };
        let (h, i) = (first.hidden, first.intermediate);
        let m = x.len() / h;
        let qkv = sized(&mut scratch.qkv, m * 3 * h);
        let attended = sized(&mut scratch.attended, m * h);
        match self.precision {
            Precision::Int8 => {
                let q_in = sized(&mut scratch.quantized, m * h);
                let scales = sized(&mut scratch.scales, m);
                let zps = sized(&mut scratch.zero_points, m);
                let tmp = sized(&mut scratch.tmp, m * h);
                let inter = sized(&mut scratch.inter, FFN_CHUNK_ROWS.min(m) * i);
                let q_ffn = sized(&mut scratch.quantized_ffn, FFN_CHUNK_ROWS.min(m) * i);
                // Each sublayer's end (epilogue, GELU or residual + LayerNorm) also quantizes the
                // next GEMM's input rows, so only the first layer and attention's output are
                // quantized on their own.
                quantize_rows(x, h, &mut q_in[..m * h], scales, zps)?;
                let last = layers.len() - 1;
                for (index, layer) in layers.iter().enumerate() {
                    ctx.gemm(layer.qkv.gemm(), m, &q_in[..m * h], qkv)?;
                    ctx.int8_attention(
                        qkv,
                        offsets,
                        RowQuant {
                            scales,
                            zero_points: zps,
                        },
                        layer.qkv.int8_columns(),
                        attended,
                        &mut q_in[..m * h],
                    )?;
                    ctx.gemm(layer.attn_out.gemm(), m, &q_in[..m * h], tmp)?;
                    ctx.int8_residual_norm(
                        tmp,
                        x,
                        RowQuant {
                            scales,
                            zero_points: zps,
                        },
                        layer.attn_out.int8_columns(),
                        (&layer.attn_norm.0, &layer.attn_norm.1),
                        Some(&mut q_in[..m * h]),
                    )?;
                    // The FFN runs in chunks of rows so that its (rows × intermediate)
                    // activations stay in cache between the GEMMs and the row passes.
                    let mut r0 = 0;
                    while r0 < m {
                        let rows = FFN_CHUNK_ROWS.min(m - r0);
                        let r1 = r0 + rows;
                        let inter = &mut inter[..rows * i];
                        ctx.gemm(layer.ff_in.gemm(), rows, &q_in[r0 * h..r1 * h], inter)?;
                        let q = &mut q_ffn[..rows * i];
                        int8_gelu_requantize(
                            inter,
                            i,
                            RowQuant {
                                scales: &mut scales[r0..r1],
                                zero_points: &mut zps[r0..r1],
                            },
                            layer.ff_in.int8_columns(),
                            q,
                        )?;
                        let tmp = &mut tmp[r0 * h..r1 * h];
                        ctx.gemm(layer.ff_out.gemm(), rows, q, tmp)?;
                        r0 = r1;
                    }

                    ctx.int8_residual_norm(
                        tmp,
                        x,
                        RowQuant {
                            scales,
                            zero_points: zps,
                        },
                        layer.ff_out.int8_columns(),
                        (&layer.ff_norm.0, &layer.ff_norm.1),
                        (index < last).then_some(&mut q_in[..m * h]),
                    )?;
                }
            }
            Precision::Bf16 => {
                let xb = sized(&mut scratch.x_bf16, m * h);
                let inter = sized(&mut scratch.inter_bf16, m * i);
                for layer in layers.iter() {
                    ctx.convert_bf16(x, xb)?;
                    ctx.gemm(layer.qkv.gemm(), m, xb, qkv)?;
                    ctx.attention(qkv, offsets, attended)?;
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
                    ctx.attention(qkv, offsets, attended)?;
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
