//! RMSNorm (T5 / Llama / Qwen style: no mean subtraction, no bias) over the rows of a matrix.
//!
//! `y = x / sqrt(mean(x²) + eps) * weight`, in f32 as transformers' `Qwen3RMSNorm` computes it
//! (normalize first, then scale by the weight). Qwen3 applies it to the residual stream (rows of
//! `hidden` values) and, per attention head, to queries and keys (rows of `head_dim` values).

/// Writes RMSNorm of each `width`-long row of `x` into `out` (same shape).
pub fn rms_norm_rows(x: &[f32], out: &mut [f32], width: usize, weight: &[f32], eps: f32) {
    debug_assert_eq!(weight.len(), width);
    debug_assert_eq!(x.len(), out.len());
    for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let inv = inv_rms(row, eps);
        for ((d, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *d = w * (v * inv);
        }
    }
}

/// RMSNorm of each `width`-long row of `x`, in place.
pub fn rms_norm_rows_in_place(x: &mut [f32], width: usize, weight: &[f32], eps: f32) {
    debug_assert_eq!(weight.len(), width);
    for row in x.chunks_exact_mut(width) {
        let inv = inv_rms(row, eps);
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = w * (*v * inv);
        }
    }
}

/// `1 / sqrt(mean(row²) + eps)`, summed in eight lanes (vectorizes; the rounding differs from a
/// sequential sum by a few ulps, as PyTorch's own vectorized reduction does).
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for &v in rest {
        sum += v * v;
    }
    1.0 / (sum / row.len() as f32 + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_row_to_unit_rms_then_scales() {
        let x = [3.0f32, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let w = [1.0f32, 2.0, 1.0, 1.0];
        let mut y = [0f32; 8];
        rms_norm_rows(&x, &mut y, 4, &w, 0.0);
        // Row 0: mean square 25/4, rms 2.5.
        assert_eq!(&y[..4], &[1.2, 3.2, 0.0, 0.0]);
        assert_eq!(&y[4..], &[1.0, 2.0, 1.0, 1.0]);
        let mut z = x;
        rms_norm_rows_in_place(&mut z, 4, &w, 0.0);
        assert_eq!(y, z);
    }

    #[test]
    fn eps_keeps_a_zero_row_finite() {
        let mut x = [0f32; 16];
        rms_norm_rows_in_place(&mut x, 16, &[1.0; 16], 1e-6);
        assert!(x.iter().all(|v| *v == 0.0));
    }
}
