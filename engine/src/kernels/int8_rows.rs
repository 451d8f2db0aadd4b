//! The terms the fused int8 row passes share (epilogue, GELU or LayerNorm, requantization):
//! what a quantized activation row carries and what an int8 projection adds per column. One
//! definition for both backends, so a family builds them the same way with or without oneDNN.

/// Per-row quantization parameters of u8 activations, `x ≈ scale · (q − zero_point)`: read as
/// those of a GEMM's input, replaced by those of the requantized output.
// Without oneDNN every op that takes them fails first, so nothing reads the fields there.
#[cfg_attr(not(has_onednn), allow(dead_code))]
pub struct RowQuant<'a> {
    pub scales: &'a mut [f32],
    pub zero_points: &'a mut [f32],
}

/// An int8 projection's per-column epilogue terms: `comp[c]` = weight scale × the column's
/// weight sum (what a row's zero point contributes), and the bias.
#[derive(Clone, Copy)]
#[cfg_attr(not(has_onednn), allow(dead_code))]
pub struct Int8Columns<'a> {
    pub comp: &'a [f32],
    pub bias: &'a [f32],
}
