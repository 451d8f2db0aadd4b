//! The C layer over oneDNN (`csrc/dnnl_gemm.c`) and safe owners of its handles (builds with
//! oneDNN; `super::unavailable` stands in elsewhere).
//!
//! Handles are created once per model and freed on drop. The C side keeps per-shape primitive
//! caches inside them, so a context and the projections used with it must be driven by one
//! thread at a time: a family keeps them all behind one mutex.
//!
//! The C functions trust their arguments: buffer lengths, row boundaries, element types. Every
//! safe wrapper here checks what its C function assumes and returns an error instead; the one
//! `unsafe fn` ([`Gemm::create`]) states its contract.

use std::ffi::{c_char, c_int, CStr};
use std::ptr::NonNull;

use super::int8_rows::{Int8Columns, RowQuant};
use super::AttentionKernel;
use crate::EngineError;

#[repr(C)]
struct RawGemm {
    _opaque: [u8; 0],
}

#[repr(C)]
struct RawCtx {
    _opaque: [u8; 0],
}

extern "C" {
    fn rr_gemm_create(
        kind: c_int,
        k: i64,
        n: i64,
        weights: *const std::ffi::c_void,
        bias: *const f32,
        scales: *const f32,
        flags: c_int,
    ) -> *mut RawGemm;
    fn rr_gemm_impl(g: *const RawGemm) -> *const c_char;
    fn rr_gemm_free(g: *mut RawGemm);
    fn rr_gemm_run(
        c: *mut RawCtx,
        g: *mut RawGemm,
        m: i64,
        x: *const std::ffi::c_void,
        y: *mut std::ffi::c_void,
    ) -> c_int;
    fn rr_ctx_create(heads: i64, d: i64, eps: f32) -> *mut RawCtx;
    fn rr_ctx_free(c: *mut RawCtx);
    fn rr_ctx_use_bf16_attention(c: *mut RawCtx, on: c_int) -> c_int;
    fn rr_ctx_set_attention(c: *mut RawCtx, kind: c_int) -> c_int;
    fn rr_attention(
        c: *mut RawCtx,
        qkv: *const f32,
        nseq: i64,
        offsets: *const i64,
        ctx: *mut f32,
    ) -> c_int;
    fn rr_layer_norm(
        c: *mut RawCtx,
        x: *mut f32,
        m: i64,
        gamma: *const f32,
        beta: *const f32,
    ) -> c_int;
    fn rr_to_bf16(c: *mut RawCtx, x: *const f32, y: *mut u16, len: i64) -> c_int;
    fn rr_gelu(c: *mut RawCtx, x: *mut f32, len: i64) -> c_int;
    fn rr_int8_has_vnni() -> c_int;
    fn rr_quantize_rows(
        x: *const f32,
        m: i64,
        n: i64,
        q: *mut u8,
        scale: *mut f32,
        zero_point: *mut f32,
    );
    fn rr_attention_int8(
        c: *mut RawCtx,
        qkv: *mut f32,
        nseq: i64,
        offsets: *const i64,
        in_scale: *const f32,
        in_zero_point: *const f32,
        comp: *const f32,
        bias: *const f32,
        ctx: *mut f32,
        q: *mut u8,
        out_scale: *mut f32,
        out_zero_point: *mut f32,
    ) -> c_int;
    fn rr_gelu_quantize_rows(
        y: *mut f32,
        m: i64,
        n: i64,
        scale: *mut f32,
        zero_point: *mut f32,
        comp: *const f32,
        bias: *const f32,
        q: *mut u8,
    );
    fn rr_norm_quantize_rows(
        c: *mut RawCtx,
        t: *const f32,
        x: *mut f32,
        m: i64,
        scale: *mut f32,
        zero_point: *mut f32,
        comp: *const f32,
        bias: *const f32,
        gamma: *const f32,
        beta: *const f32,
        q: *mut u8,
    ) -> c_int;
    fn rr_scale_rows(
        y: *mut f32,
        m: i64,
        n: i64,
        scale: *const f32,
        zero_point: *const f32,
        comp: *const f32,
        bias: *const f32,
        acc: *mut f32,
    );
}

fn failed(what: &str) -> EngineError {
    EngineError::Internal(format!("oneDNN {what} failed"))
}

fn check(rc: c_int, what: &str) -> Result<(), EngineError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(failed(what))
    }
}

/// The element type of a projection's input and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKind {
    F32 = 0,
    Bf16 = 1,
    /// Unsigned int8 inputs (per-row zero point) × signed int8 weights, with one f32 scale per
    /// output column applied to the int32 sums.
    U8 = 2,
}

/// What a projection does after the matrix product.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue {
    /// Add the result to what the output buffer holds (a residual connection).
    pub accumulate: bool,
    /// Apply exact (erf) GELU.
    pub gelu: bool,
    /// Write bf16 instead of f32.
    pub bf16_output: bool,
}

impl Epilogue {
    fn flags(self) -> c_int {
        c_int::from(self.gelu)
            | (c_int::from(self.accumulate) << 1)
            | (c_int::from(self.bf16_output) << 2)
    }
}

/// One weight matrix in oneDNN's preferred layout, with its epilogue compiled in.
pub struct Gemm {
    raw: NonNull<RawGemm>,
    k: usize,
    n: usize,
    kind: GemmKind,
    /// Bytes of one output element: 2 with `bf16_output`, else 4.
    output_bytes: usize,
}

// SAFETY: the handle owns its memory; callers serialize use through their family's mutex.
unsafe impl Send for Gemm {}

impl Gemm {
    /// `weight` is (n × k) row-major in `kind`'s element type (`u16` bits for bf16, `i8` for
    /// int8); `bias` (n) optional; `scales` (n) only for int8.
    ///
    /// # Safety
    /// `weight` must point at `n × k` readable elements of `kind`'s type (the C side copies
    /// them). The lengths of `bias` and `scales` are checked here.
    unsafe fn create(
        kind: GemmKind,
        n: usize,
        k: usize,
        weight: *const std::ffi::c_void,
        bias: Option<&[f32]>,
        scales: Option<&[f32]>,
        epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        // The C side reads n values of each and refuses empty or negative shapes.
        for values in [bias, scales].into_iter().flatten() {
            expect_len(values.len(), n)?;
        }
        if n == 0 || k == 0 {
            return Err(EngineError::Internal(format!("a {n} × {k} matmul")));
        }
        let raw = rr_gemm_create(
            kind as c_int,
            k as i64,
            n as i64,
            weight,
            bias.map_or(std::ptr::null(), |b| b.as_ptr()),
            scales.map_or(std::ptr::null(), |s| s.as_ptr()),
            epilogue.flags(),
        );
        NonNull::new(raw)
            .map(|raw| Self {
                raw,
                k,
                n,
                kind,
                output_bytes: if epilogue.bf16_output { 2 } else { 4 },
            })
            .ok_or_else(|| failed("matmul creation"))
    }

    /// An f32 projection.
    pub fn f32(
        weight: &[f32],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        Self::float(GemmKind::F32, weight, n, k, bias, epilogue)
    }

    /// A bf16 projection (`weight` holds bf16 bit patterns).
    pub fn bf16(
        weight: &[u16],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        Self::float(GemmKind::Bf16, weight, n, k, bias, epilogue)
    }

    /// A float projection of `kind`, whose element `T` the public constructors pair with it.
    fn float<T: Element>(
        kind: GemmKind,
        weight: &[T],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
    ) -> Result<Self, EngineError> {
        expect_len(weight.len(), product(n, k)?)?;
        // SAFETY: length checked above; `T` is `kind`'s element type (f32 / bf16 bits).
        unsafe { Self::create(kind, n, k, weight.as_ptr().cast(), bias, None, epilogue) }
    }

    /// An int8 projection (u8 inputs × s8 `weight`) with per-output-column `scales`; zero
    /// points, bias and residual are applied by the caller (see [`scale_rows`]).
    pub fn int8(weight: &[i8], n: usize, k: usize, scales: &[f32]) -> Result<Self, EngineError> {
        expect_len(weight.len(), product(n, k)?)?;
        expect_len(scales.len(), n)?;
        // SAFETY: lengths checked above.
        unsafe {
            Self::create(
                GemmKind::U8,
                n,
                k,
                weight.as_ptr().cast(),
                None,
                Some(scales),
                Epilogue::default(),
            )
        }
    }

    /// The oneDNN implementation in use, e.g. `brg:avx512_core_bf16`.
    pub fn implementation(&self) -> String {
        // SAFETY: the string lives in the handle and is NUL-terminated.
        unsafe { CStr::from_ptr(rr_gemm_impl(self.raw.as_ptr())) }
            .to_string_lossy()
            .into_owned()
    }

    /// Output columns (n).
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Bytes of one input element.
    fn input_bytes(&self) -> usize {
        match self.kind {
            GemmKind::F32 => 4,
            GemmKind::Bf16 => 2,
            GemmKind::U8 => 1,
        }
    }

    /// Bytes of the weights as stored (oneDNN's blocked layout may pad a little more).
    pub fn weight_bytes(&self) -> usize {
        let element = self.input_bytes();
        // int8 also keeps a scale and a zero-point compensation per output column.
        self.k * self.n * element
            + if self.kind == GemmKind::U8 {
                self.n * 8
            } else {
                0
            }
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        // SAFETY: created by rr_gemm_create, freed once.
        unsafe { rr_gemm_free(self.raw.as_ptr()) }
    }
}

/// `a × b`, or an error where it overflows (shapes come from a model's files).
fn product(a: usize, b: usize) -> Result<usize, EngineError> {
    a.checked_mul(b)
        .ok_or_else(|| EngineError::Internal(format!("a buffer of {a} × {b} values overflows")))
}

fn expect_len(got: usize, want: usize) -> Result<(), EngineError> {
    if got == want {
        Ok(())
    } else {
        Err(EngineError::Internal(format!(
            "buffer of {got} values where {want} are needed"
        )))
    }
}

/// A model's execution context: streams and the attention/element-wise primitive caches.
pub struct Ctx {
    raw: NonNull<RawCtx>,
    heads: usize,
    head_dim: usize,
}

// SAFETY: see `Gemm`.
unsafe impl Send for Ctx {}

impl Ctx {
    /// A context for `heads` attention heads of `head_dim` values each (both at least 1).
    pub fn new(heads: usize, head_dim: usize, eps: f32) -> Result<Self, EngineError> {
        if heads == 0 || head_dim == 0 || product(heads, head_dim)? > i64::MAX as usize {
            return Err(EngineError::InvalidModel(format!(
                "{heads} attention heads of {head_dim} values"
            )));
        }
        // SAFETY: plain values.
        let raw = unsafe { rr_ctx_create(heads as i64, head_dim as i64, eps) };
        NonNull::new(raw)
            .map(|raw| Self {
                raw,
                heads,
                head_dim,
            })
            .ok_or_else(|| failed("engine creation"))
    }

    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Runs [`Ctx::attention`] with bf16 products (Q, K, V and the probabilities rounded to
    /// bf16, f32 accumulation and softmax) where the head size is a multiple of 32: on AMX tiles
    /// where the CPU has AMX, else with AVX512-BF16 dot products; returns whether it will. For
    /// the reduced-precision modes only: there f32 attention would be a sixth (AVX512-BF16) to a
    /// third (AMX) of a forward pass whose GEMMs run in bf16 or int8.
    pub fn use_bf16_attention(&mut self) -> bool {
        // SAFETY: the context is exclusively borrowed.
        unsafe { rr_ctx_use_bf16_attention(self.raw.as_ptr(), 1) != 0 }
    }

    /// The kernel [`Ctx::attention`] runs on: our AVX-512 one by default where the CPU has
    /// AVX-512 and the head size is a multiple of 16, oneDNN's primitives elsewhere, a bf16 one
    /// after [`Ctx::use_bf16_attention`].
    pub fn attention_kernel(&mut self) -> AttentionKernel {
        // SAFETY: the context is exclusively borrowed; −1 asks without changing.
        AttentionKernel::from_code(unsafe { rr_ctx_set_attention(self.raw.as_ptr(), -1) })
    }

    /// Switches attention to `kernel` where this CPU and head size run it (the tests compare
    /// kernels); returns the one now in use.
    #[cfg(test)]
    pub fn set_attention_kernel(&mut self, kernel: AttentionKernel) -> AttentionKernel {
        // SAFETY: the context is exclusively borrowed.
        AttentionKernel::from_code(unsafe {
            rr_ctx_set_attention(self.raw.as_ptr(), kernel.code())
        })
    }

    /// `y (m × n) [+]= x (m × k) · Wᵀ`: `x` and `y` in the element types `gemm` was built for.
    pub fn gemm<X: Element, Y: Element>(
        &mut self,
        gemm: &Gemm,
        m: usize,
        x: &[X],
        y: &mut [Y],
    ) -> Result<(), EngineError> {
        expect_len(x.len(), product(m, gemm.k)?)?;
        expect_len(y.len(), product(m, gemm.n)?)?;
        // The C side reads and writes by the handle's element types: the slices must match them.
        if size_of::<X>() != gemm.input_bytes() || size_of::<Y>() != gemm.output_bytes {
            return Err(EngineError::Internal(format!(
                "{:?} matmul given {}-byte inputs and {}-byte outputs",
                gemm.kind,
                size_of::<X>(),
                size_of::<Y>()
            )));
        }
        // SAFETY: buffer sizes and element sizes checked; the handle and context are exclusively
        // borrowed.
        check(
            unsafe {
                rr_gemm_run(
                    self.raw.as_ptr(),
                    gemm.raw.as_ptr(),
                    m as i64,
                    x.as_ptr().cast(),
                    y.as_mut_ptr().cast(),
                )
            },
            "matmul",
        )
    }

    /// Attention over packed sequences (`offsets`: m + 1 row boundaries, from 0, non-decreasing;
    /// the last is the row count of `qkv` (rows × 3·hidden) and `ctx` (rows × hidden)).
    pub fn attention(
        &mut self,
        qkv: &[f32],
        offsets: &[i64],
        ctx: &mut [f32],
    ) -> Result<(), EngineError> {
        check_offsets(offsets)?;
        // `check_offsets` makes the last offset non-negative.
        let rows = usize::try_from(offsets[offsets.len() - 1])
            .map_err(|_| EngineError::Internal("negative row count".into()))?;
        expect_len(qkv.len(), product(rows, product(3, self.hidden())?)?)?;
        expect_len(ctx.len(), product(rows, self.hidden())?)?;
        // SAFETY: the C side reads rows offsets[i]..offsets[i + 1] of qkv and writes those of
        // ctx for each sequence i: the offsets were checked to start at 0 and never decrease,
        // so every range lies within the `rows` rows both buffers were checked to hold.
        check(
            unsafe {
                rr_attention(
                    self.raw.as_ptr(),
                    qkv.as_ptr(),
                    offsets.len() as i64 - 1,
                    offsets.as_ptr(),
                    ctx.as_mut_ptr(),
                )
            },
            "attention",
        )
    }

    /// The end of an int8 residual sublayer in one pass per row: `x += epilogue(t)` (the int8
    /// GEMM output `t` of rows quantized with `quant`'s scales and zero points, see
    /// [`scale_rows`]), LayerNorm of `x` with `gamma`/`beta`, then, when `q` is given, `x`
    /// requantized into `q` with `quant` replaced by its scales and zero points.
    pub fn int8_residual_norm(
        &mut self,
        t: &[f32],
        x: &mut [f32],
        quant: RowQuant<'_>,
        columns: Int8Columns<'_>,
        norm: (&[f32], &[f32]),
        q: Option<&mut [u8]>,
    ) -> Result<(), EngineError> {
        let n = self.hidden();
        let m = quant.scales.len();
        expect_len(x.len(), product(m, n)?)?;
        expect_len(t.len(), x.len())?;
        expect_len(quant.zero_points.len(), m)?;
        check_columns(&columns, n)?;
        expect_len(norm.0.len(), n)?;
        expect_len(norm.1.len(), n)?;
        let q_ptr = match q {
            Some(q) => {
                expect_len(q.len(), x.len())?;
                q.as_mut_ptr()
            }
            None => std::ptr::null_mut(),
        };
        // SAFETY: sizes checked; the context is exclusively borrowed.
        check(
            unsafe {
                rr_norm_quantize_rows(
                    self.raw.as_ptr(),
                    t.as_ptr(),
                    x.as_mut_ptr(),
                    m as i64,
                    quant.scales.as_mut_ptr(),
                    quant.zero_points.as_mut_ptr(),
                    columns.comp.as_ptr(),
                    columns.bias.as_ptr(),
                    norm.0.as_ptr(),
                    norm.1.as_ptr(),
                    q_ptr,
                )
            },
            "int8 residual LayerNorm",
        )
    }

    /// The int8 path's attention: `qkv` is the QKV int8 GEMM's raw output for rows quantized
    /// with `quant`, `columns` its epilogue terms; the context goes to `ctx` and, requantized,
    /// to `q`, `quant` replaced by its rows' parameters. On AMX the epilogue is applied as Q, K
    /// and V are rounded to bf16 and each sequence's context is quantized when it is done; `qkv`
    /// is then left as it was, elsewhere it holds the epilogue's output.
    pub fn int8_attention(
        &mut self,
        qkv: &mut [f32],
        offsets: &[i64],
        quant: RowQuant<'_>,
        columns: Int8Columns<'_>,
        ctx: &mut [f32],
        q: &mut [u8],
    ) -> Result<(), EngineError> {
        check_offsets(offsets)?;
        let rows = usize::try_from(offsets[offsets.len() - 1])
            .map_err(|_| EngineError::Internal("negative row count".into()))?;
        let h = self.hidden();
        expect_len(qkv.len(), product(rows, product(3, h)?)?)?;
        expect_len(ctx.len(), product(rows, h)?)?;
        expect_len(q.len(), ctx.len())?;
        expect_len(quant.scales.len(), rows)?;
        expect_len(quant.zero_points.len(), rows)?;
        check_columns(&columns, 3 * h)?;
        let (scales, zero_points) = (quant.scales.as_mut_ptr(), quant.zero_points.as_mut_ptr());
        // SAFETY: as for `attention`, every sequence's rows lie within the checked buffers; the
        // C side reads a row's input scale before it writes that row's output scale.
        check(
            unsafe {
                rr_attention_int8(
                    self.raw.as_ptr(),
                    qkv.as_mut_ptr(),
                    offsets.len() as i64 - 1,
                    offsets.as_ptr(),
                    scales,
                    zero_points,
                    columns.comp.as_ptr(),
                    columns.bias.as_ptr(),
                    ctx.as_mut_ptr(),
                    q.as_mut_ptr(),
                    scales,
                    zero_points,
                )
            },
            "int8 attention",
        )
    }

    /// In-place LayerNorm of the rows of `x`.
    pub fn layer_norm(
        &mut self,
        x: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
    ) -> Result<(), EngineError> {
        let h = self.hidden();
        expect_len(gamma.len(), h)?;
        expect_len(beta.len(), h)?;
        // The C side normalises whole rows only: a partial last row would be read past.
        if !x.len().is_multiple_of(h) {
            return Err(EngineError::Internal(format!(
                "layer norm of {} values, not whole rows of {h}",
                x.len()
            )));
        }
        // SAFETY: gamma/beta sizes checked, x holds whole rows (h > 0: see `Ctx::new`).
        check(
            unsafe {
                rr_layer_norm(
                    self.raw.as_ptr(),
                    x.as_mut_ptr(),
                    (x.len() / h) as i64,
                    gamma.as_ptr(),
                    beta.as_ptr(),
                )
            },
            "layer norm",
        )
    }

    /// f32 → bf16 bits.
    pub fn convert_bf16(&mut self, x: &[f32], y: &mut [u16]) -> Result<(), EngineError> {
        expect_len(y.len(), x.len())?;
        // SAFETY: equal lengths checked.
        check(
            unsafe {
                rr_to_bf16(
                    self.raw.as_ptr(),
                    x.as_ptr(),
                    y.as_mut_ptr(),
                    x.len() as i64,
                )
            },
            "bf16 conversion",
        )
    }

    /// In-place exact GELU.
    pub fn gelu(&mut self, x: &mut [f32]) -> Result<(), EngineError> {
        // SAFETY: the slice bounds the length.
        check(
            unsafe { rr_gelu(self.raw.as_ptr(), x.as_mut_ptr(), x.len() as i64) },
            "gelu",
        )
    }
}

/// Checks the row boundaries [`Ctx::attention`] passes to C: at least one, starting at 0, never
/// decreasing (the C side takes `offsets[i + 1] - offsets[i]` as a length and
/// `offsets[i]` as a row index without checking either).
fn check_offsets(offsets: &[i64]) -> Result<(), EngineError> {
    match offsets.first() {
        Some(0) => {}
        first => {
            return Err(EngineError::Internal(format!(
                "attention offsets must start at 0, not {first:?}"
            )))
        }
    }
    if let Some(pair) = offsets.windows(2).find(|pair| pair[1] < pair[0]) {
        return Err(EngineError::Internal(format!(
            "attention offsets decrease ({} after {})",
            pair[1], pair[0]
        )));
    }
    Ok(())
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: created by rr_ctx_create, freed once.
        unsafe { rr_ctx_free(self.raw.as_ptr()) }
    }
}

/// Element types a GEMM reads or writes.
pub trait Element: Copy {}
impl Element for f32 {}
impl Element for u16 {}
impl Element for u8 {}

/// Whether oneDNN's int8 GEMMs on this CPU use VNNI. Without VNNI (e.g. AVX2-only CPUs) they
/// sum pairs of u8×s8 products in saturating int16, so weights must stay within ±63.
pub fn int8_has_vnni() -> bool {
    // SAFETY: no arguments; reads oneDNN's CPU dispatch state.
    unsafe { rr_int8_has_vnni() != 0 }
}

/// Per-row asymmetric u8 quantization of `x` (rows of `n`): `x ≈ scale · (q − zero_point)`.
pub fn quantize_rows(
    x: &[f32],
    n: usize,
    q: &mut [u8],
    scales: &mut [f32],
    zero_points: &mut [f32],
) -> Result<(), EngineError> {
    let m = x.len() / n.max(1);
    expect_len(x.len(), product(m, n)?)?;
    expect_len(q.len(), x.len())?;
    expect_len(scales.len(), m)?;
    expect_len(zero_points.len(), m)?;
    // SAFETY: sizes checked.
    unsafe {
        rr_quantize_rows(
            x.as_ptr(),
            m as i64,
            n as i64,
            q.as_mut_ptr(),
            scales.as_mut_ptr(),
            zero_points.as_mut_ptr(),
        )
    };
    Ok(())
}

/// Whether an int8 projection's epilogue terms cover its `n` output columns.
fn check_columns(columns: &Int8Columns<'_>, n: usize) -> Result<(), EngineError> {
    expect_len(columns.comp.len(), n)?;
    expect_len(columns.bias.len(), n)
}

/// The int8 FFN-in end in one pass per row: the epilogue of `y` (see [`scale_rows`]), exact
/// GELU (A&S 7.1.28 erf, |error| ≤ 3e-7), and u8 requantization into `q`, `quant` replaced by
/// the new rows' parameters; `y` keeps the GELU output.
pub fn int8_gelu_requantize(
    y: &mut [f32],
    n: usize,
    quant: RowQuant<'_>,
    columns: Int8Columns<'_>,
    q: &mut [u8],
) -> Result<(), EngineError> {
    let m = quant.scales.len();
    expect_len(y.len(), product(m, n)?)?;
    expect_len(q.len(), y.len())?;
    expect_len(quant.zero_points.len(), m)?;
    check_columns(&columns, n)?;
    // SAFETY: sizes checked.
    unsafe {
        rr_gelu_quantize_rows(
            y.as_mut_ptr(),
            m as i64,
            n as i64,
            quant.scales.as_mut_ptr(),
            quant.zero_points.as_mut_ptr(),
            columns.comp.as_ptr(),
            columns.bias.as_ptr(),
            q.as_mut_ptr(),
        )
    };
    Ok(())
}

/// The int8 epilogue: `(y − zero_point[r]·comp[c])·scale[r] + bias[c]`, in place, or added into
/// `acc` when given (`comp[c]` = weight scale × the column's weight sum).
pub fn scale_rows(
    y: &mut [f32],
    n: usize,
    scales: &[f32],
    zero_points: &[f32],
    comp: &[f32],
    bias: &[f32],
    acc: Option<&mut [f32]>,
) -> Result<(), EngineError> {
    let m = scales.len();
    expect_len(y.len(), product(m, n)?)?;
    expect_len(zero_points.len(), m)?;
    expect_len(comp.len(), n)?;
    expect_len(bias.len(), n)?;
    let acc_ptr = match acc {
        Some(a) => {
            expect_len(a.len(), product(m, n)?)?;
            a.as_mut_ptr()
        }
        None => std::ptr::null_mut(),
    };
    // SAFETY: sizes checked.
    unsafe {
        rr_scale_rows(
            y.as_mut_ptr(),
            m as i64,
            n as i64,
            scales.as_ptr(),
            zero_points.as_ptr(),
            comp.as_ptr(),
            bias.as_ptr(),
            acc_ptr,
        )
    };
    Ok(())
}

extern "C" {
    fn rr_parallel_for(
        n: i64,
        f: extern "C" fn(*mut std::ffi::c_void, i64, i64),
        ctx: *mut std::ffi::c_void,
    );
    fn rr_max_threads() -> c_int;
}

/// A loop body and whether any call of it panicked (a panic must not unwind into C).
struct RangeJob<'a> {
    f: &'a (dyn Fn(usize, usize) + Sync),
    panicked: std::sync::atomic::AtomicBool,
}

extern "C" fn run_range(job: *mut std::ffi::c_void, begin: i64, end: i64) {
    // SAFETY: `job` is the `RangeJob` that `parallel_for` passed, alive for the whole parallel
    // region; the C side calls this only inside it, with 0 ≤ begin < end ≤ n.
    let job = unsafe { &*(job as *const RangeJob) };
    let call = std::panic::AssertUnwindSafe(|| (job.f)(begin as usize, end as usize));
    if std::panic::catch_unwind(call).is_err() {
        job.panicked
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Calls `f(begin, end)` on contiguous runs covering `0..n`, one per thread of oneDNN's OpenMP
/// pool; an error if any call panicked.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize, usize) + Sync)) -> Result<(), EngineError> {
    if n == 0 {
        return Ok(());
    }
    let job = RangeJob {
        f,
        panicked: std::sync::atomic::AtomicBool::new(false),
    };
    let n = i64::try_from(n).map_err(|_| EngineError::Internal(format!("a loop of {n} items")))?;
    // SAFETY: the C side calls `run_range` with `&job` only during this call.
    unsafe {
        rr_parallel_for(
            n,
            run_range,
            &job as *const RangeJob as *mut std::ffi::c_void,
        )
    };
    if job.panicked.into_inner() {
        Err(EngineError::Internal("a parallel kernel panicked".into()))
    } else {
        Ok(())
    }
}

/// Threads [`parallel_for`] splits a loop over.
pub fn parallel_threads() -> usize {
    // SAFETY: no arguments; reads OpenMP's setting.
    usize::try_from(unsafe { rr_max_threads() }).map_or(1, |t| t.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_err<T>(r: Result<T, EngineError>) -> bool {
        r.is_err()
    }

    /// Deterministic values in about [-amp, amp] (a fixed LCG: the tests need no RNG crate).
    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The bf16 attention kernels (AMX tiles, AVX512-BF16 dot products: bf16 Q, K, V and
    /// probabilities) agree with the f32 path to bf16's rounding, for lengths that are and are
    /// not multiples of their 16-row and 32-key blocks, odd ones (a key pair half padding), and
    /// head sizes 32 and 64. A wrong pair layout or a padded key given weight is off by O(1).
    #[test]
    fn bf16_attention_matches_f32_attention_to_bf16_rounding() {
        for kernel in [AttentionKernel::Amx, AttentionKernel::Avx512Bf16] {
            for (heads, dim) in [(3, 32), (2, 64)] {
                let hidden = heads * dim;
                let offsets = [0i64, 1, 6, 22, 55, 182, 382];
                let rows = 382;
                let qkv = values(rows * 3 * hidden, dim as u64, 2.0);
                let mut exact = vec![0f32; rows * hidden];
                let mut reference = Ctx::new(heads, dim, 1e-12).expect("context");
                reference.set_attention_kernel(AttentionKernel::OneDnn);
                reference
                    .attention(&qkv, &offsets, &mut exact)
                    .expect("f32 attention");
                let mut bf16 = Ctx::new(heads, dim, 1e-12).expect("context");
                if bf16.set_attention_kernel(kernel) != kernel {
                    eprintln!("{kernel:?} attention does not run on this CPU: not exercised");
                    break;
                }
                let mut got = vec![f32::NAN; rows * hidden];
                bf16.attention(&qkv, &offsets, &mut got)
                    .expect("bf16 attention");
                let diff = max_abs_diff(&exact, &got);
                assert!(
                    diff < 3e-2,
                    "{kernel:?}, {heads} heads of {dim}: max |Δ| {diff}"
                );
            }
        }
    }

    /// A reduced-precision mode's context picks a bf16 kernel where the CPU has one (AMX first),
    /// and f32 attention where the head size does not suit it.
    #[test]
    fn bf16_attention_is_chosen_where_it_runs() {
        let mut ctx = Ctx::new(2, 32, 1e-12).expect("context");
        let f32_kernel = ctx.attention_kernel();
        assert_ne!(f32_kernel, AttentionKernel::Amx);
        assert_ne!(f32_kernel, AttentionKernel::Avx512Bf16);
        if ctx.use_bf16_attention() {
            assert!(matches!(
                ctx.attention_kernel(),
                AttentionKernel::Amx | AttentionKernel::Avx512Bf16
            ));
        } else {
            assert_eq!(ctx.attention_kernel(), f32_kernel);
        }
        let mut odd = Ctx::new(2, 48, 1e-12).expect("context");
        assert!(!odd.use_bf16_attention());
    }

    /// The int8 attention with its epilogue and requantization fused (our kernels) gives what the
    /// separate passes give (epilogue, f32 attention, quantization), to bf16's rounding.
    #[test]
    fn fused_int8_attention_matches_the_separate_passes() {
        let (heads, dim) = (3, 32);
        let hidden = heads * dim;
        let offsets = [0i64, 7, 40, 167];
        let rows = 167;
        let raw = values(rows * 3 * hidden, 11, 200.0);
        let comp = values(3 * hidden, 12, 0.3);
        let bias = values(3 * hidden, 13, 0.5);
        let columns = Int8Columns {
            comp: &comp,
            bias: &bias,
        };
        let scales: Vec<f32> = values(rows, 14, 0.01)
            .iter()
            .map(|v| v.abs() + 0.005)
            .collect();
        let zps: Vec<f32> = values(rows, 15, 60.0)
            .iter()
            .map(|v| v.abs().round())
            .collect();
        let run = |kernel: AttentionKernel| {
            let mut ctx = Ctx::new(heads, dim, 1e-12).expect("context");
            if ctx.set_attention_kernel(kernel) != kernel {
                return None;
            }
            let (mut qkv, mut s, mut z) = (raw.clone(), scales.clone(), zps.clone());
            let (mut out, mut q) = (vec![0f32; rows * hidden], vec![0u8; rows * hidden]);
            let quant = RowQuant {
                scales: &mut s,
                zero_points: &mut z,
            };
            ctx.int8_attention(&mut qkv, &offsets, quant, columns, &mut out, &mut q)
                .expect("int8 attention");
            Some((out, q, s))
        };
        let (exact, q_exact, s_exact) = run(AttentionKernel::OneDnn).expect("separate passes");
        // AVX-512 is f32 throughout; the bf16 kernels round Q, K, V and P to bf16.
        for (kernel, tolerance, codes) in [
            (AttentionKernel::Avx512, 1e-4, 1),
            (AttentionKernel::Avx2, 1e-4, 1),
            (AttentionKernel::Amx, 3e-2, 3),
            (AttentionKernel::Avx512Bf16, 3e-2, 3),
        ] {
            let Some((fused, q_fused, s_fused)) = run(kernel) else {
                eprintln!("{kernel:?} attention does not run on this CPU: not exercised");
                continue;
            };
            let diff = max_abs_diff(&exact, &fused);
            assert!(diff < tolerance, "{kernel:?}: context max |Δ| {diff}");
            for (a, b) in s_exact.iter().zip(&s_fused) {
                assert!(
                    (a - b).abs() <= 0.01 * a.abs(),
                    "{kernel:?}: row scales {a} vs {b}"
                );
            }
            assert!(q_exact
                .iter()
                .zip(&q_fused)
                .all(|(a, b)| a.abs_diff(*b) <= codes));
        }
    }

    /// Our f32 attention kernels (AVX-512, AVX2) compute what oneDNN's f32 primitives compute,
    /// to f32 rounding, for head sizes of one to four vectors and sequences shorter and longer
    /// than a block.
    #[test]
    fn f32_attention_kernels_match_onednn_attention() {
        for kernel in [AttentionKernel::Avx512, AttentionKernel::Avx2] {
            for (heads, dim) in [(3, 16), (2, 32), (2, 48), (1, 64)] {
                let hidden = heads * dim;
                let offsets = [0i64, 1, 5, 6, 13, 45, 172, 372];
                let rows = 372;
                let qkv = values(rows * 3 * hidden, dim as u64, 2.0);
                let mut exact = vec![0f32; rows * hidden];
                let mut onednn = Ctx::new(heads, dim, 1e-12).expect("context");
                assert_eq!(
                    onednn.set_attention_kernel(AttentionKernel::OneDnn),
                    AttentionKernel::OneDnn
                );
                onednn
                    .attention(&qkv, &offsets, &mut exact)
                    .expect("oneDNN attention");
                let mut ours = Ctx::new(heads, dim, 1e-12).expect("context");
                if ours.set_attention_kernel(kernel) != kernel {
                    eprintln!("{kernel:?} attention does not run on this CPU: not exercised");
                    break;
                }
                let mut got = vec![f32::NAN; rows * hidden];
                ours.attention(&qkv, &offsets, &mut got)
                    .expect("our attention");
                let diff = max_abs_diff(&exact, &got);
                assert!(
                    diff < 1e-5,
                    "{kernel:?}, {heads} heads of {dim}: max |Δ| {diff}"
                );
            }
        }
    }

    /// The fused int8 row passes give what the separate passes give: epilogue, GELU (oneDNN's
    /// exact erf) and quantization; epilogue into the residual, LayerNorm and quantization.
    #[test]
    fn fused_int8_row_passes_match_the_separate_passes() {
        let (heads, dim, m) = (2, 16, 37);
        let n = heads * dim;
        let comp = values(n, 1, 0.3);
        let bias = values(n, 2, 0.5);
        let columns = Int8Columns {
            comp: &comp,
            bias: &bias,
        };
        let scales_in: Vec<f32> = values(m, 3, 0.01).iter().map(|v| v.abs() + 0.01).collect();
        let zps_in: Vec<f32> = values(m, 4, 60.0).iter().map(|v| v.abs().round()).collect();
        let y = values(m * n, 5, 300.0);
        let mut ctx = Ctx::new(heads, dim, 1e-12).expect("context");

        // Epilogue + GELU + quantize.
        let mut separate = y.clone();
        scale_rows(&mut separate, n, &scales_in, &zps_in, &comp, &bias, None).expect("epilogue");
        ctx.gelu(&mut separate).expect("gelu");
        let (mut q_a, mut s_a, mut z_a) = (vec![0u8; m * n], vec![0f32; m], vec![0f32; m]);
        quantize_rows(&separate, n, &mut q_a, &mut s_a, &mut z_a).expect("quantize");
        let mut fused = y.clone();
        let (mut s_b, mut z_b, mut q_b) = (scales_in.clone(), zps_in.clone(), vec![0u8; m * n]);
        let quant = RowQuant {
            scales: &mut s_b,
            zero_points: &mut z_b,
        };
        int8_gelu_requantize(&mut fused, n, quant, columns, &mut q_b).expect("fused");
        assert!(max_abs_diff(&separate, &fused) < 1e-5);
        assert!(max_abs_diff(&s_a, &s_b) < 1e-6);
        assert!(q_a.iter().zip(&q_b).all(|(a, b)| a.abs_diff(*b) <= 1));

        // Residual + LayerNorm + quantize.
        let gamma = values(n, 6, 1.0);
        let beta = values(n, 7, 0.2);
        let x0 = values(m * n, 8, 3.0);
        let mut separate = x0.clone();
        let mut t = y.clone();
        scale_rows(
            &mut t,
            n,
            &scales_in,
            &zps_in,
            &comp,
            &bias,
            Some(&mut separate),
        )
        .expect("epilogue");
        ctx.layer_norm(&mut separate, &gamma, &beta).expect("norm");
        quantize_rows(&separate, n, &mut q_a, &mut s_a, &mut z_a).expect("quantize");
        let mut fused = x0.clone();
        let (mut s_b, mut z_b) = (scales_in.clone(), zps_in.clone());
        let quant = RowQuant {
            scales: &mut s_b,
            zero_points: &mut z_b,
        };
        ctx.int8_residual_norm(
            &y,
            &mut fused,
            quant,
            columns,
            (&gamma, &beta),
            Some(&mut q_b),
        )
        .expect("fused");
        assert!(max_abs_diff(&separate, &fused) < 1e-5);
        assert!(max_abs_diff(&s_a, &s_b) < 1e-6);
        assert!(q_a.iter().zip(&q_b).all(|(a, b)| a.abs_diff(*b) <= 1));
    }

    /// Offsets the C side would read out of bounds with are refused before the call.
    #[test]
    fn attention_refuses_offsets_the_c_side_cannot_take() {
        let (heads, dim) = (2, 4);
        let hidden = heads * dim;
        let mut ctx = Ctx::new(heads, dim, 1e-12).expect("context");
        let rows = 3;
        let qkv = vec![0.1f32; rows * 3 * hidden];
        let mut out = vec![0f32; rows * hidden];
        assert!(ctx.attention(&qkv, &[0, 1, 3], &mut out).is_ok());
        for offsets in [&[][..], &[1, 3], &[-1, 3], &[0, 2, 1, 3], &[0, 4], &[0, 2]] {
            assert!(
                is_err(ctx.attention(&qkv, offsets, &mut out)),
                "{offsets:?} accepted"
            );
        }
    }

    /// Sizes the C side trusts are checked: heads, whole rows, bias length.
    #[test]
    fn sizes_are_checked_before_the_c_side_sees_them() {
        assert!(is_err(Ctx::new(0, 4, 1e-12)));
        assert!(is_err(Ctx::new(2, 0, 1e-12)));
        let mut ctx = Ctx::new(2, 4, 1e-12).expect("context");
        let (gamma, beta) = (vec![1f32; 8], vec![0f32; 8]);
        let mut partial = vec![1f32; 12];
        assert!(is_err(ctx.layer_norm(&mut partial, &gamma, &beta)));
        let mut whole = vec![1f32; 16];
        assert!(ctx.layer_norm(&mut whole, &gamma, &beta).is_ok());
        let weight = vec![0.5f32; 8 * 4];
        assert!(is_err(Gemm::f32(
            &weight,
            8,
            4,
            Some(&[0.0; 3]),
            Epilogue::default()
        )));
        assert!(is_err(Gemm::f32(&weight, 8, 5, None, Epilogue::default())));
        assert!(is_err(Gemm::f32(&[], 0, 0, None, Epilogue::default())));
        let gemm = Gemm::f32(&weight, 8, 4, Some(&[0.0; 8]), Epilogue::default()).expect("gemm");
        let mut y = vec![0f32; 2 * 8];
        assert!(ctx.gemm(&gemm, 2, &[1f32; 8], &mut y).is_ok());
        assert!(is_err(ctx.gemm(&gemm, 3, &[1f32; 8], &mut y)));
    }

    #[test]
    fn gemm_computes_x_times_w_transposed_plus_bias_and_refuses_wrong_element_types() {
        // W is (n = 2) × (k = 3), PyTorch's layout.
        let w = [1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0];
        let gemm = Gemm::f32(&w, 2, 3, Some(&[10.0, 20.0]), Epilogue::default()).expect("gemm");
        let mut ctx = Ctx::new(1, 3, 1e-12).expect("ctx");
        let x = [1.0f32, 1.0, 1.0, 2.0, 0.0, -1.0];
        let mut y = [0f32; 4];
        ctx.gemm(&gemm, 2, &x, &mut y).expect("runs");
        assert_eq!(y, [16.0, 19.5, 9.0, 18.0]);
        let narrow = [0u16; 6];
        assert!(ctx.gemm(&gemm, 2, &narrow, &mut y).is_err());
        assert!(
            ctx.gemm(&gemm, 3, &x, &mut y).is_err(),
            "rows beyond the buffer"
        );
    }

    #[test]
    fn int8_gemm_sums_full_range_products_without_saturating() {
        // The worst case for the u8 × s8 kernels: every activation 255, every weight at the
        // largest magnitude this CPU's kernels are given. A saturating int16 pair sum (AVX2
        // without VNNI at 127) would come out far below the exact total.
        let max = crate::kernels::int8_weight_limit();
        let (n, k) = (2usize, 64usize);
        let weights: Vec<i8> = (0..n * k).map(|i| if i < k { max } else { -max }).collect();
        let gemm = Gemm::int8(&weights, n, k, &[1.0, 1.0]).expect("gemm");
        let mut ctx = Ctx::new(1, k, 1e-12).expect("ctx");
        let x = vec![255u8; k];
        let mut y = [0f32; 2];
        ctx.gemm(&gemm, 1, &x, &mut y).expect("runs");
        let exact = 255.0 * f32::from(max) * k as f32;
        assert_eq!(y, [exact, -exact]);
    }
}
