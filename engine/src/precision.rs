//! Reduced precision on the candle path: which dtype the encoder's projections are stored in.
//!
//! (On oneDNN kernels — `engine::onednn`, the default CPU path where built — bf16 and int8 are
//! compute precisions; this module then only supplies [`Precision`] and the int8 word
//! embeddings.)
//!
//! Here only the linear projections (QKV, attention output, feed-forward — most of the weights)
//! are stored in reduced precision: bf16, f16, or int8 (Q8_0: blocks of 32 values with one
//! scale). They are widened to f32 for each forward pass and everything else — activations,
//! residual stream, LayerNorm, softmax, GELU — stays f32 (weight-only quantization). candle's
//! bf16/f16 and Q8_0 CPU GEMMs are slower than its f32 GEMM, and rounding the activations as
//! well swapped near-tied rankings; so on this path the modes buy weight memory at near-f32
//! accuracy, not speed. In int8 mode the word embeddings — half of a MiniLM's weights — are
//! Q8_0 too, dequantized row by row at lookup (on both paths); the float modes keep embeddings
//! in f32.
//!
//! On a CUDA device (builds with the `cuda` feature) bf16 and f16 are compute precisions
//! instead: the projections' GEMMs run in bf16/f16 on cuBLAS with f32 accumulation (candle's
//! default; tensor cores), their inputs rounded to bf16/f16 and their outputs widened back to
//! f32, the way the oneDNN path runs bf16 on the CPU; the rest stays f32 as above. int8 stays
//! weight-only there too: Q8_0 blocks dequantized by candle's CUDA kernel into an f32 cuBLAS
//! GEMM. (candle's Q8_0 matmul kernels would quantize the activations as well, which this module
//! avoids for ranking accuracy.) [`on_device`] says which mode a device runs.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

pub use super::modes::Precision;
use super::EngineError;

/// Q8_0 quantizes blocks of this many inner-dimension values.
pub const Q8_BLOCK: usize = 32;

/// A linear projection in the model's precision. Input and output are f32.
#[derive(Debug, Clone)]
pub enum Projection {
    /// Weights in f32, bf16 or f16; the matmul in f32, or in the weights' dtype on CUDA.
    Float { linear: Linear, dtype: DType },
    /// Q8_0 weights, dequantized per forward pass into an f32 GEMM (weight-only int8: the
    /// activations are not quantized, which keeps near-tied rankings intact).
    Int8 {
        weight: Arc<QTensor>,
        bias: Option<Tensor>,
    },
}

impl Projection {
    /// Builds a projection from f32 `weight` (out × in) and `bias`.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        match precision.float_dtype() {
            Some(dtype) => {
                let weight = weight.to_dtype(dtype)?;
                let bias = bias.map(|b| b.to_dtype(dtype)).transpose()?;
                Ok(Self::Float {
                    linear: Linear::new(weight, bias),
                    dtype,
                })
            }
            None => {
                let q = QTensor::quantize(&weight, GgmlDType::Q8_0)?;
                Ok(Self::Int8 {
                    weight: Arc::new(q),
                    bias,
                })
            }
        }
    }

    /// Bytes of the weights as stored.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Float { linear, dtype } => {
                let n = linear.weight().elem_count() + linear.bias().map_or(0, |b| b.elem_count());
                n * dtype.size_in_bytes()
            }
            Self::Int8 { weight, bias } => {
                weight.storage_size_in_bytes() + bias.as_ref().map_or(0, |b| b.elem_count() * 4)
            }
        }
    }
}

impl Module for Projection {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Float { linear, dtype } if *dtype == DType::F32 => linear.forward(xs),
            // On CUDA, cuBLAS runs bf16/f16 natively (f32 accumulation): round the input, keep
            // the f32 residual stream around it.
            Self::Float { linear, dtype } if xs.device().is_cuda() => {
                linear.forward(&xs.to_dtype(*dtype)?)?.to_dtype(DType::F32)
            }
            // Weight-only: bf16/f16 storage, f32 arithmetic (candle's CPU bf16/f16 GEMMs are
            // slower than f32, and rounding activations too costs ranking accuracy).
            Self::Float { linear, .. } => {
                let weight = linear.weight().to_dtype(DType::F32)?;
                let bias = linear.bias().map(|b| b.to_dtype(DType::F32)).transpose()?;
                Linear::new(weight, bias).forward(xs)
            }
            Self::Int8 { weight, bias } => {
                let weight = weight.dequantize(xs.device())?;
                Linear::new(weight, bias.clone()).forward(xs)
            }
        }
    }
}

/// Whether every projection of a model with these sizes can run in `precision` (Q8_0 needs
/// inner dimensions that are multiples of [`Q8_BLOCK`]).
pub fn supports(precision: Precision, inner_dims: &[usize]) -> bool {
    precision != Precision::Int8 || inner_dims.iter().all(|d| d % Q8_BLOCK == 0)
}

/// The mode `precision` runs in on `device`, with a warning where that differs. candle 0.11 runs
/// every mode on the CPU and on CUDA (f16/bf16 through cuBLAS; Q8_0 quantization, dequantization
/// and row lookup have CUDA kernels), except bf16 on GPUs below compute capability 8.0: cuBLAS
/// has no bf16 GEMM there and candle's kernels are built without bf16 for them, so those get
/// f16, the nearest mode (half the weight memory too), and `/health` reports f16.
pub fn on_device(precision: Precision, device: &Device) -> Precision {
    match (precision, cuda_compute_capability(device)) {
        (Precision::Bf16, Some((major, minor))) if major < 8 => {
            tracing::warn!(
                requested = precision.name(),
                compute_capability = %format!("{major}.{minor}"),
                "bf16 needs a GPU of compute capability 8.0 or newer; running f16"
            );
            Precision::F16
        }
        _ => precision,
    }
}

/// The (major, minor) compute capability of a CUDA `device`; `None` for other devices, and where
/// the driver cannot say (then nothing is ruled out: candle fails loudly on a missing kernel).
#[cfg(feature = "cuda")]
fn cuda_compute_capability(device: &Device) -> Option<(i32, i32)> {
    let Device::Cuda(cuda) = device else {
        return None;
    };
    match cuda.cuda_stream().context().compute_capability() {
        Ok(cap) => Some(cap),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the GPU's compute capability");
            None
        }
    }
}

/// Without the `cuda` feature there is no CUDA device (candle refuses to create one).
#[cfg(not(feature = "cuda"))]
fn cuda_compute_capability(_device: &Device) -> Option<(i32, i32)> {
    None
}

/// The word-embedding table: f32, or Q8_0 rows in int8 mode.
#[derive(Debug, Clone)]
pub enum WordEmbeddings {
    Float(candle_nn::Embedding),
    Int8(QMatMul),
}

impl WordEmbeddings {
    /// Builds the table from f32 `table` (vocab × hidden).
    pub fn new(table: Tensor, precision: Precision) -> Result<Self, EngineError> {
        if precision == Precision::Int8 {
            let q = QTensor::quantize(&table, GgmlDType::Q8_0)?;
            Ok(Self::Int8(QMatMul::from_qtensor(q)?))
        } else {
            let hidden = table.dim(1)?;
            Ok(Self::Float(candle_nn::Embedding::new(table, hidden)))
        }
    }

    /// (…, hidden) f32 rows for `ids`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, EngineError> {
        Ok(match self {
            Self::Float(e) => e.forward(ids)?,
            Self::Int8(q) => q.embedding(ids)?.to_dtype(DType::F32)?,
        })
    }

    /// Bytes as stored.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Float(e) => e.embeddings().elem_count() * 4,
            Self::Int8(QMatMul::QTensor(t)) => t.storage_size_in_bytes(),
            Self::Int8(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
        }
    }
}
