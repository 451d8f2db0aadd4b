//! The machine's own GEMM limit: a short, large matrix product on the same kernels and threads
//! the packed layers use, so that a benchmark can print every model figure beside what this CPU
//! reaches on the easiest possible problem (one big square GEMM, weights packed once).
//!
//! The f32 rate is the ceiling for f32 scoring (a transformer is ~95% GEMM FLOPs); the int8
//! rate is the same for the int8 path (u8 inputs × s8 weights, int32 sums), on the weights'
//! range that this CPU's int8 kernels sum without overflow.

use std::time::Instant;

use super::{int8_weight_limit, quantize_weight, Ctx, Epilogue, Gemm};
use crate::modes::Precision;
use crate::EngineError;

/// One timed product of the probe, writing into the output it is given.
type Product<'a> = dyn FnMut(&mut Ctx, &mut [f32]) -> Result<(), EngineError> + 'a;

/// One probe's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmRate {
    /// Multiply-adds counted as 2 operations each, per second, in units of 10⁹, of the fastest
    /// product.
    pub gflops: f64,
    /// The square size measured (m = n = k).
    pub size: usize,
    /// Products timed.
    pub runs: usize,
}

/// Times `y = x · Wᵀ` with m = n = k = `size` in `precision` (f32 or int8) for at least
/// `seconds` after one untimed product, and returns the rate of the fastest product.
pub fn measure(precision: Precision, size: usize, seconds: f64) -> Result<GemmRate, EngineError> {
    if size == 0 {
        return Err(EngineError::Internal("a 0 × 0 GEMM probe".into()));
    }
    let values = size * size;
    // Deterministic, varied values: the rate must not depend on a lucky zero pattern.
    let weights: Vec<f32> = (0..values)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5)
        .collect();
    let mut ctx = Ctx::new(1, size, 1e-12)?;
    let mut y = vec![0f32; values];
    // The fastest product counts: a limit is what the machine reaches, and a neighbour's burst
    // or a clock still ramping up only ever slows single products down.
    let mut timed = |run: &mut Product| {
        run(&mut ctx, &mut y)?;
        let start = Instant::now();
        let (mut runs, mut fastest) = (0usize, f64::INFINITY);
        while runs < 2 || start.elapsed().as_secs_f64() < seconds {
            let product = Instant::now();
            run(&mut ctx, &mut y)?;
            fastest = fastest.min(product.elapsed().as_secs_f64());
            runs += 1;
        }
        Ok::<_, EngineError>(GemmRate {
            gflops: 2.0 * (values * size) as f64 / fastest.max(1e-9) / 1e9,
            size,
            runs,
        })
    };
    match precision {
        Precision::Int8 => {
            let max = f32::from(int8_weight_limit());
            let (q, scales) = quantize_weight(&weights, size, size, max);
            let gemm = Gemm::int8(&q, size, size, &scales)?;
            let x: Vec<u8> = (0..values).map(|i| (i * 31 % 251) as u8).collect();
            timed(&mut |ctx, y| ctx.gemm(&gemm, size, &x, y))
        }
        Precision::F32 => {
            let gemm = Gemm::f32(&weights, size, size, None, Epilogue::default())?;
            let x: Vec<f32> = weights.iter().rev().copied().collect();
            timed(&mut |ctx, y| ctx.gemm(&gemm, size, &x, y))
        }
        other => Err(EngineError::Internal(format!(
            "no GEMM probe for {other:?}: f32 and int8 only"
        ))),
    }
}

#[cfg(all(test, has_onednn))]
mod tests {
    use super::*;

    #[test]
    fn the_probe_counts_two_operations_per_multiply_add_and_runs_at_least_twice() {
        for precision in [Precision::F32, Precision::Int8] {
            let rate = measure(precision, 64, 0.0).expect("probe");
            assert!(
                rate.runs >= 2 && rate.gflops > 0.0,
                "{precision:?}: {rate:?}"
            );
        }
        assert!(measure(Precision::Bf16, 64, 0.0).is_err());
        assert!(measure(Precision::F32, 0, 0.0).is_err());
    }
}
