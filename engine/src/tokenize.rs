//! Pair and single-text encoding with the model's own `tokenizer.json`.
//!
//! Truncation and padding written inside a tokenizer file are ignored (all-MiniLM-L6-v2's file
//! says 128 and fixed padding): we truncate `longest_first` to the model's real limit, as
//! `transformers` and sentence-transformers do, and pad per batch in the encoder.

mod windows;

use tokenizers::{Encoding, PostProcessor, Token, Tokenizer};

pub(crate) use windows::{char_span, overlap_for, tokens_reached, window_spans, WindowSpan};

use super::EngineError;

/// Which end of an over-long input loses tokens (TEI's `truncation_direction`; the parity
/// fixtures spell it `Left` / `Right`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum TruncationDirection {
    #[serde(alias = "left", alias = "LEFT")]
    Left,
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
}

/// How one request wants over-long inputs handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TruncationOptions {
    /// Cut inputs to the model's limit; when false, an over-long input is a validation error.
    pub truncate: bool,
    /// Which end loses tokens.
    pub direction: TruncationDirection,
    /// Cohere's `max_tokens_per_doc`: a cap on each document before pairing.
    pub max_tokens_per_doc: Option<usize>,
}

impl Default for TruncationOptions {
    fn default() -> Self {
        Self {
            truncate: true,
            direction: TruncationDirection::Right,
            max_tokens_per_doc: None,
        }
    }
}

/// Token ids and token type ids of one encoded input, with special tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenIds {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl TokenIds {
    /// Number of tokens, special tokens included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing was encoded (never for a tokenizer that adds special tokens).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// How many characters one token is allowed to cover when raw text is cut before tokenizing.
///
/// A request may carry megabytes of text while the model reads at most `max_length` tokens of it:
/// when truncation is on, text beyond `max_length × MAX_CHARS_PER_TOKEN` characters (from the
/// kept end) is cut before the tokenizer sees it, so tokenization costs at most that much per
/// text. English BPE/WordPiece tokens average ~4 characters; 32 leaves room for long words and
/// whitespace runs, so the kept tokens are those of the whole text except in pathological input
/// (tokens averaging over 32 characters), where the cut text is what gets scored.
pub const MAX_CHARS_PER_TOKEN: usize = 32;

/// A request's query, tokenized once for all of its documents (no special tokens).
///
/// Cross-encoder pairs are built from these ids and each document's, the way the tokenizer's own
/// pair encoding does (it encodes both sides separately, truncates `longest_first` on ids, then
/// adds the template's special tokens), so a query is never tokenized once per document.
#[derive(Debug, Clone)]
pub struct QueryIds {
    /// The query's ids, cut (from the truncation side) to at most the model's limit: no pair can
    /// keep more of the query than that.
    ids: Vec<u32>,
    /// The query's full length in tokens, which `longest_first` truncation decides by.
    full_len: usize,
}

impl QueryIds {
    /// The query's length in tokens before any cut.
    pub fn full_len(&self) -> usize {
        self.full_len
    }
}

/// The model's tokenizer without truncation or padding, with the model's length limit.
pub struct PairTokenizer {
    plain: Tokenizer,
    max_length: usize,
    /// Special tokens the post-processor adds to a pair, and to a single text.
    added_pair: usize,
    added_single: usize,
}

/// Which end of a sequence truncation keeps.
fn keep(ids: &[u32], n: usize, direction: TruncationDirection) -> &[u32] {
    if ids.len() <= n {
        return ids;
    }
    match direction {
        TruncationDirection::Right => &ids[..n],
        TruncationDirection::Left => &ids[ids.len() - n..],
    }
}

/// `longest_first` truncation of a pair to `budget` ids (special tokens already subtracted),
/// exactly as the `tokenizers` crate computes it: the kept lengths of (first, second).
fn longest_first(first: usize, second: usize, budget: usize) -> (usize, usize) {
    if first + second <= budget {
        return (first, second);
    }
    let swapped = first > second;
    // Only the shorter side's length decides what the longer one keeps.
    let mut n1 = first.min(second);
    let mut n2 = if n1 > budget { n1 } else { n1.max(budget - n1) };
    if n1 + n2 > budget {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
    }
    let (a, b) = if swapped { (n2, n1) } else { (n1, n2) };
    // Truncating to a length at or over a sequence's own never lengthens it.
    (a.min(first), b.min(second))
}

/// The last `max_chars` characters' worth of `text` from the end truncation keeps (whole text
/// when shorter), cut at a character boundary.
fn char_bounded(text: &str, max_chars: usize, direction: TruncationDirection) -> &str {
    if text.len() <= max_chars {
        return text; // bytes ≥ chars, so no cut is needed
    }
    match direction {
        TruncationDirection::Right => match text.char_indices().nth(max_chars) {
            Some((end, _)) => &text[..end],
            None => text,
        },
        TruncationDirection::Left => {
            let count = text.chars().count();
            if count <= max_chars {
                return text;
            }
            match text.char_indices().nth(count - max_chars) {
                Some((start, _)) => &text[start..],
                None => text,
            }
        }
    }
}

impl PairTokenizer {
    /// Wraps `tokenizer`, limiting inputs to `max_length` tokens (special tokens included).
    pub fn new(mut tokenizer: Tokenizer, max_length: usize) -> Result<Self, EngineError> {
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let added = |pair: bool| {
            tokenizer
                .get_post_processor()
                .map_or(0, |p| p.added_tokens(pair))
        };
        let (added_pair, added_single) = (added(true), added(false));
        if max_length <= added_pair {
            return Err(EngineError::InvalidModel(format!(
                "max length {max_length} leaves no room beside {added_pair} special tokens"
            )));
        }
        Ok(Self {
            plain: tokenizer,
            max_length,
            added_pair,
            added_single,
        })
    }

    /// The padding id `tokenizer` declares, else its `[PAD]` / `<pad>` token, else 0 (padded
    /// positions are masked, so any id in the vocabulary serves).
    pub fn pad_id_of(tokenizer: &Tokenizer) -> u32 {
        tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
            })
            .unwrap_or(0)
    }

    /// The most characters of one text worth tokenizing when at most `tokens` are kept.
    fn char_bound(tokens: usize) -> usize {
        tokens.saturating_add(1).saturating_mul(MAX_CHARS_PER_TOKEN)
    }

    /// Ids of `text` without special tokens; when truncating, the text is first cut to the
    /// characters `keep_tokens` tokens can cover (see [`MAX_CHARS_PER_TOKEN`]).
    fn ids_of(
        &self,
        text: &str,
        keep_tokens: usize,
        opts: &TruncationOptions,
        direction: TruncationDirection,
    ) -> Result<Vec<u32>, EngineError> {
        let text = if opts.truncate {
            char_bounded(text, Self::char_bound(keep_tokens), direction)
        } else {
            text
        };
        let encoding = self
            .plain
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// A document's ids, capped to `max_tokens_per_doc` (its head) when set.
    fn document_ids(
        &self,
        document: &str,
        opts: &TruncationOptions,
    ) -> Result<Vec<u32>, EngineError> {
        match opts.max_tokens_per_doc {
            Some(cap) => {
                let capped = TruncationOptions {
                    truncate: true,
                    ..*opts
                };
                let mut ids = self.ids_of(document, cap, &capped, TruncationDirection::Right)?;
                ids.truncate(cap);
                Ok(ids)
            }
            None => self.ids_of(document, self.max_length, opts, opts.direction),
        }
    }

    /// Tokenizes a request's query once, for [`Self::encode_pair_with`].
    pub fn encode_query(
        &self,
        query: &str,
        opts: &TruncationOptions,
    ) -> Result<QueryIds, EngineError> {
        let ids = self.ids_of(query, self.max_length, opts, opts.direction)?;
        let full_len = ids.len();
        let ids = keep(&ids, self.max_length, opts.direction).to_vec();
        Ok(QueryIds { ids, full_len })
    }

    /// Encodes a (query, document) pair from the query's ids: `longest_first` truncation to the
    /// model's limit on ids, then the tokenizer's own template adds special tokens and token
    /// types. Fails on a pair over the limit when truncation is off.
    pub fn encode_pair_with(
        &self,
        query: &QueryIds,
        document: &str,
        opts: &TruncationOptions,
    ) -> Result<TokenIds, EngineError> {
        let doc = self.document_ids(document, opts)?;
        self.check_length(query.full_len + doc.len() + self.added_pair, opts)?;
        let budget = self.max_length - self.added_pair;
        let (n_query, n_doc) = longest_first(query.full_len, doc.len(), budget);
        self.finish(
            keep(&query.ids, n_query, opts.direction),
            Some(keep(&doc, n_doc, opts.direction)),
        )
    }

    /// Encodes one text on its own (a bi-encoder input); `max_tokens_per_doc` caps it too.
    pub fn encode_text(
        &self,
        text: &str,
        opts: &TruncationOptions,
    ) -> Result<TokenIds, EngineError> {
        let ids = self.document_ids(text, opts)?;
        self.check_length(ids.len() + self.added_single, opts)?;
        let budget = self.max_length.saturating_sub(self.added_single);
        self.finish(keep(&ids, budget, opts.direction), None)
    }

    /// An input of `total` tokens (special tokens included) over the model's limit is an error
    /// unless it is to be truncated.
    fn check_length(&self, total: usize, opts: &TruncationOptions) -> Result<(), EngineError> {
        if total > self.max_length && !opts.truncate {
            return Err(EngineError::InputTooLong {
                given: total,
                max: self.max_length,
            });
        }
        Ok(())
    }

    /// Adds the template's special tokens and token types to already-truncated ids.
    fn finish(&self, first: &[u32], second: Option<&[u32]>) -> Result<TokenIds, EngineError> {
        let encoding = |ids: &[u32], type_id: u32| {
            let tokens = ids
                .iter()
                .map(|&id| Token::new(id, String::new(), (0, 0)))
                .collect();
            Encoding::from_tokens(tokens, type_id)
        };
        let processed = self
            .plain
            .post_process(encoding(first, 0), second.map(|s| encoding(s, 1)), true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(TokenIds {
            ids: processed.get_ids().to_vec(),
            type_ids: processed.get_type_ids().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arithmetic of `tokenizers`' `truncate_encodings` (LongestFirst), written out.
    fn reference(first: usize, second: usize, max: usize) -> (usize, usize) {
        if first + second <= max {
            return (first, second);
        }
        let (mut n1, mut n2) = (first, second);
        let swap = n1 > n2;
        if swap {
            std::mem::swap(&mut n1, &mut n2);
        }
        n2 = if n1 > max { n1 } else { n1.max(max - n1) };
        if n1 + n2 > max {
            n1 = max / 2;
            n2 = n1 + max % 2;
        }
        if swap {
            std::mem::swap(&mut n1, &mut n2);
        }
        (first.min(n1), second.min(n2))
    }

    #[test]
    fn longest_first_matches_the_tokenizers_crate() {
        for max in [1, 2, 7, 125, 509] {
            for first in (0..1200).step_by(7) {
                for second in (0..1200).step_by(11) {
                    assert_eq!(
                        longest_first(first, second, max),
                        reference(first, second, max),
                        "first {first}, second {second}, max {max}"
                    );
                }
            }
        }
    }

    #[test]
    fn char_bounds_keep_the_truncation_side() {
        assert_eq!(char_bounded("abcdef", 3, TruncationDirection::Right), "abc");
        assert_eq!(char_bounded("abcdef", 3, TruncationDirection::Left), "def");
        assert_eq!(char_bounded("ab", 3, TruncationDirection::Left), "ab");
        // Multi-byte characters are never split.
        assert_eq!(char_bounded("ééééé", 2, TruncationDirection::Right), "éé");
        assert_eq!(char_bounded("ééééé", 2, TruncationDirection::Left), "éé");
    }
}
