//! The ticketing system WaveGate forwards orders to: `POST /orders` issues one ticket code per
//! unit ordered, keyed by the caller's `Idempotency-Key` (a repeated key answers the same
//! ticketing order again and creates nothing), and records what it received.
//! `GET /_mock/orders` lists the ticketing orders, `DELETE /_mock/orders` forgets them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Env;
use crate::mocks::Routes;

/// The request headers a ticketing order records, when present.
pub const RECORDED_HEADERS: [&str; 5] = [
    "x-trace-id",
    "x-origin-partner-id",
    "x-external-order-id",
    "idempotency-key",
    "traceparent",
];

/// More tickets than this in one order is refused (a mock, not a load test of its memory).
const MAX_TICKETS_PER_ORDER: u64 = 100_000;

const CODE_ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const CODE_LEN: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub sku: String,
    pub code: String,
}

/// One ticketing order, as created by the first request with its `Idempotency-Key`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TicketingOrder {
    /// `tko_<uuid simple>`.
    pub ticketing_order_id: String,
    pub idempotency_key: String,
    /// [`RECORDED_HEADERS`] of the creating request (lowercase names), those it sent.
    pub headers: BTreeMap<String, String>,
    /// The creating request's body.
    pub body: Value,
    pub tickets: Vec<Ticket>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Later requests with the same `Idempotency-Key`, answered with this order again.
    pub replays: u64,
}

#[derive(Default)]
struct Store {
    orders: Vec<TicketingOrder>,
    codes: HashSet<String>,
}

pub struct TicketingMock {
    store: Mutex<Store>,
}

/// The mock `ihub dev` runs.
pub fn start(_env: &Env) -> anyhow::Result<Routes> {
    Ok(TicketingMock::new().routes())
}

impl TicketingMock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(Store::default()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/orders", post(create)),
            Router::new()
                .route("/_mock/orders", get(list).delete(clear)),
        )
    }

    /// Every ticketing order created, oldest first.
    pub fn orders(&self) -> Vec<TicketingOrder> {
        self.store.lock().expect("ticketing store").orders.clone()
    }

    /// The ticketing order created for `idempotency_key`.
    pub fn order_for(&self, idempotency_key: &str) -> Option<TicketingOrder> {
        self.store
            .lock()
            .expect("ticketing store")
            .orders
            .iter()
            .find(|o| o.idempotency_key == idempotency_key)
            .cloned()
    }

    /// Forgets every ticketing order.
    pub fn clear(&self) {
        let mut store = self.store.lock().expect("ticketing store");
        store.orders.clear();
        store.codes.clear();
    }
}

fn refuse(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": error, "message": message.into()})),
    )
        .into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    refuse(StatusCode::BAD_REQUEST, "invalid_order", message)
}

/// The (sku, qty) lines of an order body, or why it cannot be ticketed.
fn lines(body: &Value) -> Result<Vec<(String, u64)>, String> {
    let Some(items) = body.get("items").and_then(Value::as_array) else {
        return Err("items must be a non-empty array".into());
    };
    if items.is_empty() {
        return Err("items must be a non-empty array".into());
    }
    let mut total: u64 = 0;
    let mut lines = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let qty = match item.get("qty").and_then(Value::as_i64) {
            Some(qty) if qty >= 1 => qty as u64,
            _ => return Err(format!("items[{index}].qty must be an integer >= 1")),
        };
        total = total.saturating_add(qty);
        if total > MAX_TICKETS_PER_ORDER {
            return Err(format!("at most {MAX_TICKETS_PER_ORDER} tickets per order"));
        }
        let sku = match item.get("sku") {
            Some(Value::String(sku)) => sku.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        lines.push((sku, qty));
    }
    Ok(lines)
}

/// `TKT-` and ten uppercase alphanumerics, not yet issued.
fn new_code(issued: &mut HashSet<String>) -> String {
    loop {
        let random = uuid::Uuid::new_v4().into_bytes();
        let mut code = String::with_capacity(4 + CODE_LEN);
        code.push_str("TKT-");
        for byte in random.iter().take(CODE_LEN) {
            code.push(char::from(
                CODE_ALPHABET[usize::from(*byte) % CODE_ALPHABET.len()],
            ));
        }
        if issued.insert(code.clone()) {
            return code;
        }
    }
}

fn answer(status: StatusCode, order: &TicketingOrder) -> Response {
    (
        status,
        Json(json!({
            "ticketing_order_id": order.ticketing_order_id,
            "status": "issued",
            "tickets": order.tickets,
        })),
    )
        .into_response()
}

async fn create(
    State(mock): State<Arc<TicketingMock>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = chrono::Utc::now();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return invalid("the body must be JSON");
    };
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "send an Idempotency-Key header",
        );
    };

    let mut store = mock.store.lock().expect("ticketing store");
    // The same key is the same order: answer it again, issue nothing.
    if let Some(existing) = store.orders.iter_mut().find(|o| o.idempotency_key == key) {
        existing.replays += 1;
        return answer(StatusCode::OK, existing);
    }
    let lines = match lines(&body) {
        Ok(lines) => lines,
        Err(message) => return invalid(message),
    };
    let mut tickets = Vec::new();
    for (sku, qty) in lines {
        for _ in 0..qty {
            tickets.push(Ticket {
                sku: sku.clone(),
                code: new_code(&mut store.codes),
            });
        }
    }
    let recorded = RECORDED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            Some((
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ))
        })
        .collect();
    let order = TicketingOrder {
        ticketing_order_id: format!("tko_{}", uuid::Uuid::new_v4().simple()),
        idempotency_key: key,
        headers: recorded,
        body,
        tickets,
        received_at,
        replays: 0,
    };
    let response = answer(StatusCode::CREATED, &order);
    store.orders.push(order);
    response
}

async fn list(State(mock): State<Arc<TicketingMock>>) -> Json<Value> {
    Json(json!({ "orders": mock.orders() }))
}

async fn clear(State(mock): State<Arc<TicketingMock>>) -> StatusCode {
    mock.clear();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    type Running = crate::mocks::testing::TestMock<TicketingMock>;

    async fn start() -> Running {
        crate::mocks::testing::start(TicketingMock::new().routes()).await
    }

    fn order_body() -> Value {
        json!({
            "order_id": "0190f3c2-0000-7000-8000-000000000001",
            "partner_id": "demo",
            "external_order_id": "EXT-42",
            "items": [
                {"sku": "ADULT-DAY", "qty": 2, "unit_price_minor": 129900, "currency": "THB"},
                {"sku": "CHILD-DAY", "qty": 3, "unit_price_minor": 99900, "currency": "THB"}
            ],
            "buyer": {"name": "Alex"}
        })
    }

    async fn post(run: &Running, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = run
            .http
            .post(format!("{}/orders", run.url))
            .header("x-trace-id", "trace-1")
            .header("x-origin-partner-id", "demo")
            .header("x-external-order-id", "EXT-42")
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json answer"))
    }

    #[tokio::test]
    async fn issues_one_unique_code_per_unit_and_records_the_request() {
        let run = start().await;
        let (status, answer) = post(&run, Some("key-1"), &order_body()).await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["status"], "issued");
        let id = answer["ticketing_order_id"].as_str().expect("id");
        assert!(id.starts_with("tko_") && id.len() == 4 + 32, "{id}");
        let tickets = answer["tickets"].as_array().expect("tickets");
        assert_eq!(tickets.len(), 5);
        assert_eq!(
            tickets.iter().filter(|t| t["sku"] == "ADULT-DAY").count(),
            2
        );
        assert_eq!(
            tickets.iter().filter(|t| t["sku"] == "CHILD-DAY").count(),
            3
        );
        let codes: HashSet<&str> = tickets
            .iter()
            .map(|t| t["code"].as_str().expect("code"))
            .collect();
        assert_eq!(codes.len(), 5, "codes are unique");
        for code in &codes {
            let rest = code.strip_prefix("TKT-").expect("TKT- prefix");
            assert_eq!(rest.len(), 10);
            assert!(
                rest.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            );
        }

        let recorded = run.mock.order_for("key-1").expect("recorded");
        assert_eq!(recorded.ticketing_order_id, id);
        assert_eq!(recorded.body, order_body());
        assert_eq!(recorded.tickets.len(), 5);
        assert_eq!(recorded.headers["x-trace-id"], "trace-1");
        assert_eq!(recorded.headers["x-origin-partner-id"], "demo");
        assert_eq!(recorded.headers["x-external-order-id"], "EXT-42");
        assert_eq!(recorded.headers["idempotency-key"], "key-1");
        assert!(!recorded.headers.contains_key("traceparent"));

        let listed: Value = run
            .http
            .get(format!("{}/_mock/orders", run.url))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(listed["orders"].as_array().expect("orders").len(), 1);
        assert_eq!(listed["orders"][0]["ticketing_order_id"], id);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_answers_the_same_order() {
        let run = start().await;
        let (first_status, first) = post(&run, Some("same"), &order_body()).await;
        let (second_status, second) = post(&run, Some("same"), &order_body()).await;
        assert_eq!((first_status, second_status), (201, 200));
        assert_eq!(first, second);
        let orders = run.mock.orders();
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].replays, 1);

        let (status, other) = post(&run, Some("other"), &order_body()).await;
        assert_eq!(status, 201);
        assert_ne!(other["ticketing_order_id"], first["ticketing_order_id"]);
        assert_eq!(run.mock.orders().len(), 2);
    }

    #[tokio::test]
    async fn refuses_orders_it_cannot_ticket() {
        let run = start().await;
        let (status, answer) = post(&run, None, &order_body()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("missing_idempotency_key"))
        );

        for body in [
            json!({"order_id": "o"}),
            json!({"items": []}),
            json!({"items": [{"sku": "A", "qty": 0}]}),
            json!({"items": [{"sku": "A", "qty": "2"}]}),
        ] {
            let (status, answer) = post(&run, Some("bad"), &body).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(answer["error"], "invalid_order", "{body}");
        }
        let response = run
            .http
            .post(format!("{}/orders", run.url))
            .header("idempotency-key", "bad")
            .body("not json")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 400);
        assert!(run.mock.orders().is_empty());

        // Lenient about the rest: no buyer, no prices.
        let (status, answer) = post(
            &run,
            Some("lean"),
            &json!({"items": [{"sku": "A", "qty": 1}]}),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }

    #[tokio::test]
    async fn injected_failures_then_one_ticketing_order() {
        let run = start().await;
        let plan: Value = run
            .http
            .post(format!("{}/_mock/faults", run.url))
            .json(&json!({"fail_times": 2}))
            .send()
            .await
            .expect("set faults")
            .json()
            .await
            .expect("json");
        assert_eq!(plan["fail_times"], 2);

        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(post(&run, Some("retried"), &order_body()).await.0);
        }
        assert_eq!(statuses, [500, 500, 201]);
        // Readable while faults are on.
        run.faults.down();
        let listed = run
            .http
            .get(format!("{}/_mock/orders", run.url))
            .send()
            .await
            .expect("list");
        assert_eq!(listed.status().as_u16(), 200);
        run.faults.reset();
        assert_eq!(post(&run, Some("retried"), &order_body()).await.0, 200);

        assert_eq!(run.mock.orders().len(), 1);
        assert_eq!(run.faults.failed(), 2);
        assert_eq!(run.faults.requests(), 4);

        let cleared = run
            .http
            .delete(format!("{}/_mock/orders", run.url))
            .send()
            .await
            .expect("clear");
        assert_eq!(cleared.status().as_u16(), 204);
        assert!(run.mock.orders().is_empty());
    }
}
