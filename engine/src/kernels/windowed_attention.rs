//! Bidirectional attention over packed sequences, optionally within a sliding window: ModernBERT's
//! global layers (every key of the sequence) and local ones (keys at most a half window away),
//! per sequence of a packed batch (varlen, as flash-attention's `cu_seqlens`), never across
//! sequences.
//!
//! Queries go in blocks; a block's scores cover only the keys some query of the block can see,
//! so a local layer over long sequences costs O(tokens × window), not O(tokens²). Q·Kᵀ and P·V
//! are `gemm` calls on strided views of the packed QKV rows; softmax runs in f32. The blocks of
//! all sequences and heads are split over the kernel threads by cost.

use super::parallel::{for_each_range, threads, SharedMut};
use super::vector_math::{exp, max, multiversion, sum};
use crate::EngineError;

/// Queries per block in global layers and in sequences no longer than one block: fewer, larger
/// GEMM calls (measured 1.3× faster than 64 on 128-token sequences).
const GLOBAL_BLOCK: usize = 128;

/// The layout of a packed QKV buffer and the attention to run over it: each row is
/// `[q heads…, k heads…, v heads…]`, each head `head_dim` values (a fused `Wqkv`'s output).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub heads: usize,
    pub head_dim: usize,
    /// Keys farther than this from the query are masked; `None`: every key of the sequence.
    pub half_window: Option<usize>,
}

impl AttentionShape {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Query rows per block: a half window's worth (32 to 128) in local layers over sequences
/// longer than a global block, so that about two thirds of the scores computed are inside the
/// window; a global block otherwise.
fn block_rows(half_window: Option<usize>, len: usize) -> usize {
    match half_window {
        Some(hw) if len > GLOBAL_BLOCK => hw.clamp(32, GLOBAL_BLOCK),
        _ => GLOBAL_BLOCK,
    }
}

/// One unit of work: a block of queries of one head of one sequence.
#[derive(Debug, Clone, Copy)]
struct Unit {
    /// The sequence's first row in the packed buffer, and its length.
    seq_start: usize,
    seq_len: usize,
    head: usize,
    /// Query rows [q0, q1) and key rows [k0, k1), relative to the sequence.
    q0: usize,
    q1: usize,
    k0: usize,
    k1: usize,
}

impl Unit {
    fn cost(&self) -> usize {
        (self.q1 - self.q0) * (self.k1 - self.k0)
    }
}

fn units(offsets: &[usize], shape: &AttentionShape) -> Vec<Unit> {
    let mut out = Vec::new();
    for w in offsets.windows(2) {
        let (start, len) = (w[0], w[1] - w[0]);
        let block = block_rows(shape.half_window, len);
        for head in 0..shape.heads {
            for q0 in (0..len).step_by(block) {
                let q1 = (q0 + block).min(len);
                let (k0, k1) = match shape.half_window {
                    Some(hw) => (q0.saturating_sub(hw), (q1 + hw).min(len)),
                    None => (0, len),
                };
                out.push(Unit {
                    seq_start: start,
                    seq_len: len,
                    head,
                    q0,
                    q1,
                    k0,
                    k1,
                });
            }
        }
    }
    out
}

/// Attention over every sequence of `qkv` (tokens × 3·hidden, packed; sequence i owns rows
/// `offsets[i]..offsets[i + 1]`, `offsets` starting at 0 and never decreasing), written to `out`
/// (tokens × hidden).
pub(crate) fn attention(
    qkv: &[f32],
    offsets: &[usize],
    shape: AttentionShape,
    out: &mut [f32],
) -> Result<(), EngineError> {
    let h = shape.hidden();
    if h == 0 {
        return Err(EngineError::Internal("attention with no heads".into()));
    }
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(EngineError::Internal(
            "attention offsets must start at 0 and not decrease".into(),
        ));
    }
    let tokens = offsets[offsets.len() - 1];
    if qkv.len() != tokens * 3 * h || out.len() != tokens * h {
        return Err(EngineError::Internal(format!(
            "attention over {tokens} tokens given {} qkv and {} output values",
            qkv.len(),
            out.len()
        )));
    }
    let work = units(offsets, &shape);
    let total: usize = work.iter().map(Unit::cost).sum();
    let parts = threads().clamp(1, work.len().max(1));
    // Contiguous runs of units of about equal cost, one per thread.
    let mut runs: Vec<&[Unit]> = Vec::with_capacity(parts);
    let (mut begin, mut acc) = (0, 0);
    for (i, u) in work.iter().enumerate() {
        acc += u.cost();
        if acc * parts >= total * (runs.len() + 1) && runs.len() + 1 < parts {
            runs.push(&work[begin..=i]);
            begin = i + 1;
        }
    }
    runs.push(&work[begin..]);
    let out_ptr = SharedMut(out.as_mut_ptr());
    for_each_range(runs.len(), &|b, e| {
        for run in &runs[b..e] {
            run_units(qkv, shape, run, out_ptr);
        }
    })
}

multiversion!(fn run_units(qkv: &[f32], shape: AttentionShape, units: &[Unit], out: SharedMut<f32>) => run_units_body);

/// Runs `units` in order on this thread. `attention` checked the buffer sizes, and units given
/// to different threads write disjoint parts of `out` (their own query rows × head columns).
#[inline(always)]
fn run_units_body(qkv: &[f32], shape: AttentionShape, units: &[Unit], out: SharedMut<f32>) {
    let mut scores = Vec::new();
    for u in units {
        // SAFETY: see above.
        unsafe { run_unit(qkv, shape, u, &mut scores, out) };
    }
}

/// Scores, softmax and P·V of one unit.
///
/// # Safety
/// `qkv` must hold the unit's sequence (3·hidden values per row) and `out` point to at least
/// `(seq_start + seq_len) × hidden` floats, of which no other thread writes this unit's rows ×
/// head columns.
#[inline(always)]
unsafe fn run_unit(
    qkv: &[f32],
    shape: AttentionShape,
    u: &Unit,
    scores: &mut Vec<f32>,
    out: SharedMut<f32>,
) {
    let (h, d) = (shape.hidden(), shape.head_dim);
    let row = 3 * h;
    let (nq, nk) = (u.q1 - u.q0, u.k1 - u.k0);
    scores.clear();
    scores.resize(nq * nk, 0.0);
    let q = qkv.as_ptr().add((u.seq_start + u.q0) * row + u.head * d);
    let k = qkv
        .as_ptr()
        .add((u.seq_start + u.k0) * row + h + u.head * d);
    let v = qkv
        .as_ptr()
        .add((u.seq_start + u.k0) * row + 2 * h + u.head * d);
    let scale = 1.0 / (d as f32).sqrt();
    // scores (nq × nk) = scale · Q (nq × d) · Kᵀ (d × nk); gemm computes dst = α·dst + β·lhs·rhs
    // with (column stride, row stride) per operand.
    gemm::gemm(
        nq,
        nk,
        d,
        scores.as_mut_ptr(),
        1,
        nk as isize,
        false,
        q,
        1,
        row as isize,
        k,
        row as isize,
        1,
        0.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
    for (r, srow) in scores.chunks_exact_mut(nk).enumerate() {
        let i = u.q0 + r;
        // The keys query i sees, relative to k0.
        let (lo, hi) = match shape.half_window {
            Some(hw) => (
                i.saturating_sub(hw) - u.k0,
                (i + hw + 1).min(u.seq_len) - u.k0,
            ),
            None => (0, nk),
        };
        let visible = &mut srow[lo..hi];
        let top = max(visible);
        for s in visible.iter_mut() {
            *s = exp(*s - top);
        }
        let inv = 1.0 / sum(visible);
        for s in visible.iter_mut() {
            *s *= inv;
        }
        srow[..lo].fill(0.0);
        srow[hi..].fill(0.0);
    }
    // out rows (nq × d, row stride h) = P (nq × nk) · V (nk × d)
    let dst = out.0.add((u.seq_start + u.q0) * h + u.head * d);
    gemm::gemm(
        nq,
        d,
        nk,
        dst,
        1,
        h as isize,
        false,
        scores.as_ptr(),
        1,
        nk as isize,
        v,
        1,
        row as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention computed the obvious way, in f64.
    fn naive(qkv: &[f32], offsets: &[usize], shape: AttentionShape) -> Vec<f32> {
        let (h, d) = (shape.hidden(), shape.head_dim);
        let at = |row: usize, col: usize| f64::from(qkv[row * 3 * h + col]);
        let mut out = vec![0f32; offsets[offsets.len() - 1] * h];
        for w in offsets.windows(2) {
            for head in 0..shape.heads {
                for i in w[0]..w[1] {
                    let visible: Vec<usize> = (w[0]..w[1])
                        .filter(|&j| shape.half_window.is_none_or(|hw| i.abs_diff(j) <= hw))
                        .collect();
                    let logits: Vec<f64> = visible
                        .iter()
                        .map(|&j| {
                            (0..d)
                                .map(|c| at(i, head * d + c) * at(j, h + head * d + c))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = logits.iter().map(|l| (l - top).exp()).sum();
                    for c in 0..d {
                        let value: f64 = visible
                            .iter()
                            .zip(&logits)
                            .map(|(&j, l)| (l - top).exp() / z * at(j, 2 * h + head * d + c))
                            .sum();
                        out[i * h + head * d + c] = value as f32;
                    }
                }
            }
        }
        out
    }

    fn data(n: usize) -> Vec<f32> {
        let mut s = 7u64;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn matches_naive_attention_globally_and_in_every_window() {
        // Lengths 1, 4, 70, 33 and 292 (over one 128-query block: local layers use window blocks).
        let offsets = [0usize, 1, 5, 75, 108, 400];
        let qkv = data(400 * 3 * 24);
        for half_window in [None, Some(0), Some(3), Some(40), Some(64), Some(300)] {
            let shape = AttentionShape {
                heads: 3,
                head_dim: 8,
                half_window,
            };
            let want = naive(&qkv, &offsets, shape);
            let mut got = vec![f32::NAN; 400 * 24];
            attention(&qkv, &offsets, shape, &mut got).expect("runs");
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{half_window:?}: {worst}");
        }
    }

    #[test]
    fn refuses_buffers_and_offsets_that_do_not_match() {
        let shape = AttentionShape {
            heads: 2,
            head_dim: 4,
            half_window: None,
        };
        let qkv = vec![0.5f32; 3 * 24];
        let mut out = vec![0f32; 3 * 8];
        assert!(attention(&qkv, &[0, 1, 3], shape, &mut out).is_ok());
        for offsets in [&[][..], &[1, 3], &[0, 2, 1, 3], &[0, 4], &[0, 2]] {
            assert!(
                attention(&qkv, offsets, shape, &mut out).is_err(),
                "{offsets:?}"
            );
        }
    }
}
