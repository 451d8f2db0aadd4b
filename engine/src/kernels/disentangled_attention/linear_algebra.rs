//! The op's small dense pieces: strided views, the per-head matmul on the `gemm` crate, and a
//! vectorisable softmax.

/// `buffer` resized to `len` (contents unspecified), without shrinking its allocation.
pub(super) fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

/// A matrix operand inside a slice: element (r, c) is `data[origin + r·row_stride + c·col_stride]`
/// (strides may be negative).
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    data: &'a [f32],
    origin: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Strided<'a> {
    pub(super) fn new(
        data: &'a [f32],
        origin: usize,
        row_stride: isize,
        col_stride: isize,
    ) -> Self {
        Self {
            data,
            origin,
            row_stride,
            col_stride,
        }
    }

    /// The same matrix from row `first` on.
    pub(super) fn rows_from(self, first: usize) -> Self {
        Self {
            origin: (self.origin as isize + first as isize * self.row_stride) as usize,
            ..self
        }
    }

    /// Whether every element of a (rows × cols) view lies inside `data`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let corner = |n: usize, stride: isize| (n as isize - 1) * stride;
        let (r, c) = (corner(rows, self.row_stride), corner(cols, self.col_stride));
        let low = self.origin as isize + r.min(0) + c.min(0);
        let high = self.origin as isize + r.max(0) + c.max(0);
        low >= 0 && high < self.data.len() as isize
    }
}

/// `dst (m × n, row-major) = alpha · lhs (m × k) · rhs (k × n)`.
pub(super) fn matmul(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: Strided,
    rhs: Strided,
    alpha: f32,
) {
    // A failed check is a bug in this file (the callers' sizes follow from `check`), not bad
    // input; it must never reach the unchecked product.
    assert!(
        dst.len() >= m * n && lhs.covers(m, k) && rhs.covers(k, n),
        "disentangled attention: matmul operand out of bounds"
    );
    // SAFETY: every element the product reads lies inside `lhs.data` / `rhs.data` and every one
    // it writes inside `dst` (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr().add(lhs.origin),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr().add(rhs.origin),
            rhs.col_stride,
            rhs.row_stride,
            0.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// In-place softmax of one row, in f32.
pub(super) fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    // Eight running sums: one would serialise every add (and keep the loop scalar).
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `e^x` for x ≤ 0 to about 1 ulp (Cephes' `expf` polynomial), branch-free so that the softmax
/// loop vectorises: libm's `expf` is a call per element, which kept the loop scalar and was a
/// quarter of this op's time. Below −87 it returns e^−87 (≈ 1.6e−38), which only ever meets
/// an f32 sum ≥ 1.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from its exponent bits: n is in −126..=0, a normal number.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}
