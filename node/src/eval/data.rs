//! The evaluation set: JSON lines of `{"query": "...", "documents": ["...", ...]}`.
//!
//! Other keys (such as a `"relevant"` index list) are allowed and ignored: the report compares
//! modes with f32, not with human judgements. Blank lines are skipped; anything else that is
//! not a query with at least one non-empty document is an error naming its line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EvalError;

/// The set shipped in the binary, used when no `--data` is given (`node/eval/default.jsonl`).
pub const DEFAULT_SET: &str = include_str!("../../eval/default.jsonl");

/// What the default set is called in reports and errors.
pub const DEFAULT_SET_NAME: &str = "node/eval/default.jsonl (built in)";

/// One query and the documents it is scored against.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalQuery {
    pub query: String,
    pub documents: Vec<String>,
}

/// A loaded, validated evaluation set.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The file it came from, or [`DEFAULT_SET_NAME`].
    pub source: String,
    pub queries: Vec<EvalQuery>,
}

impl EvalSet {
    /// Reads `path`, or the built-in set when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, EvalError> {
        match path {
            None => Self::parse(DEFAULT_SET_NAME, DEFAULT_SET),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| EvalError::ReadData {
                    path: PathBuf::from(path),
                    source,
                })?;
                Self::parse(&path.display().to_string(), &text)
            }
        }
    }

    /// Parses JSON lines; `source` names the text in errors.
    pub fn parse(source: &str, text: &str) -> Result<Self, EvalError> {
        let bad_line = |line: usize, message: String| EvalError::BadData {
            data: source.to_string(),
            line,
            message,
        };
        let mut queries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let query: EvalQuery =
                serde_json::from_str(raw).map_err(|e| bad_line(line, json_message(&e)))?;
            if query.query.trim().is_empty() {
                return Err(bad_line(line, "`query` is empty".into()));
            }
            if query.documents.is_empty() {
                return Err(bad_line(line, "`documents` is empty".into()));
            }
            if let Some(i) = query.documents.iter().position(|d| d.trim().is_empty()) {
                return Err(bad_line(line, format!("document {i} is empty")));
            }
            queries.push(query);
        }
        if queries.is_empty() {
            return Err(EvalError::NoQueries(source.to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            queries,
        })
    }

    /// Query/document pairs in the set.
    pub fn pair_count(&self) -> usize {
        self.queries.iter().map(|q| q.documents.len()).sum()
    }
}

/// serde_json's message with its position made column-only: every record is one line, so its
/// own "line 1" would only contradict the file line the error names.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("not a JSON query record: {message} (column {})", e.column()),
        None => format!("not a JSON query record: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match EvalSet::parse("t.jsonl", text) {
            Ok(set) => panic!("parsed {} queries", set.queries.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_records_skipping_blank_lines_and_extra_keys() {
        let text = "{\"query\": \"q1\", \"documents\": [\"a\", \"b\"], \"relevant\": [1]}\n\n  \n{\"query\": \"q2\", \"documents\": [\"c\"]}\n";
        let set = EvalSet::parse("t.jsonl", text).expect("parses");
        assert_eq!(set.queries.len(), 2);
        assert_eq!(set.pair_count(), 3);
        assert_eq!(set.queries[1].documents, vec!["c".to_string()]);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let good = "{\"query\": \"q\", \"documents\": [\"a\"]}\n";
        let e = error_of(&format!(
            "{good}\n{{\"query\": \"q\", \"documents\": [\"a\"\n"
        ));
        assert!(
            e.starts_with("t.jsonl, line 3: not a JSON query record"),
            "{e}"
        );
        let e = error_of(&format!("{good}{{\"query\": \"q\"}}\n"));
        assert!(
            e.contains("line 2") && e.contains("missing field `documents`"),
            "{e}"
        );
        let e = error_of(&format!("{good}{{\"query\": \"q\", \"documents\": []}}\n"));
        assert_eq!(e, "t.jsonl, line 2: `documents` is empty");
        let e = error_of(&format!(
            "{good}{{\"query\": \" \", \"documents\": [\"a\"]}}\n"
        ));
        assert_eq!(e, "t.jsonl, line 2: `query` is empty");
        let e = error_of(&format!(
            "{good}{{\"query\": \"q\", \"documents\": [\"a\", \"\"]}}\n"
        ));
        assert_eq!(e, "t.jsonl, line 2: document 1 is empty");
        let e = error_of(&format!(
            "{good}{{\"query\": \"q\", \"documents\": \"a\"}}\n"
        ));
        assert!(e.contains("line 2") && e.contains("invalid type"), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        assert_eq!(error_of("\n\n"), "t.jsonl: no queries");
    }

    #[test]
    fn the_default_set_has_30_queries_of_10_documents() {
        let set = EvalSet::load(None).expect("the built-in set parses");
        assert!(set.queries.len() >= 30, "{} queries", set.queries.len());
        assert!(set.queries.iter().all(|q| q.documents.len() >= 10));
        assert!(set.pair_count() >= 300);
        let words: Vec<usize> = set
            .queries
            .iter()
            .flat_map(|q| q.documents.iter().map(|d| d.split_whitespace().count()))
            .collect();
        let (shortest, longest) = (words.iter().min(), words.iter().max());
        assert!(shortest.is_some_and(|&w| w <= 15), "{shortest:?}");
        assert!(longest.is_some_and(|&w| w >= 120), "{longest:?}");
    }
}
