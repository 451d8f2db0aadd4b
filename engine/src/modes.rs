//! The modes a model runs in: its precision and the kernels that run its layers.
//!
//! A leaf module (it imports nothing of the crate) so that the precision code, the kernels layer
//! and every family can name these without importing each other.

use candle_core::{DType, Device};

/// The precision a model runs in (what `QUANTIZATION` asked for, after fallbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    Bf16,
    F16,
    Int8,
}

impl Precision {
    /// The `QUANTIZATION` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "none",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    /// What `/health.model.dtype` reports: the projections' arithmetic on `kernels` and `device`.
    pub fn dtype_name(self, kernels: Kernels, device: &Device) -> &'static str {
        match (self, kernels) {
            (Self::F32, _) => "float32",
            (Self::Bf16, _) if device.is_cuda() => "bfloat16 (cuBLAS, float32 accumulation)",
            (Self::F16, _) if device.is_cuda() => "float16 (cuBLAS, float32 accumulation)",
            (Self::Bf16, Kernels::OneDnn) => "bfloat16 (float32 accumulation)",
            (Self::Int8, Kernels::OneDnn) => {
                "int8 (per-channel weights, per-token dynamic u8 activations, int32 accumulation)"
            }
            (Self::Bf16, Kernels::Candle) => "bfloat16 weights, float32 compute",
            (Self::F16, _) => "float16 weights, float32 compute",
            (Self::Int8, Kernels::Candle) => "int8 weights (Q8_0), float32 compute",
        }
    }

    /// The candle dtype a float mode stores weights in; `None` for int8.
    pub fn float_dtype(self) -> Option<DType> {
        match self {
            Self::F32 => Some(DType::F32),
            Self::Bf16 => Some(DType::BF16),
            Self::F16 => Some(DType::F16),
            Self::Int8 => None,
        }
    }
}

/// Which implementation runs the transformer layers on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Candle tensors over padded batches: every device, every precision.
    Candle,
    /// The packed path (in builds with oneDNN): sequences concatenated without padding, oneDNN
    /// GEMMs for the projections. CPU only, f32/bf16/int8; anything else falls back to
    /// [`Kernels::Candle`].
    OneDnn,
}

impl Kernels {
    /// The kernels these (`CPU_KERNELS`) become on `device`: oneDNN only on the CPU. The packed
    /// pass reads and writes host memory, so on a GPU it would copy every activation across
    /// PCIe and run the layers on the CPU; every other device runs candle's kernels.
    pub fn on_device(self, device: &Device) -> Self {
        if self == Self::OneDnn && !device.is_cpu() {
            tracing::info!("oneDNN kernels are CPU-only; candle kernels on this device");
            Self::Candle
        } else {
            self
        }
    }
}
