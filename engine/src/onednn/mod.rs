//! The packed CPU forward pass on oneDNN (built where the system has oneDNN; see `build.rs`).
//!
//! Sequences are concatenated into one (tokens × hidden) matrix with no padding: every
//! projection, LayerNorm and GELU runs over real tokens only, and attention runs per sequence
//! (varlen, as flash-attention's `cu_seqlens`). The projections use oneDNN's GEMM kernels —
//! brgemm with AVX-512 f32, AVX512-BF16 `vdpbf16ps`, VNNI int8 (AMX where the CPU has it);
//! AVX2 `gemm:jit` below AVX-512 — which candle's CPU backend does not reach. Measured figures
//! are in the README.
//!
//! Precision here is compute precision, not just storage:
//! - f32: f32 GEMMs.
//! - bf16: bf16 weights and GEMM inputs, f32 accumulation, outputs, residual stream, LayerNorm
//!   and softmax.
//! - int8: per-output-channel symmetric int8 weights × per-token dynamic asymmetric u8
//!   activations (scale and zero point per row: GELU outputs are mostly positive, and a
//!   symmetric range would waste half the levels), int32 accumulation; bias, residual,
//!   LayerNorm, GELU and attention stay f32. Without VNNI the weights keep to ±63 (7 bits):
//!   oneDNN's AVX2 int8 kernels sum u8×s8 product pairs in saturating int16.
//! - bf16 needs AVX512-BF16; elsewhere [`crate::encoder`] leaves bf16 to candle.
//!
//! f16 has no fast CPU kernel here and stays on the candle path (f16 weights, f32 compute).

mod ffi;

use std::sync::Mutex;

use candle_core::Tensor;

use super::encoder::LayerWeights;
use super::hf_config::HiddenAct;
use super::precision::Precision;
use super::EngineError;
use ffi::{Ctx, Epilogue, Gemm};

/// Whether the packed path can run `precision` for a model with this activation.
pub fn supports(precision: Precision, act: HiddenAct) -> bool {
    act == HiddenAct::Gelu && precision != Precision::F16
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

/// A projection in one precision, with what int8's epilogue needs kept aside.
struct Projection {
    gemm: Gemm,
    /// Int8 only: bias added after the per-row activation scale.
    bias: Vec<f32>,
    /// Int8 only: weight scale × column sum of the int8 weights, per output column: what a row's
    /// zero point contributes to each output.
    comp: Vec<f32>,
}

impl Projection {
    /// `int8_max`: [`int8_weight_limit`], kept to by int8 weights.
    fn new(
        w: &(Tensor, Tensor),
        precision: Precision,
        epilogue: Epilogue,
        int8_max: f32,
    ) -> Result<Self, EngineError> {
        let (n, k) = w.0.dims2()?;
        let weight = f32_values(&w.0)?;
        let bias = f32_values(&w.1)?;
        Ok(match precision {
            Precision::Int8 => {
                let (q, scales) = quantize_weight(&weight, n, k, int8_max);
                let comp = (0..n)
                    .map(|r| {
                        let row = &q[r * k..(r + 1) * k];
                        scales[r] * row.iter().map(|&v| f32::from(v)).sum::<f32>()
                    })
                    .collect();
                Self {
                    gemm: Gemm::int8(&q, n, k, &scales)?,
                    bias,
                    comp,
                }
            }
            Precision::Bf16 => {
                let bits: Vec<u16> = weight
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                Self {
                    gemm: Gemm::bf16(&bits, n, k, Some(&bias), epilogue)?,
                    bias: Vec::new(),
                    comp: Vec::new(),
                }
            }
            Precision::F32 | Precision::F16 => Self {
                gemm: Gemm::f32(&weight, n, k, Some(&bias), epilogue)?,
                bias: Vec::new(),
                comp: Vec::new(),
            },
        })
    }

    /// Weights plus the f32 bias (kept in the oneDNN handle or beside it).
    fn weight_bytes(&self) -> usize {
        self.gemm.weight_bytes() + self.gemm.outputs() * 4
    }
}

/// The largest int8 weight magnitude this CPU's int8 kernels sum without overflow: 127 with
/// VNNI, 63 without (see [`ffi::int8_has_vnni`]).
fn int8_weight_limit() -> i8 {
    if ffi::int8_has_vnni() {
        127
    } else {
        63
    }
}

/// Symmetric per-row int8: row r of (n × k) `w` as `q[r, :] · scale[r]`, with |q| ≤ `max`.
fn quantize_weight(w: &[f32], n: usize, k: usize, max: f32) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scales = vec![1f32; n];
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if amax > 0.0 { amax / max } else { 1.0 };
        for (dst, &v) in q[r * k..(r + 1) * k].iter_mut().zip(row) {
            *dst = (v / scale).round().clamp(-max, max) as i8;
        }
        scales[r] = scale;
    }
    (q, scales)
}

struct Layer {
    qkv: Projection,
    attn_out: Projection,
    attn_norm: (Vec<f32>, Vec<f32>),
    ff_in: Projection,
    ff_out: Projection,
    ff_norm: (Vec<f32>, Vec<f32>),
    hidden: usize,
    intermediate: usize,
}

/// Activation buffers, kept between forward passes: fresh multi-megabyte allocations cost
/// page faults on every call (measured: ~2–3% of an int8 forward pass).
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
}

/// `buffer` resized to `len` (contents unspecified), without shrinking its allocation.
fn sized<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    buffer.resize(len, T::default());
    &mut buffer[..len]
}

struct State {
    ctx: Ctx,
    layers: Vec<Layer>,
    scratch: Scratch,
}

/// The encoder's transformer layers on oneDNN, run over packed sequences.
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
        let ctx = Ctx::new(first.heads, hidden / first.heads, first.eps as f32)?;
        let fused = precision != Precision::Int8;
        let int8_limit = int8_weight_limit();
        let int8_max = f32::from(int8_limit);
        // The sublayers that end in the residual add it in the GEMM where oneDNN fuses it.
        let residual = Epilogue {
            accumulate: fused,
            ..Default::default()
        };
        let layers = weights
            .iter()
            .map(|w| {
                let norm = |p: &(Tensor, Tensor)| -> Result<_, EngineError> {
                    Ok((f32_values(&p.0)?, f32_values(&p.1)?))
                };
                Ok(Layer {
                    qkv: Projection::new(&w.qkv, precision, Epilogue::default(), int8_max)?,
                    attn_out: Projection::new(&w.attn_out, precision, residual, int8_max)?,
                    attn_norm: norm(&w.attn_norm)?,
                    ff_in: Projection::new(
                        &w.ff_in,
                        precision,
                        Epilogue {
                            gelu: fused,
                            bf16_output: precision == Precision::Bf16,
                            ..Default::default()
                        },
                        int8_max,
                    )?,
                    ff_out: Projection::new(&w.ff_out, precision, residual, int8_max)?,
                    ff_norm: norm(&w.ff_norm)?,
                    hidden,
                    intermediate: w.ff_in.0.dim(0)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut implementation = layers
            .first()
            .map(|l| l.qkv.gemm.implementation())
            .unwrap_or_default();
        if precision == Precision::Int8 && int8_limit < 127 {
            implementation.push_str(", 7-bit weights: no VNNI");
        }
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
    pub fn forward(&self, x: &mut [f32], offsets: &[i64]) -> Result<(), EngineError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| EngineError::Internal("oneDNN state poisoned".into()))?;
        let State {
            ctx,
            layers,
            scratch,
        } = &mut *state;
        let Some(first) = layers.first() else {
            return Ok(());
        };
        let (h, i) = (first.hidden, first.intermediate);
        let m = x.len() / h;
        let qkv = sized(&mut scratch.qkv, m * 3 * h);
        let attended = sized(&mut scratch.attended, m * h);
        match self.precision {
            Precision::Int8 => {
                let q_in = sized(&mut scratch.quantized, m * i.max(h));
                let scales = sized(&mut scratch.scales, m);
                let zps = sized(&mut scratch.zero_points, m);
                let tmp = sized(&mut scratch.tmp, m * h);
                let inter = sized(&mut scratch.inter, m * i);
                for layer in layers.iter() {
                    let q = &mut q_in[..m * h];
                    ffi::quantize_rows(x, h, q, scales, zps)?;
                    ctx.gemm(&layer.qkv.gemm, m, q, qkv)?;
                    let p = &layer.qkv;
                    ffi::scale_rows(qkv, 3 * h, scales, zps, &p.comp, &p.bias, None)?;
                    ctx.attention(qkv, offsets, attended)?;
                    ffi::quantize_rows(attended, h, q, scales, zps)?;
                    ctx.gemm(&layer.attn_out.gemm, m, q, tmp)?;
                    let p = &layer.attn_out;
                    ffi::scale_rows(tmp, h, scales, zps, &p.comp, &p.bias, Some(x))?;
                    ctx.layer_norm(x, &layer.attn_norm.0, &layer.attn_norm.1)?;
                    ffi::quantize_rows(x, h, q, scales, zps)?;
                    ctx.gemm(&layer.ff_in.gemm, m, q, inter)?;
                    let p = &layer.ff_in;
                    ffi::scale_rows(inter, i, scales, zps, &p.comp, &p.bias, None)?;
                    ctx.gelu(inter)?;
                    let q = &mut q_in[..m * i];
                    ffi::quantize_rows(inter, i, q, scales, zps)?;
                    ctx.gemm(&layer.ff_out.gemm, m, q, tmp)?;
                    let p = &layer.ff_out;
                    ffi::scale_rows(tmp, h, scales, zps, &p.comp, &p.bias, Some(x))?;
                    ctx.layer_norm(x, &layer.ff_norm.0, &layer.ff_norm.1)?;
                }
            }
            Precision::Bf16 => {
                let xb = sized(&mut scratch.x_bf16, m * h);
                let inter = sized(&mut scratch.inter_bf16, m * i);
                for layer in layers.iter() {
                    ctx.convert_bf16(x, xb)?;
                    ctx.gemm(&layer.qkv.gemm, m, xb, qkv)?;
                    ctx.attention(qkv, offsets, attended)?;
                    ctx.convert_bf16(attended, xb)?;
                    ctx.gemm(&layer.attn_out.gemm, m, xb, x)?;
                    ctx.layer_norm(x, &layer.attn_norm.0, &layer.attn_norm.1)?;
                    ctx.convert_bf16(x, xb)?;
                    ctx.gemm(&layer.ff_in.gemm, m, xb, inter)?;
                    ctx.gemm(&layer.ff_out.gemm, m, inter, x)?;
                    ctx.layer_norm(x, &layer.ff_norm.0, &layer.ff_norm.1)?;
                }
            }
            Precision::F32 | Precision::F16 => {
                let inter = sized(&mut scratch.inter, m * i);
                for layer in layers.iter() {
                    ctx.gemm(&layer.qkv.gemm, m, x, qkv)?;
                    ctx.attention(qkv, offsets, attended)?;
                    ctx.gemm(&layer.attn_out.gemm, m, attended, x)?;
                    ctx.layer_norm(x, &layer.attn_norm.0, &layer.attn_norm.1)?;
                    ctx.gemm(&layer.ff_in.gemm, m, x, inter)?;
                    ctx.gemm(&layer.ff_out.gemm, m, inter, x)?;
                    ctx.layer_norm(x, &layer.ff_norm.0, &layer.ff_norm.1)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_computes_x_times_w_transposed_plus_bias_and_refuses_wrong_element_types() {
        // W is (n = 2) × (k = 3), PyTorch's layout.
        let w = [1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0];
        let gemm = Gemm::f32(&w, 2, 3, Some(&[10.0, 20.0]), Epilogue::default()).expect("gemm");
        let mut ctx = Ctx::new(1, 3, 1e-12).expect("ctx");
        let x = [1.0f32, 1.0, 1.0, 2.0, 0.0, -1.0];
        let mut y = [0f32; 4];
        ctx.gemm(&gemm, 2, &x, &mut y).expect("runs");
        assert_eq!(y, [16.0, 19.5, 9.0, 18.0]);
        let narrow = [0u16; 6];
        assert!(ctx.gemm(&gemm, 2, &narrow, &mut y).is_err());
        assert!(
            ctx.gemm(&gemm, 3, &x, &mut y).is_err(),
            "rows beyond the buffer"
        );
    }

    #[test]
    fn weight_quantization_round_trips_within_half_a_step() {
        let w: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let (q, scales) = quantize_weight(&w, 4, 16, 127.0);
        for r in 0..4 {
            for c in 0..16 {
                let back = f32::from(q[r * 16 + c]) * scales[r];
                assert!((back - w[r * 16 + c]).abs() <= scales[r] / 2.0 + 1e-6);
            }
        }
    }

    #[test]
    fn int8_gemm_sums_full_range_products_without_saturating() {
        // The worst case for the u8 × s8 kernels: every activation 255, every weight at the
        // largest magnitude this CPU's kernels are given. A saturating int16 pair sum (AVX2
        // without VNNI at 127) would come out far below the exact total.
        let max = int8_weight_limit();
        let (n, k) = (2usize, 64usize);
        let weights: Vec<i8> = (0..n * k).map(|i| if i < k { max } else { -max }).collect();
        let gemm = Gemm::int8(&weights, n, k, &[1.0, 1.0]).expect("gemm");
        let mut ctx = Ctx::new(1, k, 1e-12).expect("ctx");
        let x = vec![255u8; k];
        let mut y = [0f32; 2];
        ctx.gemm(&gemm, 1, &x, &mut y).expect("runs");
        let exact = 255.0 * f32::from(max) * k as f32;
        assert_eq!(y, [exact, -exact]);
    }
}
