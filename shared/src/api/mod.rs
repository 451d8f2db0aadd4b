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

/// Which end of an over-long input loses tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum TruncationDirection {
    #[serde(alias = "left", alias = "LEFT")]
    Left,
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
}
