//! The RGS: receives the hub's outcome webhooks (checking their signature when it knows the
//! secret), stores them and lists them at `GET /webhooks`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Env, Secret};
use crate::mocks::Routes;
use crate::signatures::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, TimestampedHmac, canonical_json, unix_now,
};

/// One webhook as received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub body: Value,
}

pub struct RgsMock {
    verifier: Option<TimestampedHmac>,
    received: Mutex<Vec<Received>>,
}

/// The mock `ihub dev` runs: it checks signatures with `WALLET_HMAC_SECRET`.
pub fn start(env: &Env) -> anyhow::Result<Routes> {
    let secret = env.optional_secret(super::super::config::WALLET_HMAC.name);
    Ok(RgsMock::new(secret).routes())
}

impl RgsMock {
    /// With a secret, webhooks with a bad signature are refused with 401.
    pub fn new(secret: Option<Secret>) -> Arc<Self> {
        Arc::new(Self {
            verifier: secret.map(|s| TimestampedHmac::new(s, Duration::from_secs(300))),
            received: Mutex::new(Vec::new()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/webhooks", post(receive).get(list)),
            Router::new()
                .route("/_mock/webhooks", delete(clear)),
        )
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("rgs store").clone()
    }

    /// Webhooks about one transaction, in arrival order.
    pub fn for_transaction(&self, transaction_id: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b["transaction_id"] == transaction_id)
            .collect()
    }

    /// Forgets the webhooks of one transaction (as if the RGS lost them).
    pub fn forget(&self, transaction_id: &str) {
        self.received
            .lock()
            .expect("rgs store")
            .retain(|r| r.body["transaction_id"] != transaction_id);
    }
}

async fn receive(State(rgs): State<Arc<RgsMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_json"})),
        )
            .into_response();
    };
    if let Some(verifier) = &rgs.verifier {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(err) = verifier.verify(
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            &canonical_json(&value),
            unix_now(),
        ) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_signature", "message": err.to_string()})),
            )
                .into_response();
        }
    }
    rgs.received.lock().expect("rgs store").push(Received {
        received_at: chrono::Utc::now(),
        body: value,
    });
    (StatusCode::OK, Json(json!({"status": "received"}))).into_response()
}

async fn list(State(rgs): State<Arc<RgsMock>>) -> Json<Value> {
    let webhooks: Vec<Value> = rgs
        .received()
        .into_iter()
        .map(|r| {
            let mut body = r.body;
            if let Some(map) = body.as_object_mut() {
                map.insert("received_at".into(), json!(r.received_at));
            }
            body
        })
        .collect();
    Json(json!({ "webhooks": webhooks }))
}

async fn clear(State(rgs): State<Arc<RgsMock>>) -> StatusCode {
    rgs.received.lock().expect("rgs store").clear();
    StatusCode::NO_CONTENT
}
