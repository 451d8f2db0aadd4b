//! Vectorizable f32 math for the pure-Rust kernels: a branch-free `exp` and `erf` (libm's
//! `expf`/`erff` are one call per element, visible in profiles of softmax and GELU), lane-wise
//! sums and maxima, and [`multiversion!`], which compiles a hot loop for the widest vector
//! extension the CPU has. The crate is built for baseline x86-64, so plain Rust loops only
//! vectorize wide when inlined under `#[target_feature]`.

/// e^x in f32 with relative error below 3e-7; 0 (a denormal-free tiny value) below −87.3, clamped
/// at 88.3. Cody–Waite range reduction to r in [−ln2/2, ln2/2], then a degree-6 polynomial.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5·2²³ trick: `f32::round` is a libm call that blocks
    // vectorization; |x·log2 e| < 2²² after the clamp, where the trick is exact.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k! (k ≤ 6): on |r| ≤ 0.347 the truncation error is below 1e-7.
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n from its exponent bits; n is in [−126, 127] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127).max(0) as u32) << 23);
    p * scale
}

/// erf(x) in f32 with absolute error below 5e-7: Abramowitz & Stegun 7.1.26, the form PyTorch's
/// vectorized CPU `erf` uses.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Sum with 16 independent lanes, so the loop vectorizes (one f32 accumulator is a serial
/// dependency the compiler may not reorder).
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Maximum with 16 independent lanes (NaN-free inputs); −∞ for an empty slice.
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// The widest vector extension this CPU offers to [`multiversion!`] functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimdLevel {
    Avx512,
    Avx2,
    Baseline,
}

/// Detected per call (std caches the CPUID results).
#[inline]
pub(crate) fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
            return SimdLevel::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

/// `multiversion!(fn name(args) => body_fn);` defines `name`, which runs `body_fn` (an
/// `#[inline(always)]` function with the same arguments) compiled for AVX-512, AVX2+FMA or the
/// build's baseline, whichever this CPU has.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi2")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::kernels::vector_math::simd_level() {
                    // SAFETY: the CPU has every feature these copies are compiled for.
                    $crate::kernels::vector_math::SimdLevel::Avx512 => {
                        return unsafe { avx512($($arg),*) }
                    }
                    $crate::kernels::vector_math::SimdLevel::Avx2 => {
                        return unsafe { avx2($($arg),*) }
                    }
                    $crate::kernels::vector_math::SimdLevel::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_3e7_relative_over_the_whole_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(exp(x)) - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "{worst}");
        assert!(exp(-200.0) < 1e-37);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn erf_is_within_5e7_of_its_series() {
        fn erf64(x: f64) -> f64 {
            let (mut sum, mut term) = (x, x);
            for n in 1..200 {
                term *= -x * x / f64::from(n);
                sum += term / f64::from(2 * n + 1);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        }
        let mut worst = 0f64;
        let mut x = -4.0f32;
        while x < 4.0 {
            worst = worst.max((f64::from(erf(x)) - erf64(f64::from(x))).abs());
            x += 0.0031;
        }
        assert!(worst < 5e-7, "{worst}");
    }

    #[test]
    fn lane_wise_sum_and_max_cover_the_remainder() {
        let xs: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(sum(&xs), 666.0);
        assert_eq!(max(&xs), 36.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
