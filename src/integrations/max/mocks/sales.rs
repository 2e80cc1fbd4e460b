//! The sales system, where transactions are created: a draft first, then a commit.
//!
//! OAuth2 client credentials as the transaction status mock (`POST /oauth/token`), and every
//! write signed `X-HMAC-Signature: <hex HMAC-SHA256(MAX_SALES_HMAC_SECRET, canonical JSON of
//! the body)>` (401 otherwise).
//! `POST /transactions/drafts` `{customer_id, amount, currency?, description, metadata}` → 201
//! `{id: "DRAFT-<n>", status: "pending_confirmation", amount, expires_at}` (drafts live
//! `MAX_MOCK_DRAFT_TTL_SECS`, default 1,800). `POST /transactions/drafts/{id}/commit`
//! `{draft_id}` with `Idempotency-Key` (400 without) → `{id: "TXN-S<n>", status: "completed",
//! amount}`; the same key again → the same answer, a draft commits once (409 for another key),
//! an expired one is 410, a cancelled one 409. The committed transaction is added to the
//! transaction status system (`POST {MAX_TRANSACTIONS_URL}/_mock/transactions`).
//! `POST /transactions/drafts/{id}/cancel` → `{status: "cancelled"}`.
//! `GET /_mock/requests`, `POST /_mock/expire_tokens`; the fault plan applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

use super::log::RequestLog;
use super::oauth::{self, TokenIssuer};
use crate::config::{Env, Secret};
use crate::integrations::max::config::{SALES_CLIENT_ID, SALES_CLIENT_SECRET, SALES_HMAC_SECRET};
use crate::mocks::Routes;
use crate::money::{Currency, format_major, parse_major};
use crate::signatures::{body_signature, canonical_json, constant_time_eq};

pub const HMAC_HEADER: &str = "x-hmac-signature";

#[derive(Clone, Debug, PartialEq, Eq)]
enum DraftState {
    Pending,
    Cancelled,
    Committed(String),
}

#[derive(Clone, Debug)]
struct Draft {
    customer_id: String,
    minor: i64,
    currency: Currency,
    expires: Instant,
    state: DraftState,
}

#[derive(Default)]
struct Book {
    drafts: HashMap<String, Draft>,
    /// Idempotency-Key → (draft id, the first answer).
    commits: HashMap<String, (String, (StatusCode, Value))>,
    next: u64,
}

pub struct SalesMock {
    oauth: TokenIssuer,
    hmac_secret: Secret,
    draft_ttl: Duration,
    /// Where committed transactions are told (the transaction status mock).
    transactions_url: Option<String>,
    http: reqwest::Client,
    book: Mutex<Book>,
    pub log: RequestLog,
}

pub fn start(env: &Env) -> anyhow::Result<Routes> {
    Ok(SalesMock::new(
        TokenIssuer::new(
            env.secret(&SALES_CLIENT_ID)?.expose().to_string(),
            env.secret(&SALES_CLIENT_SECRET)?,
            Duration::from_secs(env.whole("MAX_MOCK_TOKEN_TTL_SECS", 60)?),
        ),
        env.secret(&SALES_HMAC_SECRET)?,
        Duration::from_secs(env.whole("MAX_MOCK_DRAFT_TTL_SECS", 1_800)?),
        env.non_empty("MAX_TRANSACTIONS_URL"),
    )
    .routes())
}

impl SalesMock {
    pub fn new(
        oauth: TokenIssuer,
        hmac_secret: Secret,
        draft_ttl: Duration,
        transactions_url: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            log: RequestLog::new(vec![oauth.secret().clone(), hmac_secret.clone()]),
            oauth,
            hmac_secret,
            draft_ttl,
            transactions_url: transactions_url.map(|u| u.trim_end_matches('/').to_string()),
            http: crate::http_client::client(Duration::from_secs(5)),
            book: Mutex::new(Book::default()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/oauth/token", post(token))
                .route("/transactions/drafts", post(draft))
                .route("/transactions/drafts/{id}/commit", post(commit))
                .route("/transactions/drafts/{id}/cancel", post(cancel)),
            Router::new()
                .route("/_mock/requests", get(requests))
                .route("/_mock/expire_tokens", post(expire_tokens)),
        )
    }

    /// How many tokens it was asked for.
    pub fn token_requests(&self) -> u64 {
        self.oauth.requests()
    }

    /// How many drafts were committed.
    pub fn commits(&self) -> usize {
        let book = self.book.lock().expect("sales book");
        book.drafts
            .values()
            .filter(|d| matches!(d.state, DraftState::Committed(_)))
            .count()
    }

    /// The body, if the bearer is live and `X-HMAC-Signature` signs its canonical JSON.
    fn checked(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, (StatusCode, Value)> {
        if !self.oauth.authorized(headers) {
            return Err(oauth::unauthorized());
        }
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            (StatusCode::BAD_REQUEST, json!({"error": "invalid_json", "message": "send JSON"}))
        })?;
        let expected = body_signature(&self.hmac_secret, canonical_json(&value).as_bytes());
        let signed = headers
            .get(HMAC_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| {
                constant_time_eq(given.trim().to_ascii_lowercase().as_bytes(), expected.as_bytes())
            });
        if !signed {
            return Err((
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_signature", "message": "X-HMAC-Signature: hex HMAC-SHA256 of the canonical JSON body"}),
            ));
        }
        Ok(value)
    }

    fn answer(&self, method: Method, path: &str, body: &[u8], (status, value): (StatusCode, Value)) -> Response {
        self.log.push(method.as_str(), path, status.as_u16(), body);
        (status, Json(value)).into_response()
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({"error": code, "message": message.into()}))
}

async fn token(State(mock): State<Arc<SalesMock>>, Form(form): Form<HashMap<String, String>>) -> Response {
    let outcome = mock.oauth.issue(&form);
    mock.answer(Method::POST, "/oauth/token", oauth::logged(&form).as_bytes(), outcome)
}

async fn draft(State(mock): State<Arc<SalesMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = match mock.checked(&headers, &body) {
        Err(refusal) => refusal,
        Ok(request) => {
            let currency = request["currency"].as_str().unwrap_or("USD");
            let parsed = Currency::parse(currency).ok().and_then(|c| {
                let minor = parse_major(request["amount"].as_str()?, c).ok()?;
                Some((c, minor))
            });
            match (parsed, request["customer_id"].as_str()) {
                (Some((currency, minor)), Some(customer)) if minor > 0 => {
                    let mut book = mock.book.lock().expect("sales book");
                    book.next += 1;
                    let id = format!("DRAFT-{}", book.next);
                    let expires_at = chrono::Utc::now()
                        + chrono::Duration::from_std(mock.draft_ttl).unwrap_or_default();
                    book.drafts.insert(
                        id.clone(),
                        Draft {
                            customer_id: customer.to_string(),
                            minor,
                            currency,
                            expires: Instant::now() + mock.draft_ttl,
                            state: DraftState::Pending,
                        },
                    );
                    (
                        StatusCode::CREATED,
                        json!({
                            "id": id, "status": "pending_confirmation",
                            "amount": format_major(minor, currency), "currency": currency.code(),
                            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        }),
                    )
                }
                _ => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_draft",
                    "send {customer_id, amount (a positive decimal string), currency?, description}",
                ),
            }
        }
    };
    mock.answer(Method::POST, "/transactions/drafts", &body, outcome)
}

async fn commit(
    State(mock): State<Arc<SalesMock>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/transactions/drafts/{id}/commit");
    if let Err(refusal) = mock.checked(&headers, &body) {
        return mock.answer(Method::POST, &path, &body, refusal);
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty())
    else {
        let refusal = error(StatusCode::BAD_REQUEST, "missing_idempotency_key", "send Idempotency-Key");
        return mock.answer(Method::POST, &path, &body, refusal);
    };
    let (outcome, committed) = {
        let mut book = mock.book.lock().expect("sales book");
        if let Some((draft, first)) = book.commits.get(key) {
            let outcome = if *draft == id {
                first.clone()
            } else {
                error(StatusCode::CONFLICT, "idempotency_conflict", format!("Idempotency-Key {key} committed {draft}"))
            };
            (outcome, None)
        } else {
            let next = book.next + 1;
            match book.drafts.get_mut(&id) {
                None => (error(StatusCode::NOT_FOUND, "not_found", format!("no draft {id}")), None),
                Some(draft) if draft.state == DraftState::Cancelled => {
                    (error(StatusCode::CONFLICT, "cancelled", format!("{id} was cancelled")), None)
                }
                Some(draft) if matches!(draft.state, DraftState::Committed(_)) => (
                    error(StatusCode::CONFLICT, "already_committed", format!("{id} was committed with another key")),
                    None,
                ),
                Some(draft) if Instant::now() >= draft.expires => {
                    (error(StatusCode::GONE, "expired", format!("{id} expired")), None)
                }
                Some(draft) => {
                    let txn = format!("TXN-S{next}");
                    draft.state = DraftState::Committed(txn.clone());
                    let amount = format_major(draft.minor, draft.currency);
                    let outcome = (
                        StatusCode::OK,
                        json!({"id": txn, "status": "completed", "amount": amount, "currency": draft.currency.code()}),
                    );
                    let told = json!({
                        "id": txn, "customer_id": draft.customer_id, "amount": amount,
                        "currency": draft.currency.code(), "status": "completed",
                    });
                    book.next = next;
                    book.commits.insert(key.to_string(), (id.clone(), outcome.clone()));
                    (outcome, Some(told))
                }
            }
        }
    };
    if let (Some(told), Some(url)) = (committed, &mock.transactions_url) {
        let sent = mock.http.post(format!("{url}/_mock/transactions")).json(&told).send().await;
        if let Err(err) = sent {
            tracing::warn!(%err, "the sales mock could not tell the transaction status mock");
        }
    }
    mock.answer(Method::POST, &path, &body, outcome)
}

async fn cancel(State(mock): State<Arc<SalesMock>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/transactions/drafts/{id}/cancel");
    let outcome = if !mock.oauth.authorized(&headers) {
        oauth::unauthorized()
    } else {
        let mut book = mock.book.lock().expect("sales book");
        match book.drafts.get_mut(&id) {
            None => error(StatusCode::NOT_FOUND, "not_found", format!("no draft {id}")),
            Some(draft) if matches!(draft.state, DraftState::Committed(_)) => {
                error(StatusCode::CONFLICT, "already_committed", format!("{id} was committed"))
            }
            Some(draft) => {
                draft.state = DraftState::Cancelled;
                (StatusCode::OK, json!({"id": id, "status": "cancelled"}))
            }
        }
    };
    mock.answer(Method::POST, &path, b"", outcome)
}

async fn expire_tokens(State(mock): State<Arc<SalesMock>>) -> Json<Value> {
    mock.oauth.expire_all();
    Json(json!({"expired": true}))
}

async fn requests(State(mock): State<Arc<SalesMock>>) -> Json<Value> {
    Json(json!(mock.log.entries()))
}
