//! MAX's NATS subjects (before the deployment's prefix).

use uuid::Uuid;

use super::keys::token;

/// A write MAX asked for (`INBOUND`, durable `operate-max`), one message per operation id.
pub const WRITE: &str = "in.max.write";
/// `POST /webhooks/transaction_updated`, accepted (`INBOUND`, durable `operate-max`).
pub const TRANSACTION_UPDATED: &str = "in.max.transaction_updated";

/// The NATS service every consumer process serves (`nats micro info ihub-max`).
pub const SERVICE: &str = "ihub-max";
/// A read that missed the cache (queue group `q`).
pub const READ: &str = "svc.max.read";
/// `PUT /max/conversations/{id}`.
pub const CONVERSATION: &str = "svc.max.conversation";

/// Where an operation's outcome is told to the ingress waiting for it (core NATS).
pub fn outcome(operation_id: Uuid) -> String {
    format!("max.outcome.{operation_id}")
}

/// Where events for `agent` are pushed to the WebSocket connections of that agent (core NATS,
/// every ingress process listens for its connected agents).
pub fn push(agent: &str) -> String {
    format!("max.push.{}", token(agent))
}
