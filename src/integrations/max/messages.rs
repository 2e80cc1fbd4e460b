//! What MAX's parts tell each other over NATS.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::operations::Operation;

/// A write, published by the ingress to [`subjects::WRITE`](super::subjects::WRITE).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Write {
    pub operation_id: Uuid,
    #[serde(flatten)]
    pub operation: Operation,
    pub conversation_id: Option<String>,
    /// The ingress's idempotency record of a commit (`Idempotency-Key`): completed with the
    /// answer, or released when the operation failed so a retry runs it again.
    pub idempotency_record: Option<String>,
}

/// A read the cache missed, asked of the service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Read {
    #[serde(flatten)]
    pub operation: Operation,
    pub conversation_id: Option<String>,
}

/// `PUT /max/conversations/{id}`, asked of the service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub assigned_to: String,
    #[serde(default)]
    pub metadata: Value,
}

/// An answer for MAX: the service's reply, a write's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// What MAX is answered for an operation's outcome: the partner's answer, or 503
    /// `adapter_unavailable` (the breaker is open: retry later) or 502 `partner_failed`.
    pub fn of(outcome: &super::adapter::Outcome, adapter: super::operations::Adapter) -> Self {
        use super::adapter::Outcome;
        match outcome {
            Outcome::Answered { status, body } => Answer {
                status: *status,
                body: body.clone(),
            },
            Outcome::Failed { error, breaker } => {
                let (status, code) = match breaker {
                    Some(_) => (503, "adapter_unavailable"),
                    None => (502, "partner_failed"),
                };
                Answer {
                    status,
                    body: serde_json::json!({"error": code, "message": error, "adapter": adapter.name()}),
                }
            }
        }
    }
}
