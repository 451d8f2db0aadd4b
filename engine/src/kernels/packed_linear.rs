//! A projection on the packed kernels, in one precision, with a forward pass that takes and
//! gives f32 rows whatever the precision computes in.
//!
//! - f32: f32 GEMM.
//! - bf16: bf16 weights and GEMM inputs (rounded here), f32 accumulation and output.
//! - int8: per-output-channel symmetric int8 weights × per-token dynamic asymmetric u8
//!   activations (scale and zero point per row: GELU outputs are mostly positive, and a
//!   symmetric range would waste half the levels), int32 accumulation; the bias is added after
//!   the scales. Without VNNI the weights keep to ±63 (7 bits): oneDNN's AVX2 int8 kernels sum
//!   u8×s8 product pairs in saturating int16.
//! - f16 has no fast CPU kernel and is not built here: families keep f16 on candle.

use candle_core::Tensor;

use super::{int8_has_vnni, quantize_rows, scale_rows, sized, Ctx, Epilogue, Gemm, Int8Columns};
use crate::modes::Precision;
use crate::EngineError;

fn f32_values(t: &Tensor) -> Result<Vec<f32>, EngineError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

/// Buffers a [`PackedLinear`] forward pass converts its input into, kept between passes.
#[derive(Default)]
#[allow(dead_code)] // until a family's packed path converts through it
pub struct LinearScratch {
    /// bf16 input rows.
    pub x_bf16: Vec<u16>,
    /// Quantized u8 input rows, with each row's scale and zero point.
    pub quantized: Vec<u8>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<f32>,
    /// int8 GEMM output before its epilogue adds it into an accumulating output.
    pub tmp: Vec<f32>,
}

/// `y = x · Wᵀ + b` on the packed kernels, in one precision, with what int8's epilogue needs
/// kept aside.
#[allow(dead_code)] // `forward` (the generic path) is for families without fused passes
pub struct PackedLinear {
    gemm: Gemm,
    precision: Precision,
    epilogue: Epilogue,
    inputs: usize,
    /// Int8 only: bias added after the per-row activation scale (zeros without a bias).
    bias: Vec<f32>,
    /// Int8 only: weight scale × row sum of the int8 weights, per output column: what a row's
    /// zero point contributes to each output.
    comp: Vec<f32>,
}

#[allow(dead_code)]
impl PackedLinear {
    /// Builds the projection from f32 `weight` (out × in, PyTorch's layout) and `bias`.
    /// `epilogue` is compiled into f32/bf16 GEMMs; int8 applies `accumulate` and `gelu` in its
    /// own epilogue and refuses `bf16_output`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        precision: Precision,
        epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        let (n, k) = weight.dims2()?;
        let values = f32_values(weight)?;
        let bias = bias.map(f32_values).transpose()?;
        let (gemm, bias, comp) = match precision {
            Precision::Int8 => {
                if epilogue.bf16_output {
                    return Err(EngineError::Internal(
                        "an int8 projection cannot write bf16".into(),
                    ));
                }
                let max = f32::from(int8_weight_limit());
                let (q, scales) = quantize_weight(&values, n, k, max);
                let comp = (0..n)
                    .map(|r| {
                        let row = &q[r * k..(r + 1) * k];
                        scales[r] * row.iter().map(|&v| f32::from(v)).sum::<f32>()
                    })
                    .collect();
                let bias = bias.unwrap_or_else(|| vec![0.0; n]);
                (Gemm::int8(&q, n, k, &scales)?, bias, comp)
            }
            Precision::Bf16 => {
                let bits: Vec<u16> = values
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                let gemm = Gemm::bf16(&bits, n, k, bias.as_deref(), epilogue)?;
                (gemm, Vec::new(), Vec::new())
            }
            Precision::F32 => {
                let gemm = Gemm::f32(&values, n, k, bias.as_deref(), epilogue)?;
                (gemm, Vec::new(), Vec::new())
            }
            Precision::F16 => {
                return Err(EngineError::Internal(
                    "f16 has no packed CPU kernel; it runs on candle".into(),
                ))
            }
        };
        Ok(Self {
            gemm,
            precision,
            epilogue,
            inputs: k,
            bias,
            comp,
        })
    }

    /// Whether `precision` has packed kernels (f16 does not).
    pub fn supports(precision: Precision) -> bool {
        precision != Precision::F16
    }

    /// The GEMM, for families that drive it directly (fused bf16 input conversions).
    pub fn gemm(&self) -> &Gemm {
        &self.gemm
    }

    /// Output columns.
    pub fn outputs(&self) -> usize {
        self.gemm.outputs()
    }

    /// Input columns.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The oneDNN kernel family in use, e.g. `brg:avx512_core_bf16`.
    pub fn implementation(&self) -> String {
        self.gemm.implementation()
    }

    /// Weights plus the f32 bias (kept in the oneDNN handle or beside it).
    pub fn weight_bytes(&self) -> usize {
        self.gemm.weight_bytes() + self.gemm.outputs() * 4
    }

    /// Int8 only: the per-column terms of the epilogue, for the fused row passes.
    pub fn int8_columns(&self) -> Int8Columns<'_> {
        Int8Columns {
            comp: &self.comp,
            bias: &self.bias,
        }
    }

    /// The int8 epilogue over `y` (the u8 GEMM's output for rows quantized with `scales` and
    /// `zero_points`): scales, zero points and bias, added into `acc` where given.
    pub fn int8_epilogue(
        &self,
        y: &mut [f32],
        scales: &[f32],
        zero_points: &[f32],
        acc: Option<&mut [f32]>,
    ) -> Result<(), EngineError> {
        scale_rows(
            y,
            self.outputs(),
            scales,
            zero_points,
            &self.comp,
            &self.bias,
            acc,
        )
    }

    /// `y (rows × n) [+]= x (rows × k) · Wᵀ + b` for f32 rows `x`, whatever the precision
    /// computes in; `[+]=` where the epilogue accumulates, GELU where it asks.
    pub fn forward(
        &self,
        ctx: &mut Ctx,
        x: &[f32],
        y: &mut [f32],
        scratch: &mut LinearScratch,
    ) -> Result<(), EngineError> {
        let k = self.inputs;
        let rows = x.len() / k.max(1);
        if rows * k != x.len() || y.len() != rows * self.outputs() {
            return Err(EngineError::Internal(format!(
                "a {} × {k} projection given {} inputs and {} outputs",
                self.outputs(),
                x.len(),
                y.len()
            )));
        }
        match self.precision {
            Precision::F32 | Precision::F16 => ctx.gemm(&self.gemm, rows, x, y),
            Precision::Bf16 => {
                let xb = sized(&mut scratch.x_bf16, x.len());
                ctx.convert_bf16(x, xb)?;
                ctx.gemm(&self.gemm, rows, xb, y)
            }
            Precision::Int8 => {
                let q = sized(&mut scratch.quantized, x.len());
                let scales = sized(&mut scratch.scales, rows);
                let zps = sized(&mut scratch.zero_points, rows);
                quantize_rows(x, k, q, scales, zps)?;
                if self.epilogue.accumulate {
                    let tmp = sized(&mut scratch.tmp, y.len());
                    ctx.gemm(&self.gemm, rows, q, tmp)?;
                    self.int8_epilogue(tmp, scales, zps, Some(y))
                } else {
                    ctx.gemm(&self.gemm, rows, q, y)?;
                    self.int8_epilogue(y, scales, zps, None)?;
                    if self.epilogue.gelu {
                        ctx.gelu(y)?;
                    }
                    Ok(())
                }
            }
        }
    }
}

/// The largest int8 weight magnitude this CPU's int8 kernels sum without overflow: 127 with
/// VNNI, 63 without (see [`int8_has_vnni`]).
pub fn int8_weight_limit() -> i8 {
    if int8_has_vnni() {
        127
    } else {
        63
    }
}

/// Clipping ratios of a row's largest magnitude tried for its int8 scale (1.0 first: plain
/// max-abs). 7-bit weights (AVX2 without VNNI) have half the levels of 8-bit ones, and a row's
/// few largest values then cost every other value precision: a slightly clipped range often
/// has the smaller total error.
const CLIP_RATIOS: [f32; 8] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65];

/// Symmetric per-row int8: row r of (n × k) `w` as `q[r, :] · scale[r]`, with |q| ≤ `max`, the
/// scale chosen among [`CLIP_RATIOS`] of the row's largest magnitude for the least squared
/// error over the row (so never worse than max-abs scaling).
pub fn quantize_weight(w: &[f32], n: usize, k: usize, max: f32) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scales = vec![1f32; n];
    let error = |row: &[f32], scale: f32| -> f32 {
        row.iter()
            .map(|&v| {
                let back = (v / scale).round().clamp(-max, max) * scale;
                (v - back) * (v - back)
            })
            .sum()
    };
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if amax > 0.0 {
            let mut best = (f32::INFINITY, amax / max);
            for ratio in CLIP_RATIOS {
                let scale = amax * ratio / max;
                let err = error(row, scale);
                if err < best.0 {
                    best = (err, scale);
                }
            }
            best.1
        } else {
            1.0
        };
        for (dst, &v) in q[r * k..(r + 1) * k].iter_mut().zip(row) {
            *dst = (v / scale).round().clamp(-max, max) as i8;
        }
        scales[r] = scale;
    }
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_quantization_round_trips_within_half_a_step_inside_the_clipped_range() {
        let w: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let (q, scales) = quantize_weight(&w, 4, 16, 127.0);
        for r in 0..4 {
            for c in 0..16 {
                let v = w[r * 16 + c];
                let back = f32::from(q[r * 16 + c]) * scales[r];
                let limit = 127.0 * scales[r];
                let clipped = v.clamp(-limit, limit);
                assert!(
                    (back - clipped).abs() <= scales[r] / 2.0 + 1e-6,
                    "{v} → {back}"
                );
            }
        }
    }

    #[test]
    fn an_outlier_is_clipped_when_that_lowers_the_rows_error_and_never_raises_it() {
        // 63 small values and one outlier: max-abs scaling leaves the small ones ~2 levels.
        let mut row: Vec<f32> = (0..63).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        row.push(1.0);
        let sq = |q: &[i8], s: f32| -> f32 {
            row.iter()
                .zip(q)
                .map(|(&v, &q)| (v - f32::from(q) * s).powi(2))
                .sum()
        };
        let (q, scales) = quantize_weight(&row, 1, 64, 63.0);
        let plain_scale = 1.0 / 63.0;
        let plain: Vec<i8> = row
            .iter()
            .map(|&v| (v / plain_scale).round().clamp(-63.0, 63.0) as i8)
            .collect();
        assert!(sq(&q, scales[0]) <= sq(&plain, plain_scale));
        assert!(scales[0] <= plain_scale);
    }

    #[cfg(has_onednn)]
    #[test]
    fn every_precision_computes_x_times_w_transposed_plus_bias_from_f32_rows() {
        let w = Tensor::from_vec(
            vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0],
            (2, 3),
            &candle_core::Device::Cpu,
        )
        .expect("w");
        let b = Tensor::from_vec(vec![10.0f32, 20.0], 2, &candle_core::Device::Cpu).expect("b");
        let x = [1.0f32, 1.0, 1.0, 2.0, 0.0, -1.0];
        let exact = [16.0f32, 19.5, 9.0, 18.0];
        for (precision, tolerance) in [
            (Precision::F32, 0.0),
            (Precision::Bf16, 0.0),
            (Precision::Int8, 0.1),
        ] {
            // Families run bf16 here only where the CPU computes it natively (elsewhere they
            // stay on candle); oneDNN 2.6 has no bf16 matmul below AVX-512 at all.
            if precision == Precision::Bf16 && !super::super::native_bf16() {
                continue;
            }
            let linear =
                PackedLinear::new(&w, Some(&b), precision, Epilogue::default()).expect("linear");
            let mut ctx = Ctx::new(1, 3, 1e-12).expect("ctx");
            let mut y = [0f32; 4];
            linear
                .forward(&mut ctx, &x, &mut y, &mut LinearScratch::default())
                .expect("runs");
            for (got, want) in y.iter().zip(exact) {
                assert!((got - want).abs() <= tolerance, "{precision:?}: {y:?}");
            }
            let accumulating = PackedLinear::new(
                &w,
                Some(&b),
                precision,
                Epilogue {
                    accumulate: true,
                    ..Default::default()
                },
            )
            .expect("linear");
            let mut acc = [1f32; 4];
            accumulating
                .forward(&mut ctx, &x, &mut acc, &mut LinearScratch::default())
                .expect("runs");
            for (got, want) in acc.iter().zip(exact) {
                assert!(
                    (got - want - 1.0).abs() <= tolerance,
                    "{precision:?} +=: {acc:?}"
                );
            }
        }
    }
}
