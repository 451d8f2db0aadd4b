//! Relative position → row of the relative-embedding table (bucketing and clamping).

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
