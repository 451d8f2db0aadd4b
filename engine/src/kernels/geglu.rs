//! The gated feed-forward activation of ModernBERT (GeGLU and its relatives): a projection to
//! 2·i values per token, split into (input, gate) halves, becomes act(input) ⊙ gate.

use super::parallel::rows_mut;
use super::vector_math::{erf, exp, multiversion};
use crate::EngineError;

/// The activation applied to the input half (`hidden_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateActivation {
    /// Exact GELU, x·Φ(x) with erf (`gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    Silu,
    Relu,
}

impl GateActivation {
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            Self::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Self::GeluTanh => {
                // tanh(u) = 1 − 2 / (e^{2u} + 1)
                let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
                0.5 * x * (2.0 - 2.0 / (exp(2.0 * u) + 1.0))
            }
            Self::Silu => x / (1.0 + exp(-x)),
            Self::Relu => x.max(0.0),
        }
    }
}

/// `out[r, j] = act(x[r, j]) · x[r, inter + j]` for every row r of `x` (rows × 2·inter) into
/// `out` (rows × inter), f32; rows split over the kernel threads.
pub(crate) fn geglu(
    x: &[f32],
    inter: usize,
    act: GateActivation,
    out: &mut [f32],
) -> Result<(), EngineError> {
    check(x, inter, out.len())?;
    rows_mut(out, inter, &|row, run| {
        geglu_f32(
            &x[row * 2 * inter..(row * inter + run.len()) * 2],
            inter,
            act,
            run,
        );
        Ok(())
    })
}

/// As [`geglu`], writing bf16 bit patterns (round to nearest even): the next GEMM's input in
/// bf16 mode, without a separate conversion pass.
pub(crate) fn geglu_bf16(
    x: &[f32],
    inter: usize,
    act: GateActivation,
    out: &mut [u16],
) -> Result<(), EngineError> {
    check(x, inter, out.len())?;
    rows_mut(out, inter, &|row, run| {
        geglu_b16(
            &x[row * 2 * inter..(row * inter + run.len()) * 2],
            inter,
            act,
            run,
        );
        Ok(())
    })
}

fn check(x: &[f32], inter: usize, outputs: usize) -> Result<(), EngineError> {
    if inter == 0 || !x.len().is_multiple_of(2 * inter) || outputs != x.len() / 2 {
        return Err(EngineError::Internal(format!(
            "GeGLU: {} inputs are not rows of 2 × {inter}, or {outputs} outputs do not match",
            x.len()
        )));
    }
    Ok(())
}

multiversion!(fn geglu_f32(x: &[f32], inter: usize, act: GateActivation, out: &mut [f32]) => geglu_f32_body);
multiversion!(fn geglu_b16(x: &[f32], inter: usize, act: GateActivation, out: &mut [u16]) => geglu_b16_body);

#[inline(always)]
fn geglu_f32_body(x: &[f32], inter: usize, act: GateActivation, out: &mut [f32]) {
    by_activation(x, inter, act, out, |v| v);
}

#[inline(always)]
fn geglu_b16_body(x: &[f32], inter: usize, act: GateActivation, out: &mut [u16]) {
    by_activation(x, inter, act, out, bf16_bits);
}

/// f32 → bf16 bits, round to nearest even (the values are finite).
#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// One loop per activation, so that each inner loop is branch-free and vectorizes.
#[inline(always)]
fn by_activation<T>(
    x: &[f32],
    inter: usize,
    act: GateActivation,
    out: &mut [T],
    store: impl Fn(f32) -> T + Copy,
) {
    #[inline(always)]
    fn rows<T>(
        x: &[f32],
        inter: usize,
        out: &mut [T],
        f: impl Fn(f32) -> f32,
        store: impl Fn(f32) -> T,
    ) {
        for (src, dst) in x.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)) {
            let (input, gate) = src.split_at(inter);
            for ((o, &a), &g) in dst.iter_mut().zip(input).zip(gate) {
                *o = store(f(a) * g);
            }
        }
    }
    match act {
        GateActivation::Gelu => rows(x, inter, out, |v| GateActivation::Gelu.apply(v), store),
        GateActivation::GeluTanh => {
            rows(x, inter, out, |v| GateActivation::GeluTanh.apply(v), store)
        }
        GateActivation::Silu => rows(x, inter, out, |v| GateActivation::Silu.apply(v), store),
        GateActivation::Relu => rows(x, inter, out, |v| GateActivation::Relu.apply(v), store),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf64(x: f64) -> f64 {
        let (mut sum, mut term) = (x, x);
        for n in 1..100 {
            term *= -x * x / f64::from(n);
            sum += term / f64::from(2 * n + 1);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn multiplies_the_activated_input_half_by_the_gate_half() {
        // Two rows of (input, gate) with inter = 2.
        let x = [1.0f32, -2.0, 3.0, 0.5, 0.0, 2.0, 1.0, -1.0];
        let mut out = [0f32; 4];
        geglu(&x, 2, GateActivation::Relu, &mut out).expect("runs");
        assert_eq!(out, [3.0, 0.0, 0.0, -2.0]);
        let gelu = |v: f64| 0.5 * v * (1.0 + erf64(v / 2f64.sqrt()));
        let tanh =
            |v: f64| 0.5 * v * (1.0 + (0.797_884_560_8 * (v + 0.044_715 * v * v * v)).tanh());
        let silu = |v: f64| v / (1.0 + (-v).exp());
        for (act, f) in [
            (GateActivation::Gelu, &gelu as &dyn Fn(f64) -> f64),
            (GateActivation::GeluTanh, &tanh),
            (GateActivation::Silu, &silu),
        ] {
            geglu(&x, 2, act, &mut out).expect("runs");
            let want = [f(1.0) * 3.0, f(-2.0) * 0.5, f(0.0), -f(2.0)];
            for (g, w) in out.iter().zip(want) {
                assert!((f64::from(*g) - w).abs() < 1e-6, "{act:?}: {g} {w}");
            }
        }
        let mut bits = [0u16; 4];
        geglu_bf16(&x, 2, GateActivation::Relu, &mut bits).expect("runs");
        assert_eq!(bits, [0x4040, 0, 0, 0xc000]);
        assert!(geglu(&x[..7], 2, GateActivation::Gelu, &mut out).is_err());
        assert!(geglu(&x, 2, GateActivation::Gelu, &mut out[..3]).is_err());
    }
}
