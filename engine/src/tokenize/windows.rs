//! Long documents as windows ("chunking"): a document longer than the model's window is scored
//! as several (query, window) pairs, so relevant text past the first window counts.
//!
//! The rule is defined on token ids, so that it is exact and reproducible (README, *Long
//! documents*): the query `q` and document `d` are tokenized separately without special tokens;
//! a query longer than half the model's limit `L` is cut to `⌊L/2⌋` ids; the window is
//! `W = L − specials − len(q)` and the stride `W − overlap`; a document of at most `W` tokens is
//! one window, a longer one has windows starting at `0, stride, 2·stride, …` for every start
//! `< len(d) − overlap`, at most `max_chunks` of them, each `d[start .. start + W]`, paired with
//! `q` through the model's own template.

use std::ops::Range;

use tokenizers::Tokenizer;

use super::{keep, PairTokenizer, QueryIds, TokenIds, TruncationOptions, MAX_CHARS_PER_TOKEN};
use crate::{ChunkOptions, EngineError};

/// A window's token span, its number and its character span in the document.
pub(crate) struct WindowSpan {
    pub(crate) index: usize,
    pub(crate) tokens: Range<usize>,
    pub(crate) chars: Range<usize>,
}

/// The overlap `chunks` asks for within windows of `window` tokens: one eighth of the window
/// when unset; an error when it leaves no stride.
pub(crate) fn overlap_for(window: usize, chunks: &ChunkOptions) -> Result<usize, EngineError> {
    if window == 0 {
        return Err(EngineError::InvalidChunking(
            "the query leaves no room for a document window".into(),
        ));
    }
    let overlap = chunks.overlap.unwrap_or(window / 8);
    if overlap >= window {
        return Err(EngineError::InvalidChunking(format!(
            "chunk_overlap {overlap} must be less than the window of {window} tokens this query \
             leaves"
        )));
    }
    Ok(overlap)
}

/// The most document tokens any window reaches: `(max_chunks − 1) · stride + window`. Cutting a
/// longer document to this many tokens changes none of its windows, so nothing past it needs
/// tokenizing.
pub(crate) fn tokens_reached(window: usize, overlap: usize, chunks: &ChunkOptions) -> usize {
    let stride = window - overlap;
    chunks
        .max_chunks
        .saturating_sub(1)
        .saturating_mul(stride)
        .saturating_add(window)
}

/// The token spans of the windows of a document of `len` tokens.
pub(crate) fn window_spans(
    len: usize,
    window: usize,
    overlap: usize,
    max_chunks: usize,
) -> Vec<Range<usize>> {
    if len <= window {
        return std::iter::once(0..len).collect();
    }
    let stride = window.saturating_sub(overlap).max(1);
    (0..len - overlap)
        .step_by(stride)
        .take(max_chunks.max(1))
        .map(|start| start..(start + window).min(len))
        .collect()
}

/// The character span of `tokens` given each token's character offsets (an empty span at the
/// end of the covered text for an empty window).
pub(crate) fn char_span(offsets: &[(usize, usize)], tokens: &Range<usize>) -> Range<usize> {
    match (offsets.get(tokens.start), tokens.end.checked_sub(1)) {
        (Some(first), Some(last)) if tokens.end > tokens.start => {
            let end = offsets.get(last).map_or(first.1, |o| o.1);
            first.0..end.max(first.0)
        }
        _ => {
            let end = offsets.last().map_or(0, |o| o.1);
            end..end
        }
    }
}

/// Token ids and each token's (start, end) character offsets.
type IdsWithOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A document's ids (no special tokens) and each one's character offsets, at most `cap` of
/// them; text past what `cap` tokens can cover is not tokenized (see [`MAX_CHARS_PER_TOKEN`]).
pub(crate) fn document_tokens(
    tokenizer: &Tokenizer,
    document: &str,
    cap: usize,
) -> Result<IdsWithOffsets, EngineError> {
    let max_chars = cap.saturating_add(1).saturating_mul(MAX_CHARS_PER_TOKEN);
    let text = match document.char_indices().nth(max_chars) {
        Some((end, _)) => &document[..end],
        None => document,
    };
    let encoding = tokenizer
        .encode_char_offsets(text, false)
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let mut ids = encoding.get_ids().to_vec();
    let mut offsets = encoding.get_offsets().to_vec();
    ids.truncate(cap);
    offsets.truncate(cap);
    Ok((ids, offsets))
}

impl PairTokenizer {
    /// A document's windows paired with the query through the tokenizer's pair template.
    pub fn cross_windows(
        &self,
        query: &QueryIds,
        document: &str,
        opts: &TruncationOptions,
        chunks: &ChunkOptions,
    ) -> Result<Vec<(TokenIds, WindowSpan)>, EngineError> {
        let q = keep(&query.ids, self.max_length / 2, opts.direction);
        let window = self.max_length.saturating_sub(self.added_pair + q.len());
        self.windows(document, window, opts, chunks, |w| self.finish(q, Some(w)))
    }

    /// A document's windows on their own (bi-encoders: each is embedded and compared with the
    /// query).
    pub fn single_windows(
        &self,
        document: &str,
        opts: &TruncationOptions,
        chunks: &ChunkOptions,
    ) -> Result<Vec<(TokenIds, WindowSpan)>, EngineError> {
        let window = self.max_length.saturating_sub(self.added_single);
        self.windows(document, window, opts, chunks, |w| self.finish(w, None))
    }

    fn windows(
        &self,
        document: &str,
        window: usize,
        opts: &TruncationOptions,
        chunks: &ChunkOptions,
        input: impl Fn(&[u32]) -> Result<TokenIds, EngineError>,
    ) -> Result<Vec<(TokenIds, WindowSpan)>, EngineError> {
        let overlap = overlap_for(window, chunks)?;
        let cap = tokens_reached(window, overlap, chunks)
            .min(opts.max_tokens_per_doc.unwrap_or(usize::MAX));
        let (ids, offsets) = document_tokens(&self.plain, document, cap)?;
        window_spans(ids.len(), window, overlap, chunks.max_chunks)
            .into_iter()
            .enumerate()
            .map(|(index, tokens)| {
                let pair = input(&ids[tokens.clone()])?;
                let chars = char_span(&offsets, &tokens);
                Ok((
                    pair,
                    WindowSpan {
                        index,
                        tokens,
                        chars,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_stride_and_stop_at_the_cap() {
        assert_eq!(window_spans(5, 8, 1, 4), vec![0..5]);
        assert_eq!(window_spans(8, 8, 1, 4), vec![0..8]);
        // 9 tokens, window 8, overlap 1: starts 0 and 7 (< 9 − 1).
        assert_eq!(window_spans(9, 8, 1, 4), vec![0..8, 7..9]);
        // Starts 0, 6, 12 (< 20 − 2), or the first two under a cap of 2.
        assert_eq!(window_spans(20, 8, 2, 9), vec![0..8, 6..14, 12..20]);
        assert_eq!(window_spans(20, 8, 2, 2), vec![0..8, 6..14]);
        assert_eq!(window_spans(21, 8, 2, 9), vec![0..8, 6..14, 12..20, 18..21]);
        // A start at len − overlap would only repeat the previous window's tail.
        assert_eq!(window_spans(14, 8, 2, 9), vec![0..8, 6..14]);
        assert_eq!(window_spans(0, 8, 1, 4), vec![0..0]);
    }

    #[test]
    fn cutting_the_document_where_the_windows_end_changes_no_window() {
        for (window, overlap, max) in [(8, 1, 3), (9, 0, 2), (12, 5, 4), (8, 7, 1)] {
            let chunks = ChunkOptions {
                max_chunks: max,
                overlap: Some(overlap),
            };
            let reached = tokens_reached(window, overlap, &chunks);
            for len in reached..reached + 40 {
                assert_eq!(
                    window_spans(len, window, overlap, max),
                    window_spans(reached, window, overlap, max),
                    "len {len}, window {window}, overlap {overlap}, max {max}"
                );
            }
        }
    }

    #[test]
    fn the_overlap_defaults_to_an_eighth_and_must_leave_a_stride() {
        let chunks = |overlap| ChunkOptions {
            max_chunks: 2,
            overlap,
        };
        assert_eq!(overlap_for(100, &chunks(None)).ok(), Some(12));
        assert_eq!(overlap_for(100, &chunks(Some(99))).ok(), Some(99));
        assert!(overlap_for(100, &chunks(Some(100))).is_err());
        assert!(overlap_for(0, &chunks(None)).is_err());
    }

    #[test]
    fn char_spans_run_from_the_first_token_to_the_last() {
        let offsets = [(0, 3), (4, 9), (9, 12), (13, 20)];
        assert_eq!(char_span(&offsets, &(1..3)), 4..12);
        assert_eq!(char_span(&offsets, &(0..4)), 0..20);
        assert_eq!(char_span(&offsets, &(0..0)), 20..20);
        assert_eq!(char_span(&[], &(0..0)), 0..0);
    }
}
