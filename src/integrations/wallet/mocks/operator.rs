//! The operator wallet: balances per player and currency, withdraw and deposit with the
//! caller's transaction id as idempotency key, a transaction list (whole, or a page at a time
//! from a cursor: [`super::listing`]), and asynchronous signed callbacks to the hub after each
//! new transaction.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::listing::{self, Listing, PageQuery};
use crate::config::{Env, Secret};
use crate::mocks::Routes;
use crate::money::{Currency, format_major, parse_major};
use crate::signatures::TimestampedHmac;

pub struct Options {
    /// Currencies the operator accepts (others are refused with 422).
    pub currencies: Vec<String>,
    /// Balance of a player the operator has not seen, in minor units.
    pub initial_balance_minor: i64,
    /// Where and with what secret to send callbacks; none disables them.
    pub callback: Option<(String, Secret)>,
}

/// One booked transaction, as `GET /v2/transactions` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub external_transaction_id: String,
    pub player_id: String,
    #[serde(rename = "type")]
    pub operation: String,
    pub amount: String,
    pub currency: String,
    pub balance_after: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the first request for it arrived, in unix microseconds (benchmarks read this).
    pub received_at_us: i64,
    /// The W3C trace context the hub sent with it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub traceparent: Option<String>,
}

struct Ledger {
    balances: HashMap<(String, String), i64>,
    transactions: Vec<Transaction>,
    /// (external transaction id, operation) → index in `transactions`.
    booked: HashMap<(String, String), usize>,
    next_id: u64,
    /// Changes when `transactions` changes other than by appending.
    epoch: u32,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            balances: HashMap::new(),
            transactions: Vec::new(),
            booked: HashMap::new(),
            next_id: 0,
            epoch: listing::new_epoch(),
        }
    }
}

impl Ledger {
    fn find(&self, external_id: &str, operation: &str) -> Option<&Transaction> {
        let index = self
            .booked
            .get(&(external_id.to_string(), operation.to_string()))?;
        self.transactions.get(*index)
    }

    fn push(&mut self, transaction: Transaction) {
        self.booked.insert(
            (
                transaction.external_transaction_id.clone(),
                transaction.operation.clone(),
            ),
            self.transactions.len(),
        );
        self.transactions.push(transaction);
    }
}

pub struct OperatorMock {
    /// List requests, and a hold on them (tests).
    pub listing: Listing,
    options: Options,
    currencies: HashSet<String>,
    ledger: Mutex<Ledger>,
    http: reqwest::Client,
}

/// The mock `ihub dev` runs: `OPERATOR_MOCK_CURRENCIES`, `OPERATOR_MOCK_INITIAL_BALANCE`, and
/// signed callbacks to `HUB_CALLBACK_URL`.
pub fn start(env: &Env) -> anyhow::Result<Routes> {
    let mock = OperatorMock::new(Options {
        currencies: env
            .list("OPERATOR_MOCK_CURRENCIES", "EUR,USD")
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        initial_balance_minor: env.whole("OPERATOR_MOCK_INITIAL_BALANCE", 100_000)? as i64,
        callback: Some((
            env.text("HUB_CALLBACK_URL", "http://127.0.0.1:8000/webhooks/incoming"),
            super::super::config::operator_webhook_secret(env)?,
        )),
    });
    Ok(mock.routes())
}

#[derive(Deserialize)]
struct MoveRequest {
    transaction_id: Option<String>,
    amount: String,
    currency: String,
}

fn refuse(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

impl OperatorMock {
    pub fn new(options: Options) -> Arc<Self> {
        Arc::new(Self {
            listing: Listing::default(),
            currencies: options.currencies.iter().cloned().collect(),
            options,
            ledger: Mutex::new(Ledger::default()),
            http: crate::http_client::client(Duration::from_secs(5)),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/v2/players/{player_id}/withdraw", post(withdraw))
                .route("/v2/players/{player_id}/deposit", post(deposit))
                .route("/v2/players/{player_id}/balance/{currency}", get(balance))
                .route("/v2/transactions", get(list)),
            Router::new()
                .route("/_mock/transactions/{external_id}", delete(forget)),
        )
    }

    /// Every booked transaction, oldest first.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.ledger.lock().expect("ledger").transactions.clone()
    }

    /// Transactions booked for the hub's transaction id.
    pub fn transactions_for(&self, external_id: &str) -> Vec<Transaction> {
        self.transactions()
            .into_iter()
            .filter(|t| t.external_transaction_id == external_id)
            .collect()
    }

    /// Forgets a transaction (as if the operator lost it): reconciliation must notice.
    pub fn forget(&self, external_id: &str) -> bool {
        let mut ledger = self.ledger.lock().expect("ledger");
        let before = ledger.transactions.len();
        let kept: Vec<Transaction> = std::mem::take(&mut ledger.transactions)
            .into_iter()
            .filter(|t| t.external_transaction_id != external_id)
            .collect();
        ledger.booked.clear();
        for transaction in kept {
            ledger.push(transaction);
        }
        let forgot = before != ledger.transactions.len();
        if forgot {
            ledger.epoch = listing::new_epoch();
        }
        forgot
    }

    /// Lists `transactions` as booked, without moving balances or calling back (tests and
    /// benchmarks that need a long list).
    pub fn seed(&self, transactions: impl IntoIterator<Item = Transaction>) {
        let mut ledger = self.ledger.lock().expect("ledger");
        for transaction in transactions {
            ledger.next_id += 1;
            ledger.push(transaction);
        }
    }

    pub fn balance(&self, player: &str, currency: &str) -> i64 {
        let ledger = self.ledger.lock().expect("ledger");
        ledger
            .balances
            .get(&(player.to_string(), currency.to_string()))
            .copied()
            .unwrap_or(self.options.initial_balance_minor)
    }

    fn book(
        self: &Arc<Self>,
        player_id: String,
        operation: &str,
        headers: &HeaderMap,
        request: MoveRequest,
    ) -> Response {
        let received_at_us = chrono::Utc::now().timestamp_micros();
        let Some(external_id) = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or(request.transaction_id)
        else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "missing_transaction_id",
                "send Idempotency-Key or transaction_id".into(),
            );
        };
        if !self.currencies.contains(&request.currency) {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "currency_not_supported",
                format!("the operator does not support {}", request.currency),
            );
        }
        let Ok(currency) = Currency::parse(&request.currency) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_currency",
                format!("{} is not a currency", request.currency),
            );
        };
        let amount = match parse_major(&request.amount, currency) {
            Ok(minor) if minor > 0 => minor,
            _ => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_amount",
                    format!(
                        "{:?} is not a positive amount in {currency}",
                        request.amount
                    ),
                );
            }
        };

        let mut ledger = self.ledger.lock().expect("ledger");
        // The same transaction id is the same transaction: answer it again, book nothing.
        if let Some(existing) = ledger.find(&external_id, operation) {
            return (StatusCode::OK, Json(answer(existing))).into_response();
        }
        let key = (player_id.clone(), request.currency.clone());
        let current = ledger
            .balances
            .get(&key)
            .copied()
            .unwrap_or(self.options.initial_balance_minor);
        let next = if operation == "withdraw" {
            if current < amount {
                return refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "insufficient_funds",
                    format!(
                        "balance {} is less than {}",
                        format_major(current, currency),
                        request.amount
                    ),
                );
            }
            current - amount
        } else {
            current + amount
        };
        ledger.balances.insert(key, next);
        ledger.next_id += 1;
        let transaction = Transaction {
            transaction_id: format!("op_{:06}", ledger.next_id),
            external_transaction_id: external_id,
            player_id,
            operation: operation.to_string(),
            amount: format_major(amount, currency),
            currency: request.currency,
            balance_after: format_major(next, currency),
            created_at: chrono::Utc::now(),
            received_at_us,
            traceparent: headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        ledger.push(transaction.clone());
        drop(ledger);

        self.call_back(&transaction);
        (StatusCode::OK, Json(answer(&transaction))).into_response()
    }

    /// After a new transaction, tell the hub, asynchronously and signed, retrying a little.
    fn call_back(self: &Arc<Self>, transaction: &Transaction) {
        let Some((url, secret)) = self.options.callback.clone() else {
            return;
        };
        let body = json!({
            "event": "transaction.completed",
            "transaction_id": transaction.transaction_id,
            "external_transaction_id": transaction.external_transaction_id,
            "player_id": transaction.player_id,
            "type": transaction.operation,
            "amount": transaction.amount,
            "currency": transaction.currency,
            "balance": transaction.balance_after,
            "occurred_at": transaction.created_at.to_rfc3339(),
        });
        let http = self.http.clone();
        let signer = TimestampedHmac::new(secret, Duration::from_secs(300));
        tokio::spawn(async move {
            let send = || async {
                let mut request = http.post(&url).json(&body);
                for (name, value) in signer.headers_for(&body) {
                    request = request.header(name, value);
                }
                let response = request.send().await?;
                response.error_for_status()
            };
            let retried = send
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_times(5),
                )
                .await;
            if let Err(err) = retried {
                tracing::warn!(%err, "operator mock: callback to the hub failed");
            }
        });
    }
}

fn answer(t: &Transaction) -> serde_json::Value {
    json!({
        "transaction_id": t.transaction_id,
        "external_transaction_id": t.external_transaction_id,
        "player_id": t.player_id,
        "type": t.operation,
        "amount": t.amount,
        "currency": t.currency,
        "balance": t.balance_after,
        "status": "ok",
    })
}

async fn withdraw(
    State(mock): State<Arc<OperatorMock>>,
    Path(player_id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<MoveRequest>,
) -> Response {
    mock.book(player_id, "withdraw", &headers, request)
}

async fn deposit(
    State(mock): State<Arc<OperatorMock>>,
    Path(player_id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<MoveRequest>,
) -> Response {
    mock.book(player_id, "deposit", &headers, request)
}

async fn balance(
    State(mock): State<Arc<OperatorMock>>,
    Path((player_id, currency)): Path<(String, String)>,
) -> Response {
    let Ok(parsed) = Currency::parse(&currency) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_currency", currency);
    };
    let minor = mock.balance(&player_id, &currency);
    Json(json!({"player_id": player_id, "currency": currency,
                "balance": format_major(minor, parsed)}))
    .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    /// Only transactions whose first request arrived after this (unix microseconds).
    received_after_us: Option<i64>,
    since: Option<String>,
    limit: Option<usize>,
}

/// `GET /v2/transactions`: every transaction, oldest first, or a page of them from a cursor.
async fn list(State(mock): State<Arc<OperatorMock>>, Query(query): Query<ListQuery>) -> Response {
    mock.listing.admit().await;
    let after = query.received_after_us.unwrap_or(i64::MIN);
    let page = PageQuery {
        since: query.since,
        limit: query.limit,
    };
    let (window, transactions) = {
        let ledger = mock.ledger.lock().expect("ledger");
        let window = match listing::window(ledger.transactions.len(), ledger.epoch, &page) {
            Ok(window) => window,
            Err(refusal) => {
                drop(ledger);
                return mock.listing.refuse(&page, refusal);
            }
        };
        let transactions: Vec<Transaction> = ledger.transactions[window.range.clone()]
            .iter()
            .filter(|t| t.received_at_us > after)
            .cloned()
            .collect();
        (window, transactions)
    };
    mock.listing.record(&page, StatusCode::OK, transactions.len());
    window.answer("transactions", &transactions)
}

async fn forget(
    State(mock): State<Arc<OperatorMock>>,
    Path(external_id): Path<String>,
) -> StatusCode {
    if mock.forget(&external_id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
