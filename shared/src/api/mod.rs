//! Client API wire types, and the OpenAPI document derived from them ([`openapi`]).
//!
//! Each type derives `utoipa::ToSchema` beside its serde derives, so a field's name, type,
//! optionality and the bounds the handlers enforce (`#[schema(minimum = 1)]`, …) are stated once.

pub mod cohere;
pub mod health;
pub mod openapi;
pub mod tei;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a document's best-scoring window lies, on results of requests that split long
/// documents (`max_chunks_per_doc > 1`): a client can quote or highlight the passage that made
/// the document rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BestChunk {
    /// The window's number among the document's windows, from 0.
    pub index: usize,
    /// Its first character in the document as sent (Unicode scalar values, as Python indexes
    /// strings).
    pub start: usize,
    /// One past its last character.
    pub end: usize,
}

/// Which end of an over-long input loses tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum TruncationDirection {
    #[serde(alias = "left", alias = "LEFT")]
    Left,
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
}
