//! eyos Hail's transaction endpoint, as the hub sees it.
//!
//! `POST /events/v2/transaction/` takes one transaction: `Authorization: Bearer <key>` must be
//! one of its keys (401), the `Idempotency-Key` header is required (400) and must be the body's
//! `transaction_id` (422), the body must be JSON (400) matching
//! `schemas/newstore/hail-transaction.json` (422 with `details`). A new key is recorded and
//! answered 201; the same key with the same body again is answered 200 with the same body and
//! records nothing; the same key with another body is 409. `GET /events/v2/transaction/`
//! (same bearer) lists what it recorded in arrival order (`?received_after_us=` for the
//! newer ones). Both obey the mock's fault plan; `GET /_mock/transactions` (no bearer, no
//! faults) lists them too and `DELETE /_mock/transactions` forgets them.
//!
//! Its keys: `HAIL_API_KEY`, each tenant's `hail_api_key` in `NEWSTORE_TENANTS_JSON`, and
//! `HAIL_MOCK_EXTRA_API_KEYS` (comma-separated).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::domain::schemas;
use super::HAIL_API_KEY;
use crate::config::{Env, Secret};
use crate::mocks::Routes;
use crate::signatures::constant_time_eq;

/// Where Hail takes transactions.
pub const PATH: &str = "/events/v2/transaction/";

pub struct Options {
    /// The bearer keys it accepts; [`Received::api_key`] is an index into them.
    pub api_keys: Vec<Secret>,
}

/// One transaction, as its first accepted request brought it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    pub idempotency_key: String,
    pub body: Value,
    /// The W3C trace context the hub sent with it.
    pub traceparent: Option<String>,
    /// When it arrived, in unix microseconds (benchmarks read this).
    pub received_at_us: i64,
    /// The id Hail gave it: `htx_000001`, …
    pub hail_id: String,
    /// Which of [`Options::api_keys`] authorized it (0: `HAIL_API_KEY`).
    pub api_key: usize,
    /// Later requests with the same key and body, answered again.
    pub replays: u64,
}

#[derive(Default)]
struct Store {
    received: Vec<Received>,
    /// Idempotency key → index in `received`.
    index: HashMap<String, usize>,
    next_id: u64,
}

pub struct HailMock {
    api_keys: Vec<Secret>,
    store: Mutex<Store>,
}

/// The mock `ihub dev` runs, with its keys from the settings (see the module's doc).
pub fn start(env: &Env) -> anyhow::Result<Routes> {
    Ok(HailMock::new(Options {
        api_keys: api_keys(env)?,
    })
    .routes())
}

/// `HAIL_API_KEY`, the tenants' `hail_api_key`s, then `HAIL_MOCK_EXTRA_API_KEYS`.
fn api_keys(env: &Env) -> anyhow::Result<Vec<Secret>> {
    let mut keys = vec![env.secret(&HAIL_API_KEY)?];
    if let Some(tenants) = env.non_empty("NEWSTORE_TENANTS_JSON") {
        // Leniently: the hub's own settings report a malformed list.
        let tenants: Vec<Value> = serde_json::from_str(&tenants).unwrap_or_default();
        keys.extend(
            tenants
                .iter()
                .filter_map(|t| t.get("hail_api_key")?.as_str())
                .filter(|key| !key.is_empty())
                .map(Secret::new),
        );
    }
    keys.extend(
        env.list("HAIL_MOCK_EXTRA_API_KEYS", "")
            .into_iter()
            .map(Secret::new),
    );
    Ok(keys)
}

impl HailMock {
    pub fn new(options: Options) -> Arc<Self> {
        Arc::new(Self {
            api_keys: options.api_keys,
            store: Mutex::new(Store::default()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route(PATH, get(list).post(record))
                .route(PATH.trim_end_matches('/'), get(list).post(record)),
            Router::new().route("/_mock/transactions", get(list_admin).delete(clear)),
        )
    }

    /// Every transaction recorded, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.store.lock().expect("hail store").received.clone()
    }

    /// How many transactions it recorded.
    pub fn count(&self) -> usize {
        self.store.lock().expect("hail store").received.len()
    }

    /// The idempotency key and arrival time (unix microseconds) of each transaction, in
    /// arrival order: [`HailMock::received`] without cloning the bodies (benchmarks).
    pub fn arrivals(&self) -> Vec<(String, i64)> {
        let store = self.store.lock().expect("hail store");
        store
            .received
            .iter()
            .map(|r| (r.idempotency_key.clone(), r.received_at_us))
            .collect()
    }

    /// The transaction recorded under `idempotency_key`.
    pub fn received_for(&self, idempotency_key: &str) -> Option<Received> {
        let store = self.store.lock().expect("hail store");
        let index = *store.index.get(idempotency_key)?;
        store.received.get(index).cloned()
    }

    /// Forgets every transaction.
    pub fn clear(&self) {
        let mut store = self.store.lock().expect("hail store");
        store.received.clear();
        store.index.clear();
    }

    /// The index of the key `headers` authorize with, if any.
    fn authorized(&self, headers: &HeaderMap) -> Option<usize> {
        let token = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.api_keys
            .iter()
            .position(|key| constant_time_eq(token.as_bytes(), key.expose().as_bytes()))
    }
}

fn refuse(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": error, "message": message.into()})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    let mut response = refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send Authorization: Bearer <HAIL_API_KEY>",
    );
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// What Hail answers for a recorded transaction: the same for its first request and repeats.
fn answer(status: StatusCode, received: &Received) -> Response {
    let received_at = chrono::DateTime::from_timestamp_micros(received.received_at_us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    (
        status,
        Json(json!({
            "id": received.hail_id,
            "transaction_id": received.body.get("transaction_id"),
            "status": "recorded",
            "received_at": received_at,
        })),
    )
        .into_response()
}

async fn record(State(mock): State<Arc<HailMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let received_at_us = chrono::Utc::now().timestamp_micros();
    let Some(api_key) = mock.authorized(&headers) else {
        return unauthorized();
    };
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "send an Idempotency-Key header (the transaction_id)",
        );
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be JSON",
        );
    };
    if let Err(details) = schemas::HAIL_TRANSACTION.check(&body) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "invalid_transaction",
                "message": format!("the body does not match schemas/{}", schemas::HAIL_TRANSACTION.name),
                "details": details,
            })),
        )
            .into_response();
    }
    if body.get("transaction_id").and_then(Value::as_str) != Some(key) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_mismatch",
            "the Idempotency-Key must be the transaction_id",
        );
    }

    let mut store = mock.store.lock().expect("hail store");
    if let Some(&index) = store.index.get(key) {
        let existing = &mut store.received[index];
        if existing.body != body {
            return refuse(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!("Idempotency-Key {key} was sent before with another body"),
            );
        }
        existing.replays += 1;
        return answer(StatusCode::OK, existing);
    }
    store.next_id += 1;
    let received = Received {
        idempotency_key: key.to_string(),
        body,
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        received_at_us,
        hail_id: format!("htx_{:06}", store.next_id),
        api_key,
        replays: 0,
    };
    let response = answer(StatusCode::CREATED, &received);
    let index = store.received.len();
    store.index.insert(received.idempotency_key.clone(), index);
    store.received.push(received);
    response
}

#[derive(Deserialize)]
struct ListQuery {
    /// Only transactions that arrived after this (unix microseconds).
    received_after_us: Option<i64>,
}

fn listing(mock: &HailMock, query: &ListQuery) -> Response {
    let after = query.received_after_us.unwrap_or(i64::MIN);
    let store = mock.store.lock().expect("hail store");
    let transactions: Vec<&Received> = store
        .received
        .iter()
        .filter(|r| r.received_at_us > after)
        .collect();
    Json(json!({ "transactions": transactions })).into_response()
}

async fn list(
    State(mock): State<Arc<HailMock>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if mock.authorized(&headers).is_none() {
        return unauthorized();
    }
    listing(&mock, &query)
}

async fn list_admin(State(mock): State<Arc<HailMock>>, Query(query): Query<ListQuery>) -> Response {
    listing(&mock, &query)
}

async fn clear(State(mock): State<Arc<HailMock>>) -> StatusCode {
    mock.clear();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::super::super::domain::{EventKind, parse_envelope, parse_order};
    use super::super::super::{simulate, transform};
    use super::*;

    type Running = crate::mocks::testing::TestMock<HailMock>;

    async fn start() -> Running {
        crate::mocks::testing::start(
            HailMock::new(Options {
                api_keys: vec![Secret::new("dev-hail-key"), Secret::new("tenant-b-key")],
            })
            .routes(),
        )
        .await
    }

    fn transaction(order_id: &str) -> Value {
        let envelope =
            parse_envelope(&simulate::event(EventKind::OrderCompleted, order_id, 1)).unwrap();
        let order = parse_order(&envelope.payload).unwrap();
        let occurred_at = order.completed_at.clone().unwrap();
        serde_json::to_value(transform::sale(
            &order,
            &envelope.id,
            "hail-1",
            &occurred_at,
        ))
        .unwrap()
    }

    async fn post(
        run: &Running,
        key: Option<&str>,
        idempotency_key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut request = run
            .http
            .post(format!("{}{PATH}", run.url))
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("idempotency-key", idempotency_key);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn list(run: &Running, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = run.http.get(format!("{}{path}", run.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("list");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }

    #[tokio::test]
    async fn records_a_new_key_and_answers_a_repeat_the_same() {
        let run = start().await;
        let body = transaction("ord-1");
        let (status, first) = post(&run, Some("dev-hail-key"), Some("ord-1-sale"), &body).await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["id"], "htx_000001");
        assert_eq!(first["transaction_id"], "ord-1-sale");
        assert_eq!(first["status"], "recorded");
        let (status, again) = post(&run, Some("dev-hail-key"), Some("ord-1-sale"), &body).await;
        assert_eq!((status, &again), (200, &first));

        let mut other = body.clone();
        other["totals"]["gross"] = json!(1);
        let (status, conflict) = post(&run, Some("dev-hail-key"), Some("ord-1-sale"), &other).await;
        assert_eq!(
            (status, conflict["error"].as_str()),
            (409, Some("idempotency_conflict"))
        );

        let (status, _) = post(
            &run,
            Some("tenant-b-key"),
            Some("ord-2-sale"),
            &transaction("ord-2"),
        )
        .await;
        assert_eq!(status, 201);

        assert_eq!(run.mock.count(), 2);
        let received = run.mock.received();
        assert_eq!(received[0].idempotency_key, "ord-1-sale");
        assert_eq!(received[0].body, body);
        assert_eq!(received[0].replays, 1);
        assert_eq!((received[0].api_key, received[1].api_key), (0, 1));
        assert_eq!(
            received[0].traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert!(received[0].received_at_us <= received[1].received_at_us);
        let arrivals = run.mock.arrivals();
        assert_eq!(
            arrivals[1],
            ("ord-2-sale".into(), received[1].received_at_us)
        );
        assert_eq!(
            run.mock.received_for("ord-2-sale").map(|r| r.hail_id),
            Some("htx_000002".into())
        );

        // Listed in arrival order, with the bearer; without it too under /_mock.
        let (status, listed) = list(&run, PATH, Some("dev-hail-key")).await;
        assert_eq!(status, 200);
        let keys: Vec<&str> = listed["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["idempotency_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["ord-1-sale", "ord-2-sale"]);
        assert_eq!(listed["transactions"][0]["body"], body);
        let after = received[0].received_at_us;
        let (_, newer) = list(
            &run,
            &format!("/_mock/transactions?received_after_us={after}"),
            None,
        )
        .await;
        assert!(newer["transactions"].as_array().unwrap().len() <= 1);
        assert_eq!(list(&run, PATH, None).await.0, 401);

        let cleared = run
            .http
            .delete(format!("{}/_mock/transactions", run.url))
            .send()
            .await
            .unwrap();
        assert_eq!(cleared.status().as_u16(), 204);
        assert_eq!(run.mock.count(), 0);
    }

    #[tokio::test]
    async fn refuses_what_hail_would_refuse() {
        let run = start().await;
        let body = transaction("ord-1");
        let (status, answer) = post(&run, None, Some("ord-1-sale"), &body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, _) = post(&run, Some("wrong"), Some("ord-1-sale"), &body).await;
        assert_eq!(status, 401);

        let (status, answer) = post(&run, Some("dev-hail-key"), None, &body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("missing_idempotency_key"))
        );
        let (status, answer) = post(&run, Some("dev-hail-key"), Some("other"), &body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (422, Some("idempotency_key_mismatch"))
        );

        let mut bad = body.clone();
        bad["lines"][0]["unit_price"] = json!("29.90");
        bad["type"] = json!("refund");
        let (status, answer) = post(&run, Some("dev-hail-key"), Some("ord-1-sale"), &bad).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"], "invalid_transaction");
        let details: Vec<&str> = answer["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("/lines/0/unit_price: ")),
            "{details:?}"
        );
        assert!(
            details.iter().any(|d| d.starts_with("/type: ")),
            "{details:?}"
        );

        let response = run
            .http
            .post(format!("{}{PATH}", run.url))
            .bearer_auth("dev-hail-key")
            .header("idempotency-key", "ord-1-sale")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(run.mock.count(), 0);
    }

    #[tokio::test]
    async fn obeys_the_fault_plan() {
        let run = start().await;
        let body = transaction("ord-1");
        run.faults.set(crate::mocks::FaultPlan {
            fail_times: 2,
            status: Some(503),
            retry_after_secs: Some(1),
            ..Default::default()
        });
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                post(&run, Some("dev-hail-key"), Some("ord-1-sale"), &body)
                    .await
                    .0,
            );
        }
        assert_eq!(statuses, [503, 503, 201]);
        run.faults.down();
        assert_eq!(list(&run, "/_mock/transactions", None).await.0, 200);
        assert_eq!(list(&run, PATH, Some("dev-hail-key")).await.0, 503);
        run.faults.reset();
        assert_eq!(run.mock.count(), 1);
        assert_eq!(run.faults.failed(), 3);
    }

    #[test]
    fn takes_the_keys_of_its_settings() {
        let env = Env::from_pairs([
            ("HAIL_API_KEY", "k0"),
            (
                "NEWSTORE_TENANTS_JSON",
                r#"[{"tenant":"b","hail_api_key":"k1"},{"tenant":"c"}]"#,
            ),
            ("HAIL_MOCK_EXTRA_API_KEYS", "k2, k3"),
        ]);
        let keys: Vec<String> = api_keys(&env)
            .unwrap()
            .iter()
            .map(|k| k.expose().to_string())
            .collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k3"]);
        let none = Env::from_pairs::<&str, &str>([]);
        let err = api_keys(&none).unwrap_err().to_string();
        assert!(err.contains("HAIL_API_KEY"), "{err}");
        assert!(super::start(&none).is_err());
    }
}
