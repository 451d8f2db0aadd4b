//! Causal grouped-query attention over packed sequences, each after an optional shared prefix.
//!
//! The layout is that of a fused QKV projection: one row per token holding
//! `[q (heads × d) | k (kv_heads × d) | v (kv_heads × d)]`. Query head `h` reads key/value head
//! `h / (heads / kv_heads)` (transformers' `repeat_kv`). Each sequence attends first to the keys
//! and values of its prefix — tokens that were run once for every sequence that shares them, e.g.
//! a decoder reranker's instruction and query — and then causally to its own tokens. With no
//! prefix this is plain causal self-attention.
//!
//! Per (sequence, head) the scores are two GEMMs (the prefix block and the own block) into one
//! row-major score matrix, a masked softmax, and two GEMMs into the output; the GEMMs are the
//! `gemm` crate's (AVX-512 where the CPU has it). Sequences are shared out between threads.

use std::thread;

/// The head geometry of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayout {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadLayout {
    /// Values in one fused QKV row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Values in one key (or value) row.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Values in one output row.
    pub fn out_width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Keys and values of a prefix: `len` rows of `kv_width` values each, row-major.
#[derive(Debug, Clone, Copy)]
pub struct PrefixKv<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub len: usize,
}

impl PrefixKv<'_> {
    /// No prefix: plain causal attention.
    pub const EMPTY: PrefixKv<'static> = PrefixKv {
        keys: &[],
        values: &[],
        len: 0,
    };
}

/// One packed sequence: its rows `start..end` of the QKV matrix and the prefix it follows.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub start: usize,
    pub end: usize,
    pub prefix: PrefixKv<'a>,
}

/// Attention for every sequence; `out` gets one row of `heads × d` values per QKV row.
///
/// Panics when the buffers disagree with the layout (callers size them from the same layout).
pub fn causal_attention(
    layout: HeadLayout,
    qkv: &[f32],
    sequences: &[Sequence<'_>],
    out: &mut [f32],
) {
    let rows = qkv.len() / layout.qkv_width();
    debug_assert_eq!(out.len(), rows * layout.out_width());
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sequences.len());
    if threads <= 1 {
        let mut scratch = Scratch::default();
        for s in sequences {
            attend_sequence(
                layout,
                qkv,
                s,
                &mut out[s.start * layout.out_width()..s.end * layout.out_width()],
                &mut scratch,
            );
        }
        return;
    }
    // Split the sequences into `threads` runs of about equal work (own rows × all keys).
    let cost = |s: &Sequence<'_>| (s.end - s.start) * (s.end - s.start + s.prefix.len);
    let total: usize = sequences.iter().map(cost).sum();
    let mut runs: Vec<&[Sequence<'_>]> = Vec::with_capacity(threads);
    let (mut first, mut acc) = (0usize, 0usize);
    for (i, s) in sequences.iter().enumerate() {
        acc += cost(s);
        if acc * threads >= total * (runs.len() + 1) && runs.len() + 1 < threads {
            runs.push(&sequences[first..=i]);
            first = i + 1;
        }
    }
    runs.push(&sequences[first..]);
    thread::scope(|scope| {
        let mut rest = &mut out[..];
        let mut consumed = 0usize;
        for run in runs {
            let (Some(a), Some(b)) = (run.first(), run.last()) else {
                continue;
            };
            let (lo, hi) = (a.start * layout.out_width(), b.end * layout.out_width());
            let tail = std::mem::take(&mut rest);
            let (_, tail) = tail.split_at_mut(lo - consumed);
            let (mine, tail) = tail.split_at_mut(hi - lo);
            rest = tail;
            consumed = hi;
            scope.spawn(move || {
                let mut scratch = Scratch::default();
                for s in run {
                    let o = &mut mine[(s.start - a.start) * layout.out_width()
                        ..(s.end - a.start) * layout.out_width()];
                    attend_sequence(layout, qkv, s, o, &mut scratch);
                }
            });
        }
    });
}

/// Own rows are handled in blocks of this many, each block scoring keys only up to its last
/// row: the causal mask then wastes at most half a block per row instead of half the sequence.
const ROW_BLOCK: usize = 64;

/// Per-thread buffers of [`attend_sequence`].
#[derive(Default)]
struct Scratch {
    /// The query rows of one key/value group's heads, head-major.
    queries: Vec<f32>,
    scores: Vec<f32>,
    /// The group's outputs, head-major, before they go to their columns of `out`.
    outputs: Vec<f32>,
}

fn attend_sequence(
    layout: HeadLayout,
    qkv: &[f32],
    s: &Sequence<'_>,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let HeadLayout {
        heads,
        kv_heads,
        head_dim: d,
    } = layout;
    let (w, kvw, ow) = (layout.qkv_width(), layout.kv_width(), layout.out_width());
    let l = s.end - s.start;
    let p = s.prefix.len;
    if l == 0 {
        return;
    }
    assert!(
        s.prefix.keys.len() >= p * kvw && s.prefix.values.len() >= p * kvw,
        "prefix shorter than its length"
    );
    assert!(
        s.end * w <= qkv.len() && out.len() == l * ow,
        "buffers disagree with the layout"
    );
    let group = heads / kv_heads;
    let block = ROW_BLOCK.min(l);
    scratch.queries.resize(group * block * d, 0.0);
    scratch.scores.resize(group * block * (p + l), 0.0);
    scratch.outputs.resize(group * block * d, 0.0);
    let rows = &qkv[s.start * w..s.end * w];
    let scale = 1.0 / (d as f32).sqrt();
    for r0 in (0..l).step_by(ROW_BLOCK) {
        let r1 = (r0 + ROW_BLOCK).min(l);
        let m = r1 - r0;
        // Keys this block sees: the prefix and own rows 0..r1.
        let n = p + r1;
        for g in 0..kv_heads {
            // The group's query heads stacked: row (r, i) is head g·group + r at own row r0 + i.
            for r in 0..group {
                let h = g * group + r;
                for i in 0..m {
                    scratch.queries[(r * m + i) * d..][..d]
                        .copy_from_slice(&rows[(r0 + i) * w + h * d..][..d]);
                }
            }
            let gm = group * m;
            let q = scratch.queries.as_ptr();
            let k_own = rows[heads * d + g * d..].as_ptr();
            let v_own = rows[(heads + kv_heads) * d + g * d..].as_ptr();
            let sc = scratch.scores.as_mut_ptr();
            // SAFETY: the asserts above keep every access in bounds: k_own and v_own read own rows
            // 0..r1 (stride w) of this sequence, the prefix `p` rows of stride `kvw`; queries,
            // scores and outputs hold group·m rows of d, n and d values. Written regions never
            // overlap read ones.
            unsafe {
                if p > 0 {
                    let kp = s.prefix.keys[g * d..].as_ptr();
                    gemm::gemm(
                        gm,
                        p,
                        d,
                        sc,
                        1,
                        n as isize,
                        false,
                        q,
                        1,
                        d as isize,
                        kp,
                        kvw as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                gemm::gemm(
                    gm,
                    r1,
                    d,
                    sc.add(p),
                    1,
                    n as isize,
                    false,
                    q,
                    1,
                    d as isize,
                    k_own,
                    w as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (j, row) in scratch.scores[..gm * n].chunks_exact_mut(n).enumerate() {
                let (seen, masked) = row.split_at_mut(p + r0 + j % m + 1);
                softmax_in_place(seen);
                masked.fill(0.0);
            }
            let o = scratch.outputs.as_mut_ptr();
            let sc = scratch.scores.as_ptr();
            // SAFETY: as above.
            unsafe {
                if p > 0 {
                    let vp = s.prefix.values[g * d..].as_ptr();
                    gemm::gemm(
                        gm,
                        d,
                        p,
                        o,
                        1,
                        d as isize,
                        false,
                        sc,
                        1,
                        n as isize,
                        vp,
                        1,
                        kvw as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                gemm::gemm(
                    gm,
                    d,
                    r1,
                    o,
                    1,
                    d as isize,
                    p > 0,
                    sc.add(p),
                    1,
                    n as isize,
                    v_own,
                    1,
                    w as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for r in 0..group {
                let h = g * group + r;
                for i in 0..m {
                    out[(r0 + i) * ow + h * d..][..d]
                        .copy_from_slice(&scratch.outputs[(r * m + i) * d..][..d]);
                }
            }
        }
    }
}

/// Softmax of one row of scores, in place.
fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Straightforward attention of one full sequence (prefix rows then own rows), in f64.
    fn naive(layout: HeadLayout, qkv: &[f32]) -> Vec<f32> {
        let HeadLayout {
            heads,
            kv_heads,
            head_dim: d,
        } = layout;
        let w = layout.qkv_width();
        let n = qkv.len() / w;
        let mut out = vec![0f32; n * heads * d];
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            for t in 0..n {
                let q = &qkv[t * w + h * d..][..d];
                let s: Vec<f64> = (0..=t)
                    .map(|j| {
                        let k = &qkv[j * w + (heads + g) * d..][..d];
                        q.iter()
                            .zip(k)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..d {
                    let v: f64 = (0..=t)
                        .map(|j| e[j] / z * f64::from(qkv[j * w + (heads + kv_heads + g) * d + i]))
                        .sum();
                    out[t * heads * d + h * d + i] = v as f32;
                }
            }
        }
        out
    }

    #[test]
    fn with_a_prefix_equals_attention_over_the_whole_sequence() {
        let layout = HeadLayout {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        let (w, kvw) = (layout.qkv_width(), layout.kv_width());
        // One sequence longer than a row block, so that blocks see growing key ranges.
        let (p, lens) = (5usize, [3usize, 1, ROW_BLOCK * 2 + 9, 7]);
        let prefix_rows = values(p * w, 1);
        let keys: Vec<f32> = prefix_rows
            .chunks(w)
            .flat_map(|r| r[4 * 8..][..kvw].to_vec())
            .collect();
        let vals: Vec<f32> = prefix_rows
            .chunks(w)
            .flat_map(|r| r[6 * 8..][..kvw].to_vec())
            .collect();
        let prefix = PrefixKv {
            keys: &keys,
            values: &vals,
            len: p,
        };
        let mut packed = Vec::new();
        let mut seqs = Vec::new();
        let mut expect = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            let own = values(l * w, 10 + i as u32);
            let start = packed.len() / w;
            packed.extend_from_slice(&own);
            seqs.push(Sequence {
                start,
                end: start + l,
                prefix,
            });
            let whole: Vec<f32> = prefix_rows.iter().chain(&own).copied().collect();
            expect.extend_from_slice(&naive(layout, &whole)[p * layout.out_width()..]);
        }
        let mut out = vec![0f32; packed.len() / w * layout.out_width()];
        causal_attention(layout, &packed, &seqs, &mut out);
        let worst = out
            .iter()
            .zip(&expect)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-5, "worst difference {worst}");

        // Without a prefix: plain causal attention of each packed sequence.
        let whole: Vec<f32> = prefix_rows
            .iter()
            .chain(&values(4 * w, 99))
            .copied()
            .collect();
        let mut out = vec![0f32; 9 * layout.out_width()];
        causal_attention(
            layout,
            &whole,
            &[Sequence {
                start: 0,
                end: 9,
                prefix: PrefixKv::EMPTY,
            }],
            &mut out,
        );
        let worst = out
            .iter()
            .zip(&naive(layout, &whole))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "worst difference {worst}");
    }
}
