//! The SwiGLU feed-forward activation: `silu(gate) · up`.
//!
//! The gate and up projections run as one GEMM whose output rows hold `[gate (n) | up (n)]`; this
//! reduces each row to its `n` products, ready for the down projection.

/// `out[r, i] = silu(gate_up[r, i]) · gate_up[r, n + i]`, `silu(g) = g / (1 + e^{-g})`.
pub fn silu_mul(gate_up: &[f32], n: usize, out: &mut [f32]) {
    debug_assert_eq!(gate_up.len(), 2 * out.len());
    for (row, dst) in gate_up.chunks_exact(2 * n).zip(out.chunks_exact_mut(n)) {
        let (gate, up) = row.split_at(n);
        for ((d, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
            *d = g / (1.0 + (-g).exp()) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_silu_of_the_gate_half_by_the_up_half() {
        let gate_up = [0.0f32, 2.0, 3.0, -1.0, 100.0, -100.0, 1.0, 1.0];
        let mut out = [0f32; 4];
        silu_mul(&gate_up, 2, &mut out);
        assert_eq!(out[0], 0.0);
        assert!((out[1] + 2.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
        assert!((out[2] - 100.0).abs() < 1e-4);
        assert!(out[3].abs() < 1e-30);
    }
}
