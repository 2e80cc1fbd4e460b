//! The OTA partner's callback receiver: `POST /callbacks` (and any path below it, so each order
//! can call back to its own URL) stores every callback as received. With the hub's
//! `CALLBACK_SIGNING_SECRET` it checks both `X-Callback-Signature` and the Standard Webhooks
//! headers, and refuses a callback that fails either with 401.
//! `GET /_mock/callbacks` lists the accepted callbacks, `DELETE /_mock/callbacks` forgets them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Env, Secret};
use crate::mocks::Routes;
use crate::signatures::constant_time_eq;
use crate::signatures::webhooks::{
    CALLBACK_SIGNATURE_HEADER, StandardWebhook, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER, callback_signature,
};

/// How far `webhook-timestamp` may be from the mock's clock.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(300);

/// One callback as received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Callback {
    /// The request path, e.g. `/callbacks` or `/callbacks/order-1`.
    pub path: String,
    /// Every request header, by lowercase name (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The body exactly as sent (lossy UTF-8).
    pub raw_body: String,
    /// The body parsed as JSON (`null` when it is not JSON).
    pub body: Value,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Both signatures were checked and matched (false when the mock has no secret).
    pub verified: bool,
}

/// A callback refused for its signature, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rejected {
    pub callback: Callback,
    pub reason: String,
}

struct Verifier {
    secret: Secret,
    webhook: StandardWebhook,
}

#[derive(Default)]
struct Store {
    accepted: Vec<Callback>,
    rejected: Vec<Rejected>,
}

pub struct OtaMock {
    verifier: Option<Verifier>,
    store: Mutex<Store>,
}

/// The mock `ihub dev` runs: it checks the signatures of `CALLBACK_SIGNING_SECRET`, when set.
pub fn start(env: &Env) -> anyhow::Result<Routes> {
    let secret = env.optional_secret(super::super::config::CALLBACK_SIGNING_SECRET);
    Ok(OtaMock::new(secret).routes())
}

impl OtaMock {
    /// With the hub's callback signing secret, callbacks with a bad or missing signature are
    /// refused with 401; without one every callback is accepted.
    pub fn new(secret: Option<Secret>) -> Arc<Self> {
        Arc::new(Self {
            verifier: secret.map(|secret| Verifier {
                webhook: StandardWebhook::new(&secret),
                secret,
            }),
            store: Mutex::new(Store::default()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/callbacks", post(receive))
                .route("/callbacks/{*rest}", post(receive)),
            Router::new()
                .route("/_mock/callbacks", get(list).delete(clear)),
        )
    }

    /// Every accepted callback, in arrival order (redeliveries included).
    pub fn callbacks(&self) -> Vec<Callback> {
        self.store.lock().expect("ota store").accepted.clone()
    }

    /// Accepted callbacks whose body is about `order_id` (`body.order.id`), in arrival order.
    pub fn for_order(&self, order_id: &str) -> Vec<Callback> {
        self.store
            .lock()
            .expect("ota store")
            .accepted
            .iter()
            .filter(|c| c.body["order"]["id"] == order_id)
            .cloned()
            .collect()
    }

    /// How many callbacks were refused for their signature.
    pub fn rejected(&self) -> u64 {
        self.store.lock().expect("ota store").rejected.len() as u64
    }

    /// The callbacks refused for their signature, with the reason.
    pub fn rejected_callbacks(&self) -> Vec<Rejected> {
        self.store.lock().expect("ota store").rejected.clone()
    }

    /// Forgets every callback, accepted and rejected.
    pub fn clear(&self) {
        let mut store = self.store.lock().expect("ota store");
        store.accepted.clear();
        store.rejected.clear();
    }
}

impl Verifier {
    /// Both schemes must pass; the message says which did not.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("missing {name} header"))
        };
        let given = header(CALLBACK_SIGNATURE_HEADER)?;
        let expected = callback_signature(&self.secret, body);
        if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
            return Err(format!(
                "{CALLBACK_SIGNATURE_HEADER} does not match the body"
            ));
        }
        self.webhook
            .verify(
                header(WEBHOOK_ID_HEADER)?,
                header(WEBHOOK_TIMESTAMP_HEADER)?,
                header(WEBHOOK_SIGNATURE_HEADER)?,
                body,
                TIMESTAMP_TOLERANCE,
            )
            .map_err(str::to_string)
    }
}

fn all_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        all.entry(name.as_str().to_string())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    all
}

async fn receive(
    State(mock): State<Arc<OtaMock>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let mut callback = Callback {
        path: uri.path().to_string(),
        headers: all_headers(&headers),
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        body: parsed.as_ref().cloned().unwrap_or(Value::Null),
        received_at: chrono::Utc::now(),
        verified: false,
    };
    if let Some(verifier) = &mock.verifier {
        if let Err(reason) = verifier.verify(&headers, &body) {
            mock.store
                .lock()
                .expect("ota store")
                .rejected
                .push(Rejected {
                    callback,
                    reason: reason.clone(),
                });
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_signature", "message": reason})),
            )
                .into_response();
        }
        callback.verified = true;
    }
    if let Err(err) = parsed {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_json", "message": err.to_string()})),
        )
            .into_response();
    }
    mock.store
        .lock()
        .expect("ota store")
        .accepted
        .push(callback);
    (StatusCode::OK, Json(json!({"status": "received"}))).into_response()
}

async fn list(State(mock): State<Arc<OtaMock>>) -> Json<Value> {
    Json(json!({
        "callbacks": mock.callbacks(),
        "rejected": mock.rejected(),
    }))
}

async fn clear(State(mock): State<Arc<OtaMock>>) -> StatusCode {
    mock.clear();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signatures::unix_now;

    const SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtb3RhLW1vY2s=";

    type Running = crate::mocks::testing::TestMock<OtaMock>;

    async fn start(secret: Option<&str>) -> Running {
        crate::mocks::testing::start(OtaMock::new(secret.map(Secret::new)).routes()).await
    }

    fn callback_body(order_id: &str) -> String {
        json!({
            "event": "order.ticketed",
            "order": {
                "id": order_id,
                "partner_id": "demo",
                "external_order_id": "EXT-42",
                "trace_id": "6f1c1f7e-7a7b-4c47-9a38-0f3e6a1c2b3d",
                "items": [{"sku": "ADULT-DAY", "qty": 1, "unit_price_minor": 129900, "currency": "THB"}],
                "callback_url": "https://partner.example.com/callbacks",
                "created_at": "2025-08-25T07:09:55.123Z"
            },
            "status": "ticketed",
            "tickets": [{"sku": "ADULT-DAY", "code": "TKT-ABCDEFGHIJ"}]
        })
        .to_string()
    }

    /// The headers the hub sends for `body`, signed now with `secret`.
    fn signed_headers(secret: &str, body: &str) -> Vec<(&'static str, String)> {
        let secret = Secret::new(secret);
        let mut headers = vec![(
            "x-callback-signature",
            callback_signature(&secret, body.as_bytes()),
        )];
        headers.extend(StandardWebhook::new(&secret).headers("msg_1", unix_now(), body.as_bytes()));
        headers
    }

    async fn send(
        run: &Running,
        path: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> (u16, Value) {
        let mut request = run
            .http
            .post(format!("{}{path}", run.url))
            .header("content-type", "application/json")
            .header("x-trace-id", "trace-1");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.body(body).send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json answer"))
    }

    #[tokio::test]
    async fn accepts_a_correctly_signed_callback_on_any_path() {
        let run = start(Some(SECRET)).await;
        let body = callback_body("order-1");
        let headers = signed_headers(SECRET, &body);
        let (status, answer) =
            send(&run, "/callbacks/partner/order-1", &headers, body.clone()).await;
        assert_eq!((status, &answer), (200, &json!({"status": "received"})));
        let (status, _) = send(
            &run,
            "/callbacks",
            &signed_headers(SECRET, &callback_body("order-2")),
            callback_body("order-2"),
        )
        .await;
        assert_eq!(status, 200);

        assert_eq!(run.mock.callbacks().len(), 2);
        let got = run.mock.for_order("order-1");
        assert_eq!(got.len(), 1);
        let callback = &got[0];
        assert_eq!(callback.path, "/callbacks/partner/order-1");
        assert_eq!(callback.raw_body, body);
        assert_eq!(callback.body["status"], "ticketed");
        assert!(callback.verified);
        assert_eq!(callback.headers["x-trace-id"], "trace-1");
        assert_eq!(callback.headers["webhook-id"], "msg_1");
        assert_eq!(callback.headers["x-callback-signature"], headers[0].1);
        assert_eq!(run.mock.for_order("order-2")[0].path, "/callbacks");
        assert_eq!(run.mock.rejected(), 0);

        let listed: Value = run
            .http
            .get(format!("{}/_mock/callbacks", run.url))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(listed["callbacks"].as_array().expect("callbacks").len(), 2);
        assert_eq!(listed["callbacks"][0]["body"]["order"]["id"], "order-1");
        assert_eq!(listed["rejected"], 0);

        let cleared = run
            .http
            .delete(format!("{}/_mock/callbacks", run.url))
            .send()
            .await
            .expect("clear");
        assert_eq!(cleared.status().as_u16(), 204);
        assert!(run.mock.callbacks().is_empty());
    }

    #[tokio::test]
    async fn refuses_tampered_or_half_signed_callbacks() {
        let run = start(Some(SECRET)).await;
        let body = callback_body("order-1");
        let headers = signed_headers(SECRET, &body);
        let tampered = body.replace("TKT-ABCDEFGHIJ", "TKT-ZZZZZZZZZZ");
        let (status, answer) = send(&run, "/callbacks", &headers, tampered).await;
        assert_eq!(status, 401);
        assert_eq!(answer["error"], "invalid_signature");
        assert!(
            answer["message"]
                .as_str()
                .expect("message")
                .contains("x-callback-signature")
        );

        // Only one of the two schemes: refused.
        let (status, answer) = send(&run, "/callbacks", &headers[..1], body.clone()).await;
        assert_eq!(status, 401);
        assert_eq!(answer["message"], "missing webhook-id header");
        let (status, _) = send(&run, "/callbacks", &headers[1..], body.clone()).await;
        assert_eq!(status, 401);
        // A stale Standard Webhooks timestamp.
        let secret = Secret::new(SECRET);
        let stale =
            StandardWebhook::new(&secret).headers("msg_1", unix_now() - 301, body.as_bytes());
        let mut old = vec![headers[0].clone()];
        old.extend(stale);
        let (status, _) = send(&run, "/callbacks", &old, body.clone()).await;
        assert_eq!(status, 401);
        // Signed with another secret.
        let (status, _) = send(
            &run,
            "/callbacks",
            &signed_headers("other", &body),
            body.clone(),
        )
        .await;
        assert_eq!(status, 401);

        assert!(run.mock.callbacks().is_empty());
        assert_eq!(run.mock.rejected(), 5);
        assert!(
            run.mock
                .rejected_callbacks()
                .iter()
                .all(|r| !r.callback.verified)
        );

        let (status, _) = send(&run, "/callbacks", &headers, body).await;
        assert_eq!(status, 200);
        assert_eq!(run.mock.for_order("order-1").len(), 1);
    }

    #[tokio::test]
    async fn without_a_secret_accepts_unsigned_callbacks() {
        let run = start(None).await;
        let (status, _) = send(&run, "/callbacks", &[], callback_body("order-1")).await;
        assert_eq!(status, 200);
        let got = run.mock.for_order("order-1");
        assert_eq!(got.len(), 1);
        assert!(!got[0].verified);
        let (status, answer) = send(&run, "/callbacks", &[], "not json".into()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_json"))
        );
        assert_eq!(run.mock.callbacks().len(), 1);
    }

    #[tokio::test]
    async fn injected_failures_then_the_callback_is_stored_once() {
        let run = start(Some(SECRET)).await;
        run.faults.fail_next(2, 503);
        let body = callback_body("order-9");
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let headers = signed_headers(SECRET, &body);
            statuses.push(
                send(&run, "/callbacks/order-9", &headers, body.clone())
                    .await
                    .0,
            );
        }
        assert_eq!(statuses, [503, 503, 200]);
        assert_eq!(run.mock.for_order("order-9").len(), 1);
        assert_eq!(run.faults.failed(), 2);
        assert_eq!(run.mock.rejected(), 0);
    }
}
