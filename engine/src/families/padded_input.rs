//! Batches as candle tensors for a family's candle layers: padded rows with their masks, one
//! packed row, and packed hidden states scattered back into padded rows for the heads.

use candle_core::{DType, Device, Tensor};

use crate::EngineError;

/// The additive mask value for padded keys: finite in every dtype we run, and far enough below
/// any attention score that `exp` of it is exactly zero in f32.
pub const MASKED_SCORE: f32 = -1.0e30;

/// A padded batch ready for the encoder.
#[derive(Debug)]
pub struct EncoderInput {
    /// (batch, seq) token ids.
    pub input_ids: Tensor,
    /// (batch, seq) token type ids.
    pub token_type_ids: Tensor,
    /// (batch, seq) position ids.
    pub position_ids: Tensor,
    /// (batch, 1, 1, seq) additive f32 mask: 0 for real tokens, [`MASKED_SCORE`] for padding.
    pub attention_bias: Tensor,
    /// (batch, seq) f32: 1 for real tokens, 0 for padding (pooling needs it).
    pub token_mask: Tensor,
}

impl EncoderInput {
    /// All `sequences` concatenated into one row of tokens (batch 1), for the packed encoder:
    /// positions restart at every sequence; the mask and bias are unused there.
    pub fn packed(
        sequences: &[(&[u32], &[u32])],
        position_offset: usize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let total: usize = sequences.iter().map(|(ids, _)| ids.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for (seq_ids, seq_types) in sequences {
            ids.extend_from_slice(seq_ids);
            types.extend((0..seq_ids.len()).map(|i| seq_types.get(i).copied().unwrap_or(0)));
            positions.extend((0..seq_ids.len()).map(|i| (position_offset + i) as u32));
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (1, total), device)?,
            token_type_ids: Tensor::from_vec(types, (1, total), device)?,
            position_ids: Tensor::from_vec(positions, (1, total), device)?,
            attention_bias: Tensor::zeros((1, 1, 1, total), DType::F32, device)?,
            token_mask: Tensor::ones((1, total), DType::F32, device)?,
        })
    }

    /// Right-pads `sequences` (ids and type ids per sequence) to the longest one.
    pub fn pad(
        sequences: &[(&[u32], &[u32])],
        pad_id: u32,
        position_offset: usize,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let batch = sequences.len();
        let seq = sequences
            .iter()
            .map(|(ids, _)| ids.len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![pad_id; batch * seq];
        let mut types = vec![0u32; batch * seq];
        let mut positions = vec![0u32; batch * seq];
        let mut mask = vec![0f32; batch * seq];
        let mut bias = vec![MASKED_SCORE; batch * seq];
        for (row, (seq_ids, seq_types)) in sequences.iter().enumerate() {
            let base = row * seq;
            for (i, &id) in seq_ids.iter().enumerate() {
                ids[base + i] = id;
                types[base + i] = seq_types.get(i).copied().unwrap_or(0);
                positions[base + i] = (position_offset + i) as u32;
                mask[base + i] = 1.0;
                bias[base + i] = 0.0;
            }
            // Pads take the padding position, as RoBERTa's position ids do; they are masked anyway.
            for p in positions[base + seq_ids.len()..base + seq].iter_mut() {
                *p = position_offset.saturating_sub(1) as u32;
            }
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (batch, seq), device)?,
            token_type_ids: Tensor::from_vec(types, (batch, seq), device)?,
            position_ids: Tensor::from_vec(positions, (batch, seq), device)?,
            attention_bias: Tensor::from_vec(bias, (batch, 1, 1, seq), device)?,
            token_mask: Tensor::from_vec(mask, (batch, seq), device)?,
        })
    }
}

/// Scatters packed rows back into a zero-padded (batch, longest, hidden) tensor plus its mask.
pub fn unpack(
    packed: &[f32],
    offsets: &[i64],
    hidden: usize,
    device: &Device,
) -> Result<(Tensor, Tensor), EngineError> {
    let batch = offsets.len().saturating_sub(1);
    let lengths: Vec<usize> = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let mut padded = vec![0f32; batch * longest * hidden];
    let mut mask = vec![0f32; batch * longest];
    for (row, (&start, &len)) in offsets.iter().zip(&lengths).enumerate() {
        let start = start as usize * hidden;
        let dst = row * longest * hidden;
        padded[dst..dst + len * hidden].copy_from_slice(&packed[start..start + len * hidden]);
        mask[row * longest..row * longest + len].fill(1.0);
    }
    Ok((
        Tensor::from_vec(padded, (batch, longest, hidden), device)?,
        Tensor::from_vec(mask, (batch, longest), device)?,
    ))
}
