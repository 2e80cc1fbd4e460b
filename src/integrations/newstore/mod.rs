//! NewStore (seed 2): order lifecycle webhooks become eyos Hail transactions.

pub mod domain;
pub mod mocks;
pub mod simulate;
pub mod transform;
