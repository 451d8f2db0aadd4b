//! Model families: each one's layer stack, weights and head, behind one trait.
//!
//! A family turns token ids into one raw score per sequence (and, where it has a bi-encoder
//! form, into pooled embeddings). Tokenization, batching, caching and the wire formats are not
//! its business: [`crate::reranker`] does them the same way for every family. A family runs
//! its layers on candle tensors (every device, every precision) or, on the CPU, packed on the
//! [`crate::kernels`] layer; it never names oneDNN.
//!
//! - [`bert`]: BERT, RoBERTa and XLM-RoBERTa cross-encoders and sentence-transformers
//!   bi-encoders.
//! - [`modernbert`]: ModernBERT cross-encoders (rotary embeddings, alternating sliding-window
//!   and global attention, GeGLU).
//! - [`deberta`]: DeBERTa-v2/v3 cross-encoders (disentangled relative attention).
//! - [`qwen3`]: Qwen3 decoder rerankers (causal LM yes/no and converted seq-cls forms).

pub mod bert;
pub mod deberta;
pub mod modernbert;
pub mod padded_input;
pub mod qwen3;

use candle_core::Device;
use candle_nn::VarBuilder;

use crate::heads::Pooling;
use crate::modes::{Kernels, Precision};
use crate::{EngineError, ModelKind};

/// One input row of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// Tokens shared with other rows of the same request that come before `ids` (a decoder's
    /// prompt, instruction and query); empty for encoders. A decoder may compute their keys and
    /// values once for every row that shares them.
    pub prefix: &'a [u32],
    /// The row's own token ids.
    pub ids: &'a [u32],
    /// Token type ids of `ids` (may be shorter: missing ones are 0).
    pub type_ids: &'a [u32],
}

#[allow(clippy::len_without_is_empty)] // a row is never empty
impl Sequence<'_> {
    /// Tokens the row costs in a pass.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.ids.len()
    }
}

/// What a family's loader is given.
pub struct LoadContext<'a> {
    /// The checkpoint's `config.json`, as text: each family reads its own fields.
    pub config_json: &'a str,
    /// The checkpoint's tensors (f32), at the root.
    pub weights: VarBuilder<'a>,
    /// Cross-encoder or bi-encoder, as the architecture says.
    pub kind: ModelKind,
    /// The precision asked for (already adjusted to what the device runs).
    pub precision: Precision,
    /// The kernels asked for (oneDNN only on the CPU, see [`Kernels::on_device`]).
    pub kernels: Kernels,
    pub device: &'a Device,
    /// The tokenizer's padding id, for padded batches.
    pub pad_id: u32,
    /// The model's tokenizer, for families whose scoring rule names tokens (a decoder's
    /// "yes" and "no").
    pub tokenizer: &'a tokenizers::Tokenizer,
}

/// A loaded network of one family.
pub trait Family: Send + Sync {
    /// The kernels actually running the layers (after any fallback).
    fn kernels(&self) -> Kernels;

    /// `candle`, or `onednn (<kernel family>)`, for `/info`.
    fn kernels_name(&self) -> String;

    /// The precision actually in effect (a mode the model's shapes cannot run falls back).
    fn precision(&self) -> Precision;

    /// Bytes of all weights as stored.
    fn weight_bytes(&self) -> usize;

    /// Outputs of the classification head (`None` for bi-encoders and scoring rules that are
    /// not a head, such as a decoder's yes/no logits).
    fn label_count(&self) -> Option<usize>;

    /// The longest sequence the position scheme allows (before the tokenizer's own limit).
    fn max_positions(&self) -> usize;

    /// Whether passes run packed: then a pass is bounded by its real tokens, not by
    /// `rows × longest`.
    fn is_packed(&self) -> bool;

    /// One raw score per row, in order: a logit or log-odds whose sigmoid is the relevance.
    fn score(&self, batch: &[Sequence<'_>]) -> Result<Vec<f32>, EngineError>;

    /// One pooled embedding per row (bi-encoders). Families without a bi-encoder form refuse.
    fn embed(
        &self,
        _batch: &[Sequence<'_>],
        _pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        Err(EngineError::Internal(
            "this model family has no bi-encoder form".into(),
        ))
    }
}
