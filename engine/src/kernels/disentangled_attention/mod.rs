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

mod linear_algebra;
mod positions;
#[cfg(test)]
mod tests;

use std::sync::Mutex;

use super::parallel::{for_each_range, SharedMut};
use crate::EngineError;
use linear_algebra::{matmul, sized, softmax, Strided};
pub use positions::RelativePositions;

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
            // On the kernels' own pool (OpenMP's, where built with oneDNN): Rust threads started
            // beside its spin-waiting workers would compete with them for the same cores.
            let buffers = SharedMut(scratch.per_thread.as_mut_ptr());
            for_each_range(threads, &|begin, end| {
                let base = buffers;
                for t in begin..end {
                    // SAFETY: each t < threads = per_thread.len() is visited by exactly one
                    // caller, and `scratch` is borrowed mutably for the whole loop.
                    run(unsafe { &mut *base.0.add(t) });
                }
            })?;
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
