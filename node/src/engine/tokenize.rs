//! Pair and single-text encoding with the model's own `tokenizer.json`.
//!
//! Truncation and padding written inside a tokenizer file are ignored (all-MiniLM-L6-v2's file
//! says 128 and fixed padding): we truncate `longest_first` to the model's real limit, as
//! `transformers` and sentence-transformers do, and pad per batch in the encoder.

use rerank_shared::api::TruncationDirection;
use tokenizers::{
    Tokenizer, TruncationDirection as TkDirection, TruncationParams, TruncationStrategy,
};

use super::EngineError;

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

/// A tokenizer set up three ways: untruncated (to measure), and truncating from either end.
pub struct PairTokenizer {
    plain: Tokenizer,
    truncate_right: Tokenizer,
    truncate_left: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

impl PairTokenizer {
    /// Wraps `tokenizer`, limiting inputs to `max_length` tokens (special tokens included).
    pub fn new(mut tokenizer: Tokenizer, max_length: usize) -> Result<Self, EngineError> {
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
            })
            .unwrap_or(0);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let plain = tokenizer;
        let truncating = |direction| -> Result<Tokenizer, EngineError> {
            let mut t = plain.clone();
            t.with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction,
            }))
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            Ok(t)
        };
        Ok(Self {
            truncate_right: truncating(TkDirection::Right)?,
            truncate_left: truncating(TkDirection::Left)?,
            plain,
            max_length,
            pad_id,
        })
    }

    /// The longest input the model accepts, in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id used to pad batches.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Encodes a (query, document) pair; `max_tokens_per_doc` caps the document first.
    pub fn encode_pair(
        &self,
        query: &str,
        document: &str,
        opts: &TruncationOptions,
    ) -> Result<TokenIds, EngineError> {
        let document = self.capped(document, opts)?;
        self.encode_checked(query, Some(document), opts)
    }

    /// Encodes one text on its own (a bi-encoder input); `max_tokens_per_doc` caps it too.
    pub fn encode_text(
        &self,
        text: &str,
        opts: &TruncationOptions,
    ) -> Result<TokenIds, EngineError> {
        let text = self.capped(text, opts)?;
        self.encode_checked(text, None, opts)
    }

    fn capped<'a>(&self, text: &'a str, opts: &TruncationOptions) -> Result<&'a str, EngineError> {
        match opts.max_tokens_per_doc {
            Some(cap) => self.cap_tokens(text, cap),
            None => Ok(text),
        }
    }

    fn encode_checked(
        &self,
        first: &str,
        second: Option<&str>,
        opts: &TruncationOptions,
    ) -> Result<TokenIds, EngineError> {
        let full = self.run(&self.plain, first, second)?;
        if full.len() <= self.max_length {
            return Ok(full);
        }
        if !opts.truncate {
            return Err(EngineError::InputTooLong {
                given: full.len(),
                max: self.max_length,
            });
        }
        let tokenizer = match opts.direction {
            TruncationDirection::Right => &self.truncate_right,
            TruncationDirection::Left => &self.truncate_left,
        };
        self.run(tokenizer, first, second)
    }

    /// The longest prefix of `text` that encodes to at most `cap` tokens (no special tokens).
    fn cap_tokens<'a>(&self, text: &'a str, cap: usize) -> Result<&'a str, EngineError> {
        let encoding = self
            .plain
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        if encoding.len() <= cap {
            return Ok(text);
        }
        let end = match cap {
            0 => 0,
            n => encoding
                .get_offsets()
                .get(n - 1)
                .map_or(text.len(), |o| o.1),
        };
        Ok(text.get(..end).unwrap_or(text))
    }

    fn run(
        &self,
        tokenizer: &Tokenizer,
        first: &str,
        second: Option<&str>,
    ) -> Result<TokenIds, EngineError> {
        let encoding = match second {
            Some(second) => tokenizer.encode((first, second), true),
            None => tokenizer.encode(first, true),
        }
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(TokenIds {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
    }
}
