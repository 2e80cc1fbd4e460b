//! Domain types: parsed once at the edge, trusted everywhere after.

mod money;
pub mod wallet;
pub mod wavegate;

pub use money::{Amount, Currency, MoneyError, format_major, parse_major};

use serde::{Deserialize, Serialize};

/// A player id as the RGS and the operator know it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlayerId(String);

impl PlayerId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "player_id must have 1 to {} characters",
                Self::MAX_LEN
            ));
        }
        if raw.chars().any(|c| c.is_control() || c == '/') {
            return Err("player_id must not contain '/' or control characters".into());
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PlayerId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PlayerId> for String {
    fn from(value: PlayerId) -> Self {
        value.0
    }
}

impl std::fmt::Display for PlayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
