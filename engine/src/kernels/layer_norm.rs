//! LayerNorm over rows, out of place, with an optional bias: pre-norm layers (ModernBERT) keep the
//! residual stream beside its normalized copy, and ModernBERT's norms usually have no bias.

use super::parallel::rows_mut;
use super::vector_math::{multiversion, sum};
use crate::EngineError;

/// `out[r] = (x[r] − mean) / sqrt(var + eps) · gamma (+ beta)` for every row of `x` (rows ×
/// gamma.len()), in f32: the mean first, then the variance of the centred values, as PyTorch
/// computes them. Rows are split over the kernel threads.
pub(crate) fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) -> Result<(), EngineError> {
    let n = gamma.len();
    if n == 0
        || !x.len().is_multiple_of(n)
        || out.len() != x.len()
        || beta.is_some_and(|b| b.len() != n)
    {
        return Err(EngineError::Internal(format!(
            "LayerNorm of width {n}: {} inputs, {} outputs",
            x.len(),
            out.len()
        )));
    }
    rows_mut(out, n, &|row, run| {
        norm_rows(&x[row * n..row * n + run.len()], gamma, beta, eps, run);
        Ok(())
    })
}

multiversion!(fn norm_rows(x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) => norm_rows_body);

#[inline(always)]
fn norm_rows_body(x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = gamma.len();
    for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = sum(src) / n as f32;
        // The squared deviations go through `dst` first, so that their sum vectorizes too.
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (v - mean) * (v - mean);
        }
        let inv = 1.0 / (sum(dst) / n as f32 + eps).sqrt();
        match beta {
            Some(beta) => {
                for (((o, &v), &g), &b) in dst.iter_mut().zip(src).zip(gamma).zip(beta) {
                    *o = (v - mean) * inv * g + b;
                }
            }
            None => {
                for ((o, &v), &g) in dst.iter_mut().zip(src).zip(gamma) {
                    *o = (v - mean) * inv * g;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_row_with_and_without_beta() {
        let x = [1.0f32, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0];
        let gamma = [1.0f32, 2.0, 1.0, 1.0];
        let mut out = [0f32; 8];
        layer_norm(&x, &gamma, None, 0.0, &mut out).expect("runs");
        let s = 1.25f32.sqrt();
        let want = [-1.5 / s, -0.5 / s * 2.0, 0.5 / s, 1.5 / s];
        for (g, w) in out[..4].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} {w}");
        }
        layer_norm(&x, &gamma, Some(&[1.0; 4]), 1e-5, &mut out).expect("runs");
        assert_eq!(&out[4..], &[1.0; 4]);
        assert!(layer_norm(&x, &gamma, None, 0.0, &mut out[..4]).is_err());
        assert!(layer_norm(&x, &gamma, Some(&[0.0; 3]), 0.0, &mut out).is_err());
    }
}
