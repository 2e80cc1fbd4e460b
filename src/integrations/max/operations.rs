//! The eight operations MAX asks of the adapters: which adapter runs each, what it sends the
//! partner, what the partner's answer becomes, and which are cached for how long.
//!
//! | operation | adapter | partner call | cached |
//! | --- | --- | --- | --- |
//! | create_ticket | ticketing | `POST /tickets` | |
//! | get_ticket_status | ticketing | `GET /tickets/{id}` | 300 s |
//! | add_comment | ticketing | `POST /tickets/{id}/comments` | |
//! | get_transaction_status | transaction_status | `GET /transactions/{id}` | 120 s |
//! | get_transaction_history | transaction_status | `GET /customers/{id}/transactions?limit=` | 300 s |
//! | create_draft_transaction | transaction_create | `POST /transactions/drafts` | |
//! | commit_transaction | transaction_create | `POST /transactions/drafts/{id}/commit` | |
//! | cancel_draft | transaction_create | `POST /transactions/drafts/{id}/cancel` | |
//!
//! Amounts are integer minor units here and decimal strings on both wires.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keys::{cache_key, percent_encode};
use crate::money::{Currency, format_major, parse_major};

/// The three adapters; their names are the `adapter` label everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Adapter {
    Ticketing,
    TransactionStatus,
    TransactionCreate,
}

impl Adapter {
    pub const ALL: [Adapter; 3] = [
        Adapter::Ticketing,
        Adapter::TransactionStatus,
        Adapter::TransactionCreate,
    ];

    /// Its breaker in the `breakers` bucket.
    pub fn breaker_key(self) -> String {
        format!("max.{}", self.name())
    }

    pub fn name(self) -> &'static str {
        match self {
            Adapter::Ticketing => "ticketing",
            Adapter::TransactionStatus => "transaction_status",
            Adapter::TransactionCreate => "transaction_create",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Operation {
    CreateTicket {
        customer_id: String,
        subject: String,
        description: String,
        priority: String,
    },
    GetTicketStatus {
        ticket_id: String,
    },
    AddComment {
        ticket_id: String,
        comment: String,
        is_public: bool,
    },
    GetTransactionStatus {
        transaction_id: String,
    },
    GetTransactionHistory {
        customer_id: String,
        limit: u32,
    },
    CreateDraftTransaction {
        customer_id: String,
        amount_minor: i64,
        currency: Currency,
        description: String,
        #[serde(default)]
        metadata: Value,
    },
    CommitTransaction {
        draft_id: String,
        idempotency_key: String,
    },
    CancelDraft {
        draft_id: String,
    },
}

/// What to send the partner (the adapter adds its authentication).
pub struct Call {
    pub method: Method,
    /// From the adapter's base URL, ids escaped.
    pub path: String,
    pub body: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// How long each cached operation's answer is served (the seed's table).
pub const TICKET_TTL: Duration = Duration::from_secs(300);
pub const TRANSACTION_TTL: Duration = Duration::from_secs(120);
pub const HISTORY_TTL: Duration = Duration::from_secs(300);

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateTicket { .. } => "create_ticket",
            Operation::GetTicketStatus { .. } => "get_ticket_status",
            Operation::AddComment { .. } => "add_comment",
            Operation::GetTransactionStatus { .. } => "get_transaction_status",
            Operation::GetTransactionHistory { .. } => "get_transaction_history",
            Operation::CreateDraftTransaction { .. } => "create_draft_transaction",
            Operation::CommitTransaction { .. } => "commit_transaction",
            Operation::CancelDraft { .. } => "cancel_draft",
        }
    }

    pub fn adapter(&self) -> Adapter {
        match self {
            Operation::CreateTicket { .. }
            | Operation::GetTicketStatus { .. }
            | Operation::AddComment { .. } => Adapter::Ticketing,
            Operation::GetTransactionStatus { .. } | Operation::GetTransactionHistory { .. } => {
                Adapter::TransactionStatus
            }
            Operation::CreateDraftTransaction { .. }
            | Operation::CommitTransaction { .. }
            | Operation::CancelDraft { .. } => Adapter::TransactionCreate,
        }
    }

    /// A read (served from the cache and by the service) rather than a write (a command).
    pub fn is_read(&self) -> bool {
        self.cached(None).is_some()
    }

    /// The cache key and time to live of a read (`ttl` overrides the table's).
    pub fn cached(&self, ttl: Option<Duration>) -> Option<(String, Duration)> {
        let (key, table) = match self {
            Operation::GetTicketStatus { ticket_id } => {
                (cache_key(self.name(), &[("ticket_id", ticket_id)]), TICKET_TTL)
            }
            Operation::GetTransactionStatus { transaction_id } => (
                cache_key(self.name(), &[("transaction_id", transaction_id)]),
                TRANSACTION_TTL,
            ),
            Operation::GetTransactionHistory { customer_id, limit } => (
                cache_key(
                    self.name(),
                    &[("customer_id", customer_id), ("limit", &limit.to_string())],
                ),
                HISTORY_TTL,
            ),
            _ => return None,
        };
        Some((key, ttl.unwrap_or(table)))
    }

    pub fn call(&self) -> Call {
        let call = |method, path: String, body| Call {
            method,
            path,
            body,
            idempotency_key: None,
        };
        match self {
            Operation::CreateTicket {
                customer_id,
                subject,
                description,
                priority,
            } => call(
                Method::POST,
                "/tickets".into(),
                Some(json!({
                    "subject": subject, "description": description, "priority": priority,
                    "custom_fields": {"customer_id": customer_id},
                })),
            ),
            Operation::GetTicketStatus { ticket_id } => {
                call(Method::GET, format!("/tickets/{}", percent_encode(ticket_id)), None)
            }
            Operation::AddComment {
                ticket_id,
                comment,
                is_public,
            } => call(
                Method::POST,
                format!("/tickets/{}/comments", percent_encode(ticket_id)),
                Some(json!({"body": comment, "public": is_public})),
            ),
            Operation::GetTransactionStatus { transaction_id } => call(
                Method::GET,
                format!("/transactions/{}", percent_encode(transaction_id)),
                None,
            ),
            Operation::GetTransactionHistory { customer_id, limit } => call(
                Method::GET,
                format!("/customers/{}/transactions?limit={limit}", percent_encode(customer_id)),
                None,
            ),
            Operation::CreateDraftTransaction {
                customer_id,
                amount_minor,
                currency,
                description,
                metadata,
            } => call(
                Method::POST,
                "/transactions/drafts".into(),
                Some(json!({
                    "customer_id": customer_id,
                    "amount": format_major(*amount_minor, *currency),
                    "currency": currency.code(),
                    "description": description,
                    "metadata": metadata,
                })),
            ),
            Operation::CommitTransaction {
                draft_id,
                idempotency_key,
            } => Call {
                idempotency_key: Some(idempotency_key.clone()),
                ..call(
                    Method::POST,
                    format!("/transactions/drafts/{}/commit", percent_encode(draft_id)),
                    Some(json!({"draft_id": draft_id})),
                )
            },
            Operation::CancelDraft { draft_id } => call(
                Method::POST,
                format!("/transactions/drafts/{}/cancel", percent_encode(draft_id)),
                Some(json!({"draft_id": draft_id})),
            ),
        }
    }

    /// The partner's successful answer as MAX gets it, or why it cannot be used.
    pub fn answer(&self, partner: &Value) -> Result<Value, String> {
        let text = |field: &str| {
            partner[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("the partner's answer has no {field}"))
        };
        Ok(match self {
            Operation::CreateTicket { .. } => json!({
                "ticket_id": text("id")?, "url": text("url")?, "status": text("status")?,
            }),
            Operation::GetTicketStatus { .. } => json!({
                "ticket_id": text("id")?,
                "status": text("status")?,
                "assigned_to": partner["assignee"]["email"].as_str(),
                "last_updated": text("updated_at")?,
            }),
            Operation::AddComment { .. } => json!({"comment_id": text("id")?}),
            Operation::GetTransactionStatus { .. } => transaction(partner)?,
            Operation::GetTransactionHistory { customer_id, .. } => {
                let listed = partner["transactions"]
                    .as_array()
                    .ok_or("the partner's answer has no transactions")?
                    .iter()
                    .map(transaction)
                    .collect::<Result<Vec<_>, _>>()?;
                json!({"customer_id": customer_id, "transactions": listed})
            }
            Operation::CreateDraftTransaction { .. } => {
                let (amount, currency) = amount(partner)?;
                json!({
                    "draft_id": text("id")?, "status": text("status")?,
                    "amount": amount, "currency": currency,
                    "expires_at": partner["expires_at"].as_str(),
                })
            }
            Operation::CommitTransaction { draft_id, .. } => {
                let (amount, currency) = amount(partner)?;
                json!({
                    "transaction_id": text("id")?, "draft_id": draft_id, "status": text("status")?,
                    "amount": amount, "currency": currency,
                })
            }
            Operation::CancelDraft { draft_id } => json!({"draft_id": draft_id, "status": "cancelled"}),
        })
    }
}

/// A partner's `{amount, currency}`, checked: the amount a decimal string with the currency's
/// digits (as minor units it must fit), given back as the currency writes it.
fn amount(partner: &Value) -> Result<(String, &'static str), String> {
    let currency = partner["currency"]
        .as_str()
        .map(Currency::parse)
        .unwrap_or_else(|| Currency::parse("USD"))
        .map_err(|err| format!("the partner's currency: {err}"))?;
    let text = match &partner["amount"] {
        Value::String(text) => text.clone(),
        other => return Err(format!("the partner's amount {other} is not a decimal string")),
    };
    let minor = parse_major(&text, currency).map_err(|err| format!("the partner's amount: {err}"))?;
    Ok((format_major(minor, currency), currency.code()))
}

fn transaction(partner: &Value) -> Result<Value, String> {
    let (amount, currency) = amount(partner)?;
    Ok(json!({
        "transaction_id": partner["id"].as_str().ok_or("a transaction without id")?,
        "customer_id": partner["customer_id"].as_str(),
        "status": partner["status"].as_str().ok_or("a transaction without status")?,
        "amount": amount,
        "currency": currency,
        "created_at": partner["created_at"].as_str(),
        "completed_at": partner["completed_at"].as_str(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_leave_their_path_percent_encode() {
        let op = Operation::GetTicketStatus {
            ticket_id: "../admin?x=1".into(),
        };
        assert_eq!(op.call().path, "/tickets/..%2Fadmin%3Fx%3D1");
    }

    #[test]
    fn amounts_cross_as_decimal_strings() {
        let op = Operation::CreateDraftTransaction {
            customer_id: "CUST-1".into(),
            amount_minor: 1250,
            currency: Currency::parse("EUR").unwrap(),
            description: "upgrade".into(),
            metadata: json!({}),
        };
        assert_eq!(op.call().body.unwrap()["amount"], "12.50");
        let answer = op
            .answer(&json!({"id": "DRAFT-1", "status": "pending_confirmation", "amount": "12.50", "currency": "EUR"}))
            .unwrap();
        assert_eq!(answer["amount"], "12.50");
        assert!(op.answer(&json!({"id": "DRAFT-1", "status": "x", "amount": 12.5, "currency": "EUR"})).is_err());
    }

    #[test]
    fn reads_are_cached_and_writes_are_not() {
        let history = Operation::GetTransactionHistory {
            customer_id: "CUST-1".into(),
            limit: 10,
        };
        assert_eq!(
            history.cached(None),
            Some(("get_transaction_history.CUST-1.10".into(), HISTORY_TTL))
        );
        assert!(!Operation::CancelDraft { draft_id: "D".into() }.is_read());
    }
}
