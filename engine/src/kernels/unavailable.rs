//! Stand-ins for the oneDNN kernels in builds without oneDNN: the same names, and constructors
//! that say the kernels are unavailable, so families compile unchanged and fall back to candle.
//! No value of [`Gemm`] or [`Ctx`] can exist here, so their methods are unreachable by type.

use super::int8_rows::{Int8Columns, RowQuant};
use super::AttentionKernel;
use crate::EngineError;

fn unavailable() -> EngineError {
    EngineError::Internal("this build has no oneDNN kernels".into())
}

/// Element types a GEMM reads or writes.
pub trait Element: Copy {}
impl Element for f32 {}
impl Element for u16 {}
impl Element for u8 {}

/// What a projection does after the matrix product (see the oneDNN build).
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue {
    pub accumulate: bool,
    pub gelu: bool,
    pub bf16_output: bool,
}

/// No GEMM can be built without oneDNN.
pub enum Gemm {}

impl Gemm {
    pub fn f32(
        _weight: &[f32],
        _n: usize,
        _k: usize,
        _bias: Option<&[f32]>,
        _epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        Err(unavailable())
    }

    pub fn bf16(
        _weight: &[u16],
        _n: usize,
        _k: usize,
        _bias: Option<&[f32]>,
        _epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        Err(unavailable())
    }

    pub fn int8(
        _weight: &[i8],
        _n: usize,
        _k: usize,
        _scales: &[f32],
    ) -> Result<Self, EngineError> {
        Err(unavailable())
    }

    pub fn implementation(&self) -> String {
        match *self {}
    }

    pub fn outputs(&self) -> usize {
        match *self {}
    }

    pub fn weight_bytes(&self) -> usize {
        match *self {}
    }
}

/// No context can be built without oneDNN.
pub enum Ctx {}

impl Ctx {
    pub fn new(_heads: usize, _head_dim: usize, _eps: f32) -> Result<Self, EngineError> {
        Err(unavailable())
    }

    pub fn gemm<X: Element, Y: Element>(
        &mut self,
        _gemm: &Gemm,
        _m: usize,
        _x: &[X],
        _y: &mut [Y],
    ) -> Result<(), EngineError> {
        match *self {}
    }

    pub fn use_bf16_attention(&mut self) -> bool {
        false
    }

    pub fn attention_kernel(&mut self) -> AttentionKernel {
        match *self {}
    }

    pub fn attention(
        &mut self,
        _qkv: &[f32],
        _offsets: &[i64],
        _ctx: &mut [f32],
    ) -> Result<(), EngineError> {
        match *self {}
    }

    pub fn layer_norm(
        &mut self,
        _x: &mut [f32],
        _gamma: &[f32],
        _beta: &[f32],
    ) -> Result<(), EngineError> {
        match *self {}
    }

    pub fn convert_bf16(&mut self, _x: &[f32], _y: &mut [u16]) -> Result<(), EngineError> {
        match *self {}
    }

    pub fn gelu(&mut self, _x: &mut [f32]) -> Result<(), EngineError> {
        match *self {}
    }

    pub fn int8_attention(
        &mut self,
        _qkv: &mut [f32],
        _offsets: &[i64],
        _quant: RowQuant<'_>,
        _columns: Int8Columns<'_>,
        _ctx: &mut [f32],
        _q: &mut [u8],
    ) -> Result<(), EngineError> {
        match *self {}
    }

    pub fn int8_residual_norm(
        &mut self,
        _t: &[f32],
        _x: &mut [f32],
        _quant: RowQuant<'_>,
        _columns: Int8Columns<'_>,
        _norm: (&[f32], &[f32]),
        _q: Option<&mut [u8]>,
    ) -> Result<(), EngineError> {
        match *self {}
    }
}

/// Without oneDNN there are no int8 GEMMs to ask.
pub fn int8_has_vnni() -> bool {
    false
}

pub fn quantize_rows(
    _x: &[f32],
    _n: usize,
    _q: &mut [u8],
    _scales: &mut [f32],
    _zero_points: &mut [f32],
) -> Result<(), EngineError> {
    Err(unavailable())
}

pub fn int8_gelu_requantize(
    _y: &mut [f32],
    _n: usize,
    _quant: RowQuant<'_>,
    _columns: Int8Columns<'_>,
    _q: &mut [u8],
) -> Result<(), EngineError> {
    Err(unavailable())
}

pub fn scale_rows(
    _y: &mut [f32],
    _n: usize,
    _scales: &[f32],
    _zero_points: &[f32],
    _comp: &[f32],
    _bias: &[f32],
    _acc: Option<&mut [f32]>,
) -> Result<(), EngineError> {
    Err(unavailable())
}

/// Calls `f(begin, end)` on contiguous runs covering `0..n`, one per available core, on scoped
/// threads (there is no OpenMP pool in this build); an error if any call panicked.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize, usize) + Sync)) -> Result<(), EngineError> {
    let threads = parallel_threads().min(n);
    if threads <= 1 {
        if n > 0 {
            f(0, n);
        }
        return Ok(());
    }
    let panicked = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| s.spawn(move || f(n * t / threads, n * (t + 1) / threads)))
            .collect();
        f(0, n / threads);
        handles.into_iter().any(|h| h.join().is_err())
    });
    if panicked {
        Err(EngineError::Internal("a parallel kernel panicked".into()))
    } else {
        Ok(())
    }
}

/// Threads [`parallel_for`] splits a loop over.
pub fn parallel_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
