//! DeBERTa's disentangled self-attention over packed sequences, in pure Rust on the `gemm` crate.
//!
//! For each sequence and head, with `q`, `k`, `v` the head's rows and `PK`, `PQ` the projected
//! relative-position embeddings (one row per relative-position bucket):
//!
//! `score[i][j] = (q_i·k_j + q_i·PK[idx(i−j)] + k_j·PQ[idx(i−j)]) / √(d · scale_factor)`
//!
//! (`PK` and `PQ` come already divided by the square root: they are constant per layer, so the
//! model scales them once at load.)
//!
//! where `idx(r) = clamp(bucket(r) + span, 0, 2·span − 1)` (the c2p and p2c terms; either may be
//! absent), then a softmax over `j` and the weighted sum of `v`. This is transformers'
//! `DisentangledSelfAttention` without its padding: positions restart at 0 in every sequence and
//! no key is masked, so a packed batch needs no mask at all.
//!
//! Why our own op rather than oneDNN's: the relative terms are gathers (`idx(i−j)`), which no
//! oneDNN primitive fuses with a matmul. Why cheaper than transformers' eager code: transformers
//! multiplies every query by all `2·span` position rows (512 for DeBERTa-v3) and gathers from
//! that; a sequence of `L` tokens only reaches the `idx(−(L−1))..=idx(L−1)` rows (at most
//! `2L − 1`), so only those are multiplied.

use std::sync::Mutex;

use crate::EngineError;

/// Maps relative positions `i − j` to rows of the relative-embedding table, as transformers'
/// `make_log_bucket_position` and the clamp in `disentangled_attention_bias` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativePositions {
    /// `position_buckets`; 0 or less: no bucketing (positions are used as they are).
    buckets: i64,
    /// `max_relative_positions` after its default (`max_position_embeddings` when below 1).
    max_position: i64,
    /// `att_span`: the table has `2 · span` rows, row `span` is relative position 0.
    span: usize,
}

impl RelativePositions {
    /// `buckets` ≤ 0 turns bucketing off; `span` is `buckets` when bucketing, else
    /// `max_position`.
    pub fn new(buckets: i64, max_position: i64) -> Result<Self, EngineError> {
        let span = if buckets > 0 { buckets } else { max_position };
        if span < 1 || (buckets > 0 && (buckets < 4 || max_position < 2)) {
            return Err(EngineError::InvalidModel(format!(
                "relative positions: position_buckets {buckets}, max_relative_positions {max_position}"
            )));
        }
        Ok(Self {
            buckets,
            max_position,
            span: span as usize,
        })
    }

    /// Half the rows of the relative-embedding table (`att_span`).
    pub fn span(&self) -> usize {
        self.span
    }

    /// transformers' `make_log_bucket_position` for one relative position: positions within
    /// `buckets / 2` of 0 stay as they are, farther ones share logarithmically wider buckets.
    /// Computed in f32 exactly as transformers does (the rounding decides bucket edges).
    pub fn bucket(&self, relative: i64) -> i64 {
        if self.buckets <= 0 {
            return relative;
        }
        let mid = self.buckets / 2;
        let abs = relative.abs();
        if abs <= mid {
            return relative;
        }
        let ratio = abs as f32 / mid as f32;
        let denominator = ((self.max_position - 1) as f64 / mid as f64) as f32;
        let log_pos = (ratio.ln() / denominator.ln() * (mid - 1) as f32).ceil() + mid as f32;
        relative.signum() * log_pos as i64
    }

    /// The table row of relative position `relative` (query position − key position).
    pub fn index(&self, relative: i64) -> usize {
        let span = self.span as i64;
        (self.bucket(relative) + span).clamp(0, 2 * span - 1) as usize
    }

    /// [`Self::index`] of every relative position `−(longest − 1)..=longest − 1`, in that order.
    pub fn table(&self, longest: usize) -> Vec<u32> {
        let reach = longest.saturating_sub(1) as i64;
        (-reach..=reach).map(|r| self.index(r) as u32).collect()
    }
}

/// One layer's disentangled attention: sizes and the projected relative-position rows.
pub struct DisentangledAttention<'a> {
    pub heads: usize,
    pub head_dim: usize,
    /// `1 / √(head_dim · scale_factor)`, scale_factor = 1 + the number of relative terms.
    pub scale: f32,
    /// c2p: (2·span × hidden) position keys `PK` above, already times `scale`; `None` without
    /// c2p.
    pub pos_key: Option<&'a [f32]>,
    /// p2c: (2·span × hidden) position queries `PQ` above, already times `scale`; `None`
    /// without p2c.
    pub pos_query: Option<&'a [f32]>,
    pub positions: RelativePositions,
}

/// One (sequence, head) unit of work and the (length × head_dim) block it writes.
struct Unit<'o> {
    start: usize,
    len: usize,
    head: usize,
    out: &'o mut [f32],
}

/// Per-thread score buffers, kept between calls.
#[derive(Default)]
struct Buffers {
    scores: Vec<f32>,
    c2p: Vec<f32>,
    p2c: Vec<f32>,
}

/// Buffers kept between forward passes (fresh allocations cost page faults per call).
#[derive(Default)]
pub struct AttentionScratch {
    per_thread: Vec<Buffers>,
    head_major: Vec<f32>,
}

impl DisentangledAttention<'_> {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Attention of packed sequences: `qkv` is (rows × 3·hidden), query | key | value per row;
    /// sequence i owns rows `offsets[i]..offsets[i + 1]`; writes `out` (rows × hidden). Runs
    /// the (sequence, head) units on `threads` threads.
    pub fn forward(
        &self,
        qkv: &[f32],
        offsets: &[usize],
        out: &mut [f32],
        scratch: &mut AttentionScratch,
        threads: usize,
    ) -> Result<(), EngineError> {
        let h = self.hidden();
        let rows = out.len() / h.max(1);
        self.check(qkv, offsets, out, rows)?;
        let table_row = |p: Option<&[f32]>| p.map_or(0, |t| t.len() / h);
        let span_rows = 2 * self.positions.span();
        if [self.pos_key, self.pos_query]
            .iter()
            .any(|p| p.is_some() && table_row(*p) != span_rows)
        {
            return Err(EngineError::Internal(format!(
                "relative position tables must have {span_rows} rows of {h}"
            )));
        }
        let longest = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let table = self.positions.table(longest);
        let span = self.positions.span() as i64;
        // The largest R with idx(r) = span + r for every |r| ≤ R.
        let linear_reach = (0..longest)
            .take_while(|&r| {
                let r = r as i64;
                self.positions.index(r) as i64 == span + r
                    && self.positions.index(-r) as i64 == span - r
            })
            .count()
            .saturating_sub(1);

        // Units write (length × head_dim) blocks of a head-major copy of the output, so each
        // gets its own disjoint slice; the copy is transposed back at the end.
        scratch.head_major.resize(rows * h, 0.0);
        let mut units = Vec::with_capacity(self.heads * offsets.len());
        let mut rest: &mut [f32] = &mut scratch.head_major[..rows * h];
        for head in 0..self.heads {
            for w in offsets.windows(2) {
                let (block, tail) = rest.split_at_mut((w[1] - w[0]) * self.head_dim);
                rest = tail;
                units.push(Unit {
                    start: w[0],
                    len: w[1] - w[0],
                    head,
                    out: block,
                });
            }
        }
        // Longest first: the dynamic queue below then balances the threads' loads.
        units.sort_by_key(|u| std::cmp::Reverse(u.len));
        let threads = threads.clamp(1, units.len().max(1));
        scratch.per_thread.resize_with(threads, Buffers::default);
        let queue = Mutex::new(units.into_iter());
        let run = |buffers: &mut Buffers| loop {
            let next = match queue.lock() {
                Ok(mut q) => q.next(),
                Err(_) => None,
            };
            let Some(unit) = next else { break };
            self.attend(qkv, &table, longest, linear_reach, unit, buffers);
        };
        if threads == 1 {
            run(&mut scratch.per_thread[0]);
        } else {
            std::thread::scope(|s| {
                let (first, others) = scratch.per_thread.split_at_mut(1);
                for buffers in others.iter_mut() {
                    s.spawn(|| run(buffers));
                }
                run(&mut first[0]);
            });
        }

        // Head-major blocks back to (rows × hidden).
        let d = self.head_dim;
        for head in 0..self.heads {
            let src = &scratch.head_major[head * rows * d..(head + 1) * rows * d];
            for (row, values) in src.chunks_exact(d).enumerate() {
                out[row * h + head * d..row * h + (head + 1) * d].copy_from_slice(values);
            }
        }
        Ok(())
    }

    fn check(
        &self,
        qkv: &[f32],
        offsets: &[usize],
        out: &[f32],
        rows: usize,
    ) -> Result<(), EngineError> {
        let h = self.hidden();
        let ok = h > 0
            && out.len() == rows * h
            && qkv.len() == rows * 3 * h
            && offsets.first() == Some(&0)
            && offsets.last() == Some(&rows)
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        if ok {
            Ok(())
        } else {
            Err(EngineError::Internal(format!(
                "disentangled attention: {} qkv values, {} outputs, offsets {:?}…, hidden {h}",
                qkv.len(),
                out.len(),
                &offsets[..offsets.len().min(4)]
            )))
        }
    }

    /// One sequence, one head.
    fn attend(
        &self,
        qkv: &[f32],
        table: &[u32],
        longest: usize,
        linear_reach: usize,
        unit: Unit,
        b: &mut Buffers,
    ) {
        let (h, d, len) = (self.hidden(), self.head_dim, unit.len);
        if len == 0 {
            return;
        }
        let stride = 3 * h as isize;
        let base = unit.start * 3 * h + unit.head * d;
        let q = Strided::new(qkv, base, stride, 1);
        // kᵀ as a (d × len) operand, and k itself.
        let k_t = Strided::new(qkv, base + h, 1, stride);
        let k = Strided::new(qkv, base + h, stride, 1);
        let v = Strided::new(qkv, base + 2 * h, stride, 1);
        // table[r + longest − 1] is idx(r); this sequence reaches r in −(len−1)..=len−1.
        let centre = longest - 1;
        let lo = table[centre + 1 - len] as usize;
        let hi = table[centre + len - 1] as usize;
        let width = hi - lo + 1;
        // Within `linear_reach` every relative position is its own bucket (idx(r) = span + r):
        // the gathers become contiguous slices.
        let linear = len <= linear_reach + 1;
        let column = unit.head * d;
        let Buffers { scores, c2p, p2c } = b;

        let scores = sized(scores, len * len);
        matmul(scores, len, len, d, q, k_t, self.scale);
        if linear {
            self.add_relative_linear(scores, len, q, k, hi, lo, column, c2p);
        } else {
            let idx = &table[centre + 1 - len..];
            self.add_relative_bucketed(scores, len, (q, k), (lo, width), idx, column, (c2p, p2c));
        }
        for row in scores.chunks_exact_mut(len) {
            softmax(row);
        }
        // out = probs · v
        let probs = Strided::new(scores, 0, len as isize, 1);
        matmul(unit.out, len, d, len, probs, v, 1.0);
    }
}

impl DisentangledAttention<'_> {
    /// Adds the c2p and p2c terms where every relative position of the sequence is its own
    /// bucket (`idx(r) = span + r`, rows `lo..=hi` = `span − (len − 1)..=span + len − 1`).
    /// Query row i only meets the `len` position rows `idx(i − (len − 1))..=idx(i)`, so the
    /// products run over blocks of [`ROW_BLOCK`] rows against the `len − 1 + block` position
    /// rows the block reaches: ~60% of the work of one product against all `2·len − 1`.
    #[allow(clippy::too_many_arguments)]
    fn add_relative_linear(
        &self,
        scores: &mut [f32],
        len: usize,
        q: Strided,
        k: Strided,
        hi: usize,
        lo: usize,
        column: usize,
        buffer: &mut Vec<f32>,
    ) {
        let (h, d) = (self.hidden() as isize, self.head_dim);
        for r0 in (0..len).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(len);
            let (rows, width) = (r1 - r0, len - 1 + r1 - r0);
            let block = sized(buffer, rows * width);
            if let Some(pk) = self.pos_key {
                // block[ii][w] = q_i · PK[hi − (len − r1) − w] (position rows taken
                // backwards), i = r0 + ii: idx(i − j) = span + i − j is w = r1 − 1 − i + j, so
                // row i of the scores adds a forward slice of block row ii.
                let pk_t = Strided::new(pk, (hi - (len - r1)) * h as usize + column, 1, -h);
                matmul(block, rows, width, d, q.rows_from(r0), pk_t, 1.0);
                for (ii, row) in scores[r0 * len..r1 * len].chunks_exact_mut(len).enumerate() {
                    let c = &block[ii * width + rows - 1 - ii..][..len];
                    for (s, &x) in row.iter_mut().zip(c) {
                        *s += x;
                    }
                }
            }
            if let Some(pq) = self.pos_query {
                // Key rows j = r0 + jj: block[jj][w] = k_j · PQ[lo + (len − r1) + w];
                // score (i, j) takes w = r1 − 1 − j + i, row jj read forward down column j.
                let pq_t = Strided::new(pq, (lo + len - r1) * h as usize + column, 1, h);
                matmul(block, rows, width, d, k.rows_from(r0), pq_t, 1.0);
                for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                    for (jj, s) in row[r0..r1].iter_mut().enumerate() {
                        *s += block[jj * width + rows - 1 - jj + i];
                    }
                }
            }
        }
    }

    /// Adds the c2p and p2c terms through the bucket table: `idx` holds idx(r) for
    /// r = −(len − 1)..=len − 1, all within rows `lo..lo + width` of the position tables.
    #[allow(clippy::too_many_arguments)]
    fn add_relative_bucketed(
        &self,
        scores: &mut [f32],
        len: usize,
        (q, k): (Strided, Strided),
        (lo, width): (usize, usize),
        idx: &[u32],
        column: usize,
        (c2p, p2c): (&mut Vec<f32>, &mut Vec<f32>),
    ) {
        let (h, d) = (self.hidden() as isize, self.head_dim);
        // idx(i − j) for j = 0..len, reversed: idx[i..i + len] holds idx(i − (len − 1))..=idx(i).
        let reach = |i: usize| idx[i..i + len].iter().rev();
        if let Some(pk) = self.pos_key {
            // c2p[i][w] = q_i · PK[lo + w]
            let c2p = sized(c2p, len * width);
            let pk_t = Strided::new(pk, lo * h as usize + column, 1, h);
            matmul(c2p, len, width, d, q, pk_t, 1.0);
            for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                let c = &c2p[i * width..(i + 1) * width];
                for (s, &t) in row.iter_mut().zip(reach(i)) {
                    *s += c[t as usize - lo];
                }
            }
        }
        if let Some(pq) = self.pos_query {
            // p2c[j][w] = k_j · PQ[lo + w]; score (i, j) takes p2c[j][idx(i − j) − lo].
            let p2c = sized(p2c, len * width);
            let pq_t = Strided::new(pq, lo * h as usize + column, 1, h);
            matmul(p2c, len, width, d, k, pq_t, 1.0);
            for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                for (j, (s, &t)) in row.iter_mut().zip(reach(i)).enumerate() {
                    *s += p2c[j * width + t as usize - lo];
                }
            }
        }
    }
}

/// Query (and key) rows per block of the relative products in the unbucketed case.
const ROW_BLOCK: usize = 64;

/// `buffer` resized to `len` (contents unspecified), without shrinking its allocation.
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

/// A matrix operand inside a slice: element (r, c) is `data[origin + r·row_stride + c·col_stride]`
/// (strides may be negative).
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    origin: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Strided<'a> {
    fn new(data: &'a [f32], origin: usize, row_stride: isize, col_stride: isize) -> Self {
        Self {
            data,
            origin,
            row_stride,
            col_stride,
        }
    }

    /// The same matrix from row `first` on.
    fn rows_from(self, first: usize) -> Self {
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
fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, lhs: Strided, rhs: Strided, alpha: f32) {
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
fn softmax(row: &mut [f32]) {
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
fn exp(x: f32) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator in −0.5..0.5.
    fn noise(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5
    }

    /// transformers' formulation, in f64: full-width c2p/p2c products gathered with clamped
    /// indices, p2c indexed by −bucket(j − i) as `disentangled_attention_bias` does.
    fn reference(a: &DisentangledAttention, qkv: &[f32], offsets: &[usize]) -> Vec<f32> {
        let (heads, d) = (a.heads, a.head_dim);
        let h = heads * d;
        let span = a.positions.span() as i64;
        let row = |b: i64| (b + span).clamp(0, 2 * span - 1) as usize;
        let mut out = vec![0f32; qkv.len() / 3];
        for w in offsets.windows(2) {
            let (start, len) = (w[0], w[1] - w[0]);
            for head in 0..heads {
                let at = |t: usize, part: usize, c: usize| {
                    f64::from(qkv[(start + t) * 3 * h + part * h + head * d + c])
                };
                let table = |t: &[f32], r: usize, c: usize| f64::from(t[r * h + head * d + c]);
                for i in 0..len {
                    let scores: Vec<f64> = (0..len)
                        .map(|j| {
                            let mut s: f64 = (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum();
                            s *= f64::from(a.scale);
                            let c2p = row(a.positions.bucket(i as i64 - j as i64));
                            let p2c = row(-a.positions.bucket(j as i64 - i as i64));
                            if let Some(pk) = a.pos_key {
                                s += (0..d).map(|c| at(i, 0, c) * table(pk, c2p, c)).sum::<f64>();
                            }
                            if let Some(pq) = a.pos_query {
                                s += (0..d).map(|c| at(j, 1, c) * table(pq, p2c, c)).sum::<f64>();
                            }
                            s
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        let v: f64 = (0..len).map(|j| e[j] / sum * at(j, 2, c)).sum();
                        out[(start + i) * h + head * d + c] = v as f32;
                    }
                }
            }
        }
        out
    }

    fn check(buckets: i64, max_position: i64, lengths: &[usize], c2p: bool, p2c: bool) {
        let (heads, d) = (3, 8);
        let h = heads * d;
        let positions = RelativePositions::new(buckets, max_position).expect("valid");
        let rows = 2 * positions.span() * h;
        let mut seed = 7u64;
        let pk: Vec<f32> = (0..rows).map(|_| noise(&mut seed)).collect();
        let pq: Vec<f32> = (0..rows).map(|_| noise(&mut seed)).collect();
        let mut offsets = vec![0];
        for l in lengths {
            offsets.push(offsets[offsets.len() - 1] + l);
        }
        let tokens = offsets[offsets.len() - 1];
        let qkv: Vec<f32> = (0..tokens * 3 * h)
            .map(|_| 2.0 * noise(&mut seed))
            .collect();
        let factor = 1 + usize::from(c2p) + usize::from(p2c);
        let attention = DisentangledAttention {
            heads,
            head_dim: d,
            scale: 1.0 / ((d * factor) as f32).sqrt(),
            pos_key: c2p.then_some(&pk[..]),
            pos_query: p2c.then_some(&pq[..]),
            positions,
        };
        let want = reference(&attention, &qkv, &offsets);
        for threads in [1, 2, 3] {
            let mut got = vec![0f32; tokens * h];
            let mut scratch = AttentionScratch::default();
            attention
                .forward(&qkv, &offsets, &mut got, &mut scratch, threads)
                .expect("runs");
            let worst = got
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "buckets {buckets}, max {max_position}, {lengths:?}, c2p {c2p}, p2c {p2c}, \
                 {threads} threads: off by {worst}"
            );
        }
    }

    /// Both the unbucketed fast path (contiguous slices, row blocks) and the bucket-table path,
    /// either term alone, clamped spans, empty and one-token sequences, any thread count.
    #[test]
    fn matches_transformers_formulation() {
        check(8, 64, &[5, 40, 1, 0, 130, 17], true, true);
        check(-1, 24, &[5, 40, 1, 60], true, true);
        check(8, 64, &[30, 3], true, false);
        check(8, 64, &[30, 3], false, true);
        check(256, 512, &[100, 3, 70], true, true);
        check(8, 16, &[40], true, true);
    }

    #[test]
    fn refuses_inconsistent_sizes() {
        let positions = RelativePositions::new(8, 64).expect("valid");
        let table = vec![0f32; 16 * 8];
        let attention = DisentangledAttention {
            heads: 2,
            head_dim: 4,
            scale: 0.5,
            pos_key: Some(&table),
            pos_query: None,
            positions,
        };
        let mut scratch = AttentionScratch::default();
        let qkv = vec![0f32; 3 * 24];
        let mut out = vec![0f32; 3 * 8];
        assert!(attention
            .forward(&qkv, &[0, 3], &mut out, &mut scratch, 1)
            .is_ok());
        for offsets in [&[0, 2][..], &[1, 3], &[0, 2, 1, 3], &[]] {
            assert!(attention
                .forward(&qkv, offsets, &mut out, &mut scratch, 1)
                .is_err());
        }
        let short = vec![0f32; 8 * 8];
        let bad = DisentangledAttention {
            pos_key: Some(&short),
            ..attention
        };
        assert!(bad
            .forward(&qkv, &[0, 3], &mut out, &mut scratch, 1)
            .is_err());
        assert!(RelativePositions::new(0, 0).is_err());
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(exp(x)) - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37);
    }

    #[derive(serde::Deserialize)]
    struct BucketTable {
        position_buckets: i64,
        max_relative_positions: i64,
        first: i64,
        buckets: Vec<i64>,
    }

    /// transformers' own `make_log_bucket_position` (tabulated by scripts/fixtures/deberta.py,
    /// DeBERTa-v3-base's 256 buckets over 512 among them): the f32 rounding of the log decides
    /// bucket edges, so ours must round the same way.
    #[test]
    fn buckets_match_transformers() {
        #[derive(serde::Deserialize)]
        struct Fixture {
            bucket_tables: Vec<BucketTable>,
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/deberta-ce/parity.json");
        let text = std::fs::read_to_string(path).expect("fixture");
        let fixture: Fixture = serde_json::from_str(&text).expect("parses");
        assert!(fixture.bucket_tables.len() >= 2);
        for t in &fixture.bucket_tables {
            let positions = RelativePositions::new(t.position_buckets, t.max_relative_positions)
                .expect("valid");
            for (i, &want) in t.buckets.iter().enumerate() {
                let r = t.first + i as i64;
                assert_eq!(
                    positions.bucket(r),
                    want,
                    "{} buckets over {}, relative position {r}",
                    t.position_buckets,
                    t.max_relative_positions
                );
            }
        }
    }
}
