//! Rotary position embeddings for decoders (Qwen3): cos/sin tables over a range of positions and their application to q/k rows.
//!
//! For a head vector `x` of `d` values at position `p`, with `f_i = p · θ^(-2i/d)` for
//! `i < d/2`: `y_i = x_i cos f_i − x_{i+d/2} sin f_i` and `y_{i+d/2} = x_{i+d/2} cos f_i + x_i sin f_i`
//! (the two halves of the head, not interleaved pairs). The inverse frequencies are computed in
//! f32 the way transformers computes them, so positions rotate identically.

/// The inverse frequencies of one head size and base.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    /// `head_dim` must be even; `theta` is the config's `rope_theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let base = theta as f32;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq, head_dim }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// cos and sin of every position in `positions`, `head_dim / 2` values per position.
    pub fn tables(&self, positions: std::ops::Range<usize>) -> (Vec<f32>, Vec<f32>) {
        let n = positions.len() * self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for pos in positions {
            for &f in &self.inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    /// cos and sin of positions `0..len`, for [`RopeTable::apply`]: a pass computes them once
    /// for all of its layers.
    pub fn table(&self, len: usize) -> RopeTable {
        let (cos, sin) = self.tables(0..len);
        RopeTable {
            half: self.head_dim / 2,
            len,
            cos,
            sin,
        }
    }
}

/// cos and sin of the positions of one pass.
#[derive(Debug, Clone)]
pub struct RopeTable {
    half: usize,
    len: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Rotates `heads` consecutive head vectors that start at column `offset` of each row of `x`
    /// (rows of `row_stride` values); row r is at position `positions[r]`, which must be below
    /// the table's length (panics otherwise: callers size the table from the same positions).
    pub fn apply(
        &self,
        x: &mut [f32],
        row_stride: usize,
        offset: usize,
        heads: usize,
        positions: &[u32],
    ) {
        let half = self.half;
        for (row, &pos) in x.chunks_exact_mut(row_stride).zip(positions) {
            let pos = pos as usize;
            assert!(
                pos < self.len,
                "position {pos} beyond a RoPE table of {}",
                self.len
            );
            let cos = &self.cos[pos * half..(pos + 1) * half];
            let sin = &self.sin[pos * half..(pos + 1) * half];
            let span = &mut row[offset..offset + heads * 2 * half];
            for head in span.chunks_exact_mut(2 * half) {
                let (a, b) = head.split_at_mut(half);
                for (((x1, x2), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
                    let (v1, v2) = (*x1, *x2);
                    *x1 = v1 * c - v2 * s;
                    *x2 = v2 * c + v1 * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_the_identity_and_rotation_keeps_the_norm() {
        let rope = Rope::new(4, 10000.0);
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 9.0, 1.0, 2.0, 3.0, 4.0];
        rope.table(1).apply(&mut x, 9, 1, 2, &[0]);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0, 9.0, 1.0, 2.0, 3.0, 4.0]);
        let mut y = [1.0f32, 2.0, 3.0, 4.0];
        rope.table(8).apply(&mut y, 4, 0, 1, &[7]);
        let n0 = 1.0f32 + 4.0 + 9.0 + 16.0;
        let n1: f32 = y.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
        // The first pair rotates by 7 radians (inverse frequency 1).
        let (c, s) = (7f32.cos(), 7f32.sin());
        assert!((y[0] - (1.0 * c - 3.0 * s)).abs() < 1e-6);
        assert!((y[2] - (3.0 * c + 1.0 * s)).abs() < 1e-6);
    }

    #[test]
    fn scores_depend_on_relative_position_only() {
        let rope = Rope::new(8, 10000.0);
        let q0: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 1.0).collect();
        let k0: Vec<f32> = (0..8).map(|i| 1.0 - i as f32 * 0.2).collect();
        let dot = |pq: u32, pk: u32| {
            let (mut q, mut k) = (q0.clone(), k0.clone());
            let table = rope.table(16);
            table.apply(&mut q, 8, 0, 1, &[pq]);
            table.apply(&mut k, 8, 0, 1, &[pk]);
            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((dot(5, 2) - dot(13, 10)).abs() < 1e-4);
    }
}
