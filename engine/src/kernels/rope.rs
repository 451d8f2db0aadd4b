//! Rotary position embedding in the rotate-half form (GPT-NeoX, Llama, ModernBERT) on packed
//! rows, each row at its own position (positions restart at 0 in every sequence, or continue
//! after a cached prefix in a decoder). One table serves encoders and decoders alike.

use std::sync::{Arc, Mutex};

use super::parallel::rows_mut;
use super::vector_math::multiversion;
use crate::EngineError;

/// cos and sin of `position · inv_freq[j]` for positions `0..positions` and frequencies
/// j < head_dim / 2, computed in f32 as `transformers` computes them (`inv_freq = 1 /
/// theta^(2j / d)`, the product, then cos and sin), so that the angles agree before the
/// trigonometric functions.
#[derive(Debug, Clone)]
pub(crate) struct RopeTable {
    half: usize,
    positions: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table for heads of `head_dim` values (even) and base `theta`.
    pub(crate) fn new(theta: f32, head_dim: usize, positions: usize) -> Result<Self, EngineError> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(EngineError::InvalidModel(format!(
                "rotary embeddings need an even head size, not {head_dim}"
            )));
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(EngineError::InvalidModel(format!(
                "rotary base {theta} is not a positive number"
            )));
        }
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|j| 1.0 / theta.powf((2 * j) as f32 / head_dim as f32))
            .collect();
        let (mut cos, mut sin) = (
            Vec::with_capacity(positions * half),
            Vec::with_capacity(positions * half),
        );
        for p in 0..positions {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            half,
            positions,
            cos,
            sin,
        })
    }

    /// Values per position in [`Self::cos_sin`]: half a head.
    pub(crate) fn half(&self) -> usize {
        self.half
    }

    /// Positions the table covers.
    pub(crate) fn positions(&self) -> usize {
        self.positions
    }

    /// (positions × head_dim/2) cos and sin, row-major: what candle's `rope` takes.
    pub(crate) fn cos_sin(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// Rotates `heads` heads starting at column `first_col` of every row of `rows` (row stride
    /// `stride`); row r is at position `positions[r]`. Rows are split over the kernel threads.
    pub(crate) fn apply(
        &self,
        rows: &mut [f32],
        stride: usize,
        first_col: usize,
        heads: usize,
        positions: &[u32],
    ) -> Result<(), EngineError> {
        if first_col + heads * 2 * self.half > stride || rows.len() != positions.len() * stride {
            return Err(EngineError::Internal(format!(
                "rotary: {heads} heads from column {first_col} in rows of {stride}, {} values for {} positions",
                rows.len(),
                positions.len()
            )));
        }
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.positions) {
            return Err(EngineError::Internal(format!(
                "position {p} is past the {} rotary positions",
                self.positions
            )));
        }
        rows_mut(rows, stride, &|row, run| {
            let count = run.len() / stride;
            rotate(
                self,
                run,
                stride,
                first_col,
                heads,
                &positions[row..row + count],
            );
            Ok(())
        })
    }
}

/// A [`RopeTable`] that grows (doubling) to the longest sequence seen, up to the model's
/// `limit`: a model with a long context does not hold tables for every position up front.
#[derive(Debug)]
pub(crate) struct RopeCache {
    theta: f32,
    head_dim: usize,
    limit: usize,
    table: Mutex<Arc<RopeTable>>,
}

impl RopeCache {
    /// Positions a fresh cache covers.
    const INITIAL: usize = 512;

    /// A cache for heads of `head_dim` values, base `theta`, positions below `limit`.
    pub(crate) fn new(theta: f32, head_dim: usize, limit: usize) -> Result<Self, EngineError> {
        let table = RopeTable::new(theta, head_dim, limit.min(Self::INITIAL))?;
        Ok(Self {
            theta,
            head_dim,
            limit,
            table: Mutex::new(Arc::new(table)),
        })
    }

    /// A table covering positions `0..len`; an error past the model's limit.
    pub(crate) fn covering(&self, len: usize) -> Result<Arc<RopeTable>, EngineError> {
        if len > self.limit {
            return Err(EngineError::Internal(format!(
                "a sequence of {len} tokens is past the model's {} positions",
                self.limit
            )));
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.positions < len {
            let positions = len.next_power_of_two().min(self.limit);
            *table = Arc::new(RopeTable::new(self.theta, self.head_dim, positions)?);
        }
        Ok(Arc::clone(&table))
    }
}

multiversion!(fn rotate(table: &RopeTable, rows: &mut [f32], stride: usize, first_col: usize, heads: usize, positions: &[u32]) => rotate_body);

#[inline(always)]
fn rotate_body(
    table: &RopeTable,
    rows: &mut [f32],
    stride: usize,
    first_col: usize,
    heads: usize,
    positions: &[u32],
) {
    let half = table.half;
    for (row, &p) in rows.chunks_exact_mut(stride).zip(positions) {
        let p = p as usize;
        let cos = &table.cos[p * half..(p + 1) * half];
        let sin = &table.sin[p * half..(p + 1) * half];
        for head in row[first_col..first_col + heads * 2 * half].chunks_exact_mut(2 * half) {
            let (x1, x2) = head.split_at_mut(half);
            for j in 0..half {
                let (a, b) = (x1[j], x2[j]);
                x1[j] = a * cos[j] - b * sin[j];
                x2[j] = b * cos[j] + a * sin[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_halves_by_each_rows_position() {
        let table = RopeTable::new(10000.0, 4, 8).expect("table");
        // Three rows of one head of 4 at column 1 (stride 6), at positions 0, 1, 0.
        let mut rows = vec![0f32; 3 * 6];
        for r in 0..3 {
            rows[r * 6 + 1..r * 6 + 5].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        }
        table.apply(&mut rows, 6, 1, 1, &[0, 1, 0]).expect("runs");
        assert_eq!(&rows[1..5], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(&rows[13..17], &[1.0, 2.0, 3.0, 4.0]);
        // Position 1: frequencies 1 and 1/100.
        let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        let want = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
        ];
        for (g, w) in rows[7..11].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} {w}");
        }
        assert_eq!((rows[6], rows[11]), (0.0, 0.0));
        assert!(table.apply(&mut rows, 6, 1, 1, &[0, 1, 8]).is_err());
        assert!(table.apply(&mut rows, 6, 1, 1, &[0, 1]).is_err());
        assert!(table.apply(&mut rows, 6, 3, 1, &[0, 1, 0]).is_err());
        assert!(RopeTable::new(10000.0, 5, 8).is_err());
        assert!(RopeTable::new(-1.0, 4, 8).is_err());
    }

    #[test]
    fn the_cache_grows_to_the_longest_sequence_within_the_limit() {
        let cache = RopeCache::new(10000.0, 4, 2000).expect("cache");
        assert_eq!(cache.covering(10).expect("short").positions(), 512);
        let grown = cache.covering(600).expect("longer");
        assert_eq!(grown.positions(), 1024);
        assert_eq!(
            cache.covering(1500).expect("near the limit").positions(),
            2000
        );
        assert!(cache.covering(2001).is_err());
        // The first positions do not change as the table grows.
        let small = RopeTable::new(10000.0, 4, 512).expect("table");
        assert_eq!(&grown.cos_sin().0[..1024], &small.cos_sin().0[..1024]);
    }

    #[test]
    fn scores_depend_on_relative_position_only() {
        let cache = RopeCache::new(10000.0, 8, 64).expect("cache");
        let table = cache.covering(16).expect("table");
        let q0: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 1.0).collect();
        let k0: Vec<f32> = (0..8).map(|i| 1.0 - i as f32 * 0.2).collect();
        let dot = |pq: u32, pk: u32| {
            let (mut q, mut k) = (q0.clone(), k0.clone());
            table.apply(&mut q, 8, 0, 1, &[pq]).expect("q");
            table.apply(&mut k, 8, 0, 1, &[pk]).expect("k");
            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((dot(5, 2) - dot(13, 10)).abs() < 1e-4);
    }
}
