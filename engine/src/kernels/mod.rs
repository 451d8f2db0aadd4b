//! The kernels layer: what the packed forward passes of every family call.
//!
//! Families never name oneDNN or test for it: they build [`PackedLinear`] projections and a
//! [`Ctx`], and call the ops here. In builds with oneDNN (`has_onednn`, see `build.rs`) these
//! run oneDNN's GEMMs (AVX-512 f32, AVX512-BF16, VNNI int8, AMX where the CPU has it; AVX2
//! `gemm:jit` below AVX-512) through the C layer in `csrc/dnnl_gemm.c`; elsewhere every
//! constructor fails with "unavailable", and a family falls back to its candle layers.
//!
//! Ops that are not GEMMs and that only some families need (RoPE, RMSNorm, windowed or causal
//! attention, …) live in files of their own here, in plain Rust.

#[cfg(has_onednn)]
mod onednn;
#[cfg(has_onednn)]
use onednn as backend;
#[cfg(not(has_onednn))]
mod unavailable;
#[cfg(not(has_onednn))]
use unavailable as backend;

pub(crate) mod disentangled_attention;
mod int8_rows;
mod packed_linear;

pub(crate) mod causal_attention;
pub(crate) mod geglu;
pub mod gemm_probe;
pub(crate) mod layer_norm;
pub(crate) mod parallel;
pub(crate) mod rms_norm;
pub(crate) mod rope;
pub(crate) mod swiglu;
pub(crate) mod vector_math;
pub(crate) mod windowed_attention;

// Families on the packed path use these; not every build has one yet.
#[allow(unused_imports)]
pub use backend::{
    int8_gelu_requantize, int8_has_vnni, quantize_rows, scale_rows, Ctx, Element, Epilogue, Gemm,
};
pub use int8_rows::{Int8Columns, RowQuant};
#[allow(unused_imports)]
pub use packed_linear::{int8_weight_limit, quantize_weight, LinearScratch, PackedLinear};

/// The kernel a [`Ctx`]'s attention runs on (`csrc/dnnl_gemm.c`'s `RR_ATTN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(has_onednn), allow(dead_code))]
pub enum AttentionKernel {
    /// oneDNN's f32 primitives per sequence (Q·Kᵀ, softmax, P·V): CPUs without AVX2, or head
    /// sizes that are not multiples of 16.
    OneDnn,
    /// Our f32 AVX-512 kernel (`csrc/avx512_attention.c`).
    Avx512,
    /// Our AMX bf16 kernel (`csrc/amx_attention.c`), for the reduced-precision modes.
    Amx,
    /// Our AVX512-BF16 kernel (`csrc/avx512_attention.c`), for the reduced-precision modes on
    /// CPUs without AMX.
    Avx512Bf16,
    /// Our f32 AVX2 kernel (`csrc/avx2_attention.c`): CPUs without AVX-512.
    Avx2,
}

#[cfg_attr(not(has_onednn), allow(dead_code))]
impl AttentionKernel {
    #[cfg(test)]
    fn code(self) -> std::ffi::c_int {
        match self {
            Self::OneDnn => 0,
            Self::Avx512 => 1,
            Self::Amx => 2,
            Self::Avx512Bf16 => 3,
            Self::Avx2 => 4,
        }
    }

    fn from_code(code: std::ffi::c_int) -> Self {
        match code {
            1 => Self::Avx512,
            2 => Self::Amx,
            3 => Self::Avx512Bf16,
            4 => Self::Avx2,
            _ => Self::OneDnn,
        }
    }

    /// How `/info`'s implementation names it (empty for oneDNN, whose GEMM kernel is named).
    pub fn describe(self) -> &'static str {
        match self {
            Self::OneDnn => "",
            Self::Avx512 => ", AVX-512 attention",
            Self::Amx => ", AMX bf16 attention",
            Self::Avx512Bf16 => ", AVX512-BF16 attention",
            Self::Avx2 => ", AVX2 attention",
        }
    }
}

/// Whether this build has the packed kernels (oneDNN was found at build time).
pub fn available() -> bool {
    cfg!(has_onednn)
}

/// Whether this build and CPU compute bf16 natively (oneDNN kernels on a CPU with AVX512-BF16 or
/// AMX-BF16): where bf16 gains speed rather than only losing accuracy.
pub fn native_bf16() -> bool {
    #[cfg(all(has_onednn, target_arch = "x86_64"))]
    {
        // Every AMX-BF16 CPU has AVX512-BF16 too (AMX detection is not stable Rust yet).
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(all(has_onednn, target_arch = "x86_64")))]
    {
        false
    }
}

/// `buffer` resized to `len` (contents unspecified), without shrinking its allocation: scratch
/// buffers kept between forward passes spare the page faults of fresh multi-megabyte
/// allocations (measured: ~2–3% of an int8 forward pass).
pub fn sized<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    buffer.resize(len, T::default());
    &mut buffer[..len]
}
