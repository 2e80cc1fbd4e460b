//! The wallet hub's messages: what the RGS sends, what travels on NATS, what the RGS is told,
//! and the pure steps between them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, Currency, format_major};

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

/// `POST /wallet/{debit|credit}` body (schemas/wallet/wallet-request.json).
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

/// `in.wallet.debit` / `in.wallet.credit` (schemas/wallet/events/wallet-requested.json).
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

impl Requested {
    /// The operator call an accepted request becomes.
    pub fn operator_command(self) -> OperatorCommand {
        OperatorCommand {
            transaction_id: self.transaction_id,
            kind: self.kind,
            operator_amount: format_major(self.amount.minor(), self.currency),
            player_id: self.player_id,
            amount: self.amount,
            currency: self.currency,
            round_id: self.round_id,
            game_id: self.game_id,
        }
    }
}

/// `out.operator.withdraw` / `out.operator.deposit` (schemas/wallet/events/operator-command.json).
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
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Status::Pending,
            Status::Completed,
            Status::Rejected,
            Status::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

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

/// `out.rgs.webhook`, and the body POSTed to the RGS (schemas/wallet/events/rgs-webhook.json).
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

    /// What the RGS is told of `outcome`, at `occurred_at`.
    pub fn for_outcome(
        command: &OperatorCommand,
        outcome: &Outcome,
        occurred_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        RgsWebhook {
            id: Self::id_for(command.transaction_id, outcome.status),
            event: format!("transaction.{}", outcome.status.as_str()),
            transaction_id: command.transaction_id,
            kind: command.kind,
            status: outcome.status,
            player_id: command.player_id.clone(),
            amount: command.amount,
            currency: command.currency,
            balance: outcome.balance,
            operator_transaction_id: outcome.operator_transaction_id.clone(),
            reason: outcome.reason.clone(),
            round_id: command.round_id.clone(),
            game_id: command.game_id.clone(),
            occurred_at,
        }
    }

    pub fn id_for(transaction_id: Uuid, status: Status) -> Uuid {
        Uuid::new_v5(
            &Self::NAMESPACE,
            format!("{transaction_id}:{}", status.as_str()).as_bytes(),
        )
    }
}

/// `POST /webhooks/incoming` from the operator, and `in.wallet.operator_callback`
/// (schemas/wallet/operator-callback.json).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(kind: Kind, minor: i64, currency: &str) -> Requested {
        Requested {
            transaction_id: Uuid::from_u128(7),
            kind,
            player_id: PlayerId::parse("p1").unwrap(),
            amount: Amount::parse(minor).unwrap(),
            currency: Currency::parse(currency).unwrap(),
            round_id: Some("r-1".into()),
            game_id: None,
        }
    }

    #[test]
    fn the_operator_gets_major_units_in_the_currency_exponent() {
        for (kind, minor, currency, operation, amount) in [
            (Kind::Debit, 1050, "EUR", "withdraw", "10.50"),
            (Kind::Credit, 5, "USD", "deposit", "0.05"),
            (Kind::Debit, 1200, "JPY", "withdraw", "1200"),
            (Kind::Credit, 1234, "BHD", "deposit", "1.234"),
        ] {
            let command = requested(kind, minor, currency).operator_command();
            assert_eq!(command.kind.operator_operation(), operation);
            assert_eq!(command.operator_amount, amount, "{currency}");
            assert_eq!(command.amount.minor(), minor);
            assert_eq!(command.round_id.as_deref(), Some("r-1"));
        }
    }

    #[test]
    fn one_webhook_id_per_transaction_and_status() {
        let command = requested(Kind::Debit, 100, "EUR").operator_command();
        let outcome = |status| Outcome {
            transaction_id: command.transaction_id,
            status,
            balance: Some(900),
            operator_transaction_id: Some("op_1".into()),
            reason: None,
        };
        let now = chrono::Utc::now();
        let completed = RgsWebhook::for_outcome(&command, &outcome(Status::Completed), now);
        assert_eq!(completed.event, "transaction.completed");
        assert_eq!(completed.balance, Some(900));
        assert_eq!(completed.kind, Kind::Debit);
        let again = RgsWebhook::for_outcome(&command, &outcome(Status::Completed), now);
        assert_eq!(completed.id, again.id, "stable across redeliveries");
        let failed = RgsWebhook::for_outcome(&command, &outcome(Status::Failed), now);
        assert_ne!(completed.id, failed.id);
    }

    #[test]
    fn player_ids_are_bounded() {
        assert!(PlayerId::parse("player-1").is_ok());
        for bad in ["", "a/b", "a\nb", &"x".repeat(129)] {
            assert!(PlayerId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for status in [Status::Pending, Status::Completed, Status::Rejected, Status::Failed] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("lost"), None);
    }
}
