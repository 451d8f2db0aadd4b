//! The Qwen3-Reranker prompt, tokenized the way its model card does, split for prefix reuse.
//!
//! The card (Qwen/Qwen3-Reranker-*) scores a pair as the next-token odds of "yes" against "no"
//! after
//!
//! ```text
//! <|im_start|>system\nJudge whether … "yes" or "no".<|im_end|>\n<|im_start|>user\n   (prefix)
//! <Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}                (middle)
//! <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n                          (suffix)
//! ```
//!
//! The prefix and suffix are tokenized once; the middle is tokenized as one string with no
//! special tokens added and cut from its end to `max_length − |prefix| − |suffix|` tokens. The
//! converted seq-cls checkpoints are run on the same prompt.
//!
//! Every document of a request shares the prefix and `<Instruct>: …\n<Query>: …\n`, so each pair
//! is split into shared ids (run once per request) and its own ids. The split is exact by
//! construction: the middle is still tokenized whole, and it is split only where its first
//! tokens are exactly the tokens of the shared text. With Qwen's byte-level BPE, whose
//! pre-tokenizer ends a piece at every newline, that always holds; where it does not (another
//! tokenizer), only the system prefix — tokenized on its own by the card too — is shared, and
//! the scores stay exact.

use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::tokenize::{
    char_span, overlap_for, tokens_reached, window_spans, TokenIds, TruncationOptions,
    MAX_CHARS_PER_TOKEN,
};
use crate::{ChunkOptions, DocumentWindow, EncodedPair, EngineError, PreparedQuery};

/// The card's system prefix.
pub const PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
/// The card's suffix: the assistant turn with an empty thinking block.
pub const SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
/// The card's instruction when a request gives none.
pub const DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";
/// What introduces the document inside the middle.
const DOCUMENT_LABEL: &str = "<Document>: ";

/// The tokenizer with the template's fixed ids and the length limit.
pub struct DecoderTokenizer {
    plain: Tokenizer,
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    /// Tokens of `<Document>: ` alone, which `max_tokens_per_doc` does not count.
    label_len: usize,
    max_length: usize,
    /// The instruction of requests that name none: `RERANK_INSTRUCTION`, else the card's.
    default_instruction: String,
}

impl DecoderTokenizer {
    /// Wraps `tokenizer` (its own truncation and padding switched off) for inputs of at most
    /// `max_length` tokens, prefix and suffix included; `default_instruction` (else the card's)
    /// serves requests that name none.
    pub fn new(
        tokenizer: &Tokenizer,
        max_length: usize,
        default_instruction: Option<&str>,
    ) -> Result<Self, EngineError> {
        let mut plain = tokenizer.clone();
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let prefix_ids = encode(&plain, PREFIX)?;
        let suffix_ids = encode(&plain, SUFFIX)?;
        let label_len = encode(&plain, DOCUMENT_LABEL)?.len();
        if prefix_ids.len() + suffix_ids.len() >= max_length {
            return Err(EngineError::InvalidModel(format!(
                "the reranker prompt takes {} tokens, not less than the {max_length}-token limit",
                prefix_ids.len() + suffix_ids.len()
            )));
        }
        Ok(Self {
            plain,
            prefix_ids,
            suffix_ids,
            label_len,
            max_length,
            default_instruction: default_instruction
                .unwrap_or(DEFAULT_INSTRUCTION)
                .to_string(),
        })
    }

    /// Tokens the middle may keep.
    fn middle_budget(&self) -> usize {
        self.max_length - self.prefix_ids.len() - self.suffix_ids.len()
    }

    /// The instruction of requests that name none.
    pub fn default_instruction(&self) -> &str {
        &self.default_instruction
    }

    /// Tokenizes what every document of a request shares; `None` is the default instruction.
    pub fn prepare_query(
        &self,
        query: &str,
        instruction: Option<&str>,
    ) -> Result<PreparedQuery, EngineError> {
        let instruction = instruction.unwrap_or(&self.default_instruction);
        let text = format!("<Instruct>: {instruction}\n<Query>: {query}\n");
        let mut ids = self.prefix_ids.clone();
        ids.extend(encode(&self.plain, &text)?);
        Ok(PreparedQuery::Decoder {
            shared: Arc::new(TokenIds {
                ids,
                type_ids: Vec::new(),
            }),
            text: text.into(),
        })
    }

    /// Tokenizes one document against a prepared query: truncation cuts the middle's end (the
    /// card's rule, whatever `opts.direction` says); without truncation an over-long input is
    /// refused. `max_tokens_per_doc` caps the document's own tokens after `<Document>: `.
    pub fn encode_document(
        &self,
        shared: &Arc<TokenIds>,
        text: &str,
        document: &str,
        opts: &TruncationOptions,
    ) -> Result<EncodedPair, EngineError> {
        let p = self.prefix_ids.len();
        let text_ids = shared.ids.get(p..).ok_or_else(|| {
            EngineError::Internal("a prepared query shorter than the prompt".into())
        })?;
        // The document's cap applies first, as for encoders; then the model's limit.
        let capped = opts
            .max_tokens_per_doc
            .map_or(usize::MAX, |cap| text_ids.len() + self.label_len + cap);
        let budget = self.middle_budget().min(capped);
        // Tokenizing more text than the kept tokens can cover is wasted (megabyte documents).
        let document = if opts.truncate || opts.max_tokens_per_doc.is_some() {
            char_prefix(document, (budget + 1).saturating_mul(MAX_CHARS_PER_TOKEN))
        } else {
            document
        };
        let mut ids = encode(&self.plain, &format!("{text}{DOCUMENT_LABEL}{document}"))?;
        ids.truncate(capped);
        if ids.len() > self.middle_budget() && !opts.truncate {
            return Err(EngineError::InputTooLong {
                given: p + ids.len() + self.suffix_ids.len(),
                max: self.max_length,
            });
        }
        ids.truncate(budget);
        Ok(self.split(shared, ids))
    }

    /// A document's windows (README, *Long documents*): the middle is tokenized whole as for
    /// [`Self::encode_document`]; its tokens up to `<Document>: ` stay in every window, and the
    /// document's own tokens are split into windows of what the middle's budget leaves.
    pub fn encode_windows(
        &self,
        shared: &Arc<TokenIds>,
        text: &str,
        document: &str,
        opts: &TruncationOptions,
        chunks: &ChunkOptions,
    ) -> Result<Vec<DocumentWindow>, EngineError> {
        let head_text = format!("{text}{DOCUMENT_LABEL}");
        let head_chars = head_text.chars().count();
        // No window reaches past max_chunks × the middle's budget of document tokens.
        let reach = chunks.max_chunks.saturating_mul(self.middle_budget());
        let document = char_prefix(
            document,
            reach.saturating_add(1).saturating_mul(MAX_CHARS_PER_TOKEN),
        );
        let encoding = self
            .plain
            .encode_char_offsets(format!("{head_text}{document}"), false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let (ids, offsets) = (encoding.get_ids(), encoding.get_offsets());
        // A token that straddles the label's end (a space joined to the first word) is the
        // document's.
        let head = offsets
            .iter()
            .position(|o| o.1 > head_chars)
            .unwrap_or(ids.len());
        let window = self.middle_budget().saturating_sub(head);
        let overlap = overlap_for(window, chunks)?;
        let cap = tokens_reached(window, overlap, chunks)
            .min(opts.max_tokens_per_doc.unwrap_or(usize::MAX));
        let doc_ids = &ids[head..(head + cap).min(ids.len())];
        let doc_offsets: Vec<(usize, usize)> = offsets[head..head + doc_ids.len()]
            .iter()
            .map(|o| (o.0.saturating_sub(head_chars), o.1 - head_chars))
            .collect();
        window_spans(doc_ids.len(), window, overlap, chunks.max_chunks)
            .into_iter()
            .enumerate()
            .map(|(index, tokens)| {
                let mut middle = ids[..head].to_vec();
                middle.extend_from_slice(&doc_ids[tokens.clone()]);
                Ok(DocumentWindow {
                    pair: self.split(shared, middle),
                    index,
                    chars: char_span(&doc_offsets, &tokens),
                    tokens,
                })
            })
            .collect()
    }

    /// The pair of a middle's `ids` (already within the budget): the part equal to the shared
    /// text is the shared prefix, the rest and the suffix the pair's own.
    fn split(&self, shared: &Arc<TokenIds>, mut ids: Vec<u32>) -> EncodedPair {
        let p = self.prefix_ids.len();
        let text_ids = shared.ids.get(p..).unwrap_or_default();
        // Where the cut reaches into the shared text, every document keeps the same shorter part.
        let n = text_ids.len().min(ids.len());
        let own_from = if ids[..n] == text_ids[..n] { n } else { 0 };
        let shared = if own_from == text_ids.len() {
            Arc::clone(shared)
        } else {
            Arc::new(TokenIds {
                ids: shared.ids[..p + own_from].to_vec(),
                type_ids: Vec::new(),
            })
        };
        let mut own = ids.split_off(own_from);
        own.extend_from_slice(&self.suffix_ids);
        EncodedPair::Decoder {
            shared,
            own: TokenIds {
                ids: own,
                type_ids: Vec::new(),
            },
        }
    }
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, EngineError> {
    tokenizer
        .encode_fast(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| EngineError::Tokenizer(e.to_string()))
}

/// The first `max_chars` characters of `text` (all of it when shorter).
fn char_prefix(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/qwen3-reranker/tokenizer.json"
        );
        Tokenizer::from_file(path).expect("fixture tokenizer")
    }

    fn split(pair: &EncodedPair) -> (&[u32], &[u32]) {
        match pair {
            EncodedPair::Decoder { shared, own } => (&shared.ids, &own.ids),
            _ => panic!("not a decoder pair"),
        }
    }

    #[test]
    fn a_split_that_tokenizes_differently_falls_back_to_the_system_prefix() {
        let tok = DecoderTokenizer::new(&tokenizer(), 120, None).expect("template");
        // A prepared query whose text does not end where the middle's tokens break: the shared
        // text's ids are not a prefix of the middle's ids, so only the system prompt is shared.
        let PreparedQuery::Decoder { shared, .. } = tok.prepare_query("abc", None).expect("query")
        else {
            panic!("not a decoder query")
        };
        let pair = tok
            .encode_document(&shared, "<Instruct>: x", "d", &TruncationOptions::default())
            .expect("pair");
        let (prefix, own) = split(&pair);
        assert_eq!(prefix, tok.prefix_ids.as_slice());
        let whole = encode(&tok.plain, "<Instruct>: x<Document>: d").expect("ids");
        assert_eq!(&own[..whole.len()], whole.as_slice());
        assert_eq!(&own[whole.len()..], tok.suffix_ids.as_slice());
    }

    #[test]
    fn max_tokens_per_doc_caps_the_document_and_no_truncation_refuses() {
        let tok = DecoderTokenizer::new(&tokenizer(), 120, None).expect("template");
        let PreparedQuery::Decoder { shared, text } = tok.prepare_query("q", None).expect("query")
        else {
            panic!("not a decoder query")
        };
        let long = "Paris is the capital of France. ".repeat(20);
        let capped = TruncationOptions {
            max_tokens_per_doc: Some(3),
            ..TruncationOptions::default()
        };
        let pair = tok
            .encode_document(&shared, &text, &long, &capped)
            .expect("pair");
        let (_, own) = split(&pair);
        assert_eq!(own.len(), tok.label_len + 3 + tok.suffix_ids.len());
        let strict = TruncationOptions {
            truncate: false,
            ..TruncationOptions::default()
        };
        assert!(matches!(
            tok.encode_document(&shared, &text, &long, &strict),
            Err(EngineError::InputTooLong { max: 120, .. })
        ));
    }
}
