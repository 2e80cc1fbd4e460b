//! The transaction status system (payments and orders), behind OAuth2 client credentials.
//!
//! `POST /oauth/token` (form: `grant_type=client_credentials`, `client_id`, `client_secret`)
//! → `{access_token, token_type: "Bearer", expires_in}`; tokens live `MAX_MOCK_TOKEN_TTL_SECS`
//! (default 60). With `Authorization: Bearer <token>` (401 otherwise, also for an expired or
//! revoked token): `GET /transactions/{id}` → `{id, status, amount, currency, created_at,
//! completed_at}` (amounts are decimal strings), 404 if unknown; `GET
//! /customers/{id}/transactions?limit=N` → `{transactions: […]}`, newest first. Demo data:
//! `TXN-1` … `TXN-20` of customers `CUST-1` … `CUST-4`. `POST /_mock/expire_tokens` revokes
//! every token it issued; `POST /_mock/transactions/{id}` `{status}` changes one;
//! `GET /_mock/requests` lists what it received (secrets masked). The fault plan applies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

use super::log::RequestLog;
use super::oauth::{self, TokenIssuer};
use crate::config::{Env, Secret};
use crate::integrations::max::config::{TRANSACTIONS_CLIENT_ID, TRANSACTIONS_CLIENT_SECRET};
use crate::mocks::Routes;
use crate::money::{Currency, format_major};

#[derive(Clone, Debug)]
struct Transaction {
    customer_id: String,
    minor: i64,
    currency: Currency,
    status: String,
    created_at: String,
    completed_at: Option<String>,
}

pub struct TransactionsMock {
    oauth: TokenIssuer,
    transactions: Mutex<BTreeMap<String, Transaction>>,
    pub log: RequestLog,
}

pub fn start(env: &Env) -> anyhow::Result<Routes> {
    let ttl = Duration::from_secs(env.whole("MAX_MOCK_TOKEN_TTL_SECS", 60)?);
    Ok(TransactionsMock::new(
        env.secret(&TRANSACTIONS_CLIENT_ID)?.expose().to_string(),
        env.secret(&TRANSACTIONS_CLIENT_SECRET)?,
        ttl,
    )
    .routes())
}

impl TransactionsMock {
    pub fn new(client_id: String, client_secret: Secret, token_ttl: Duration) -> Arc<Self> {
        let usd = Currency::parse("USD").expect("USD");
        let demo = (1..=20)
            .map(|n: i64| {
                let at = |minute: i64| format!("2026-01-05T10:{minute:02}:00Z");
                let completed = n % 2 == 1;
                (
                    format!("TXN-{n}"),
                    Transaction {
                        customer_id: format!("CUST-{}", (n - 1) % 4 + 1),
                        minor: n * 2_500,
                        currency: usd,
                        status: if completed { "completed" } else { "pending" }.into(),
                        created_at: at(n),
                        completed_at: completed.then(|| at(n + 5)),
                    },
                )
            })
            .collect();
        Arc::new(Self {
            log: RequestLog::new(vec![client_secret.clone()]),
            oauth: TokenIssuer::new(client_id, client_secret, token_ttl),
            transactions: Mutex::new(demo),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/oauth/token", post(token))
                .route("/transactions/{id}", get(transaction))
                .route("/customers/{id}/transactions", get(history)),
            Router::new()
                .route("/_mock/requests", get(requests))
                .route("/_mock/expire_tokens", post(expire_tokens))
                .route("/_mock/transactions", post(create))
            .route("/_mock/transactions/{id}", post(change)),
        )
    }

    /// How many tokens it was asked for.
    pub fn token_requests(&self) -> u64 {
        self.oauth.requests()
    }

    /// Revokes every token it issued.
    pub fn expire_tokens(&self) {
        self.oauth.expire_all();
    }

    /// Adds (or replaces) a transaction, as the sales system does when a draft is committed.
    pub fn add(&self, id: &str, customer_id: &str, minor: i64, currency: Currency, status: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let transaction = Transaction {
            customer_id: customer_id.to_string(),
            minor,
            currency,
            status: status.to_string(),
            created_at: now.clone(),
            completed_at: (status == "completed").then_some(now),
        };
        self.transactions
            .lock()
            .expect("transactions")
            .insert(id.to_string(), transaction);
    }

    fn view(id: &str, t: &Transaction) -> Value {
        json!({
            "id": id, "customer_id": t.customer_id, "status": t.status,
            "amount": format_major(t.minor, t.currency), "currency": t.currency.code(),
            "created_at": t.created_at, "completed_at": t.completed_at,
        })
    }

    fn answer(&self, method: Method, path: &str, body: &[u8], (status, value): (StatusCode, Value)) -> Response {
        self.log.push(method.as_str(), path, status.as_u16(), body);
        (status, Json(value)).into_response()
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({"error": code, "message": message.into()}))
}

async fn token(
    State(mock): State<Arc<TransactionsMock>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let outcome = mock.oauth.issue(&form);
    mock.answer(Method::POST, "/oauth/token", oauth::logged(&form).as_bytes(), outcome)
}

async fn transaction(State(mock): State<Arc<TransactionsMock>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let outcome = if !mock.oauth.authorized(&headers) {
        oauth::unauthorized()
    } else {
        match mock.transactions.lock().expect("transactions").get(&id) {
            Some(t) => (StatusCode::OK, TransactionsMock::view(&id, t)),
            None => error(StatusCode::NOT_FOUND, "not_found", format!("no transaction {id}")),
        }
    };
    mock.answer(Method::GET, &format!("/transactions/{id}"), b"", outcome)
}

async fn history(
    State(mock): State<Arc<TransactionsMock>>,
    Path(customer): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let outcome = if !mock.oauth.authorized(&headers) {
        oauth::unauthorized()
    } else {
        let limit = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10usize);
        let transactions = mock.transactions.lock().expect("transactions");
        let mut mine: Vec<(&String, &Transaction)> =
            transactions.iter().filter(|(_, t)| t.customer_id == customer).collect();
        mine.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at));
        let listed: Vec<Value> = mine
            .into_iter()
            .take(limit)
            .map(|(id, t)| TransactionsMock::view(id, t))
            .collect();
        (StatusCode::OK, json!({"transactions": listed}))
    };
    mock.answer(Method::GET, &format!("/customers/{customer}/transactions"), b"", outcome)
}

async fn expire_tokens(State(mock): State<Arc<TransactionsMock>>) -> Json<Value> {
    mock.expire_tokens();
    Json(json!({"expired": true}))
}

async fn change(State(mock): State<Arc<TransactionsMock>>, Path(id): Path<String>, Json(change): Json<Value>) -> Response {
    let mut transactions = mock.transactions.lock().expect("transactions");
    match (transactions.get_mut(&id), change["status"].as_str()) {
        (Some(t), Some(status)) => {
            t.status = status.to_string();
            Json(TransactionsMock::view(&id, t)).into_response()
        }
        _ => {
            let (status, body) = error(StatusCode::NOT_FOUND, "not_found", format!("no transaction {id}, or no status"));
            (status, Json(body)).into_response()
        }
    }
}

/// `POST /_mock/transactions` `{id, customer_id, amount, currency, status}`: what the sales
/// mock calls when a draft is committed.
async fn create(State(mock): State<Arc<TransactionsMock>>, Json(body): Json<Value>) -> Response {
    let currency = body["currency"].as_str().and_then(|c| Currency::parse(c).ok());
    let fields = (body["id"].as_str(), body["customer_id"].as_str(), currency);
    let (Some(id), Some(customer), Some(currency)) = fields else {
        let (status, answer) = error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_transaction", "send {id, customer_id, amount, currency, status}");
        return (status, Json(answer)).into_response();
    };
    let Ok(minor) = crate::money::parse_major(body["amount"].as_str().unwrap_or_default(), currency) else {
        let (status, answer) = error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount", "amount: a decimal string");
        return (status, Json(answer)).into_response();
    };
    mock.add(id, customer, minor, currency, body["status"].as_str().unwrap_or("completed"));
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn requests(State(mock): State<Arc<TransactionsMock>>) -> Json<Value> {
    Json(json!(mock.log.entries()))
}
