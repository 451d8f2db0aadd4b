//! Client API wire types.

pub mod cohere;
pub mod health;
pub mod openapi;
pub mod tei;

use serde::{Deserialize, Serialize};

/// Which end of an over-long input loses tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TruncationDirection {
    #[serde(alias = "left", alias = "LEFT")]
    Left,
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
}
