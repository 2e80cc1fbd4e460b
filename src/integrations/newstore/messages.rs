//! What NewStore's stages pass each other through JetStream.

use serde::{Deserialize, Serialize};

use super::domain::{EventKind, Order, ReturnEvent};
use super::transform::HailTransaction;

/// A webhook event the ingress accepted (`in.newstore.event`): verified, parsed, money in minor
/// units. `kind` is `None` for a name the hub does not act on (recorded as ignored).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub tenant: String,
    pub event_id: String,
    pub name: String,
    pub kind: Option<EventKind>,
    pub published_at: String,
    pub order_id: Option<String>,
    pub order: Option<Order>,
    #[serde(rename = "return")]
    pub return_event: Option<ReturnEvent>,
}

impl Accepted {
    /// The key events of one order are ordered by.
    pub fn order_key(&self) -> Option<String> {
        self.order_id
            .as_ref()
            .map(|order| order_key(&self.tenant, order))
    }
}

pub fn order_key(tenant: &str, order_id: &str) -> String {
    format!("{tenant}/{order_id}")
}

/// One Hail transaction to send for `tenant` (`out.hail.transaction`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HailCommand {
    pub tenant: String,
    pub event_id: String,
    pub order_id: String,
    pub transaction: HailTransaction,
}
