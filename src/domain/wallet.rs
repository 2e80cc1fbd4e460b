//! The wallet hub's messages: what the RGS sends, what travels on NATS, what the RGS is told.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Amount, Currency, PlayerId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Debit,
    Credit,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Debit => "debit",
            Kind::Credit => "credit",
        }
    }
    /// The operator's name for it.
    pub fn operator_operation(self) -> &'static str {
        match self {
            Kind::Debit => "withdraw",
            Kind::Credit => "deposit",
        }
    }
}

/// `POST /wallet/{debit|credit}` body (schemas/wallet-request.json).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub player_id: PlayerId,
    pub amount: Amount,
    pub currency: Currency,
    #[serde(default)]
    pub round_id: Option<String>,
    #[serde(default)]
    pub game_id: Option<String>,
}

/// `in.wallet.debit` / `in.wallet.credit` (schemas/events/wallet-requested.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requested {
    pub transaction_id: Uuid,
    pub kind: Kind,
    pub player_id: PlayerId,
    pub amount: Amount,
    pub currency: Currency,
    pub round_id: Option<String>,
    pub game_id: Option<String>,
}

/// `out.operator.withdraw` / `out.operator.deposit` (schemas/events/operator-command.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorCommand {
    pub transaction_id: Uuid,
    pub kind: Kind,
    pub player_id: PlayerId,
    pub amount: Amount,
    pub currency: Currency,
    /// The amount as the operator wants it: a decimal string in major units.
    pub operator_amount: String,
    pub round_id: Option<String>,
    pub game_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Completed,
    Rejected,
    /// The operator could not be reached within the attempt limit; the command is in the DLQ.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Completed => "completed",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
        }
    }
}

/// The answer to the RGS, synchronous or replayed (the 200 body of `/wallet/*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub transaction_id: Uuid,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub balance: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operator_transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// `out.rgs.webhook`, and the body POSTed to the RGS (schemas/events/rgs-webhook.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RgsWebhook {
    /// Stable per transaction and status: the RGS can drop duplicates by it.
    pub id: Uuid,
    pub event: String,
    pub transaction_id: Uuid,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub status: Status,
    pub player_id: PlayerId,
    pub amount: Amount,
    pub currency: Currency,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub balance: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operator_transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub round_id: Option<String>,
    pub game_id: Option<String>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

impl RgsWebhook {
    /// Namespace for webhook ids: uuid v5 of "<transaction id>:<status>".
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a9e_3b7d_4c55_9e0a_51d2_8c44_a7b1);

    pub fn id_for(transaction_id: Uuid, status: Status) -> Uuid {
        Uuid::new_v5(
            &Self::NAMESPACE,
            format!("{transaction_id}:{}", status.as_str()).as_bytes(),
        )
    }
}

/// `POST /webhooks/incoming` from the operator, and `in.wallet.operator_callback`
/// (schemas/operator-callback.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorCallback {
    pub event: String,
    pub transaction_id: String,
    pub external_transaction_id: String,
    pub player_id: String,
    #[serde(rename = "type")]
    pub operation: String,
    pub amount: String,
    pub currency: String,
    #[serde(default)]
    pub balance: Option<String>,
    pub occurred_at: String,
}
