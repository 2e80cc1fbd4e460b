//! The RGS: receives the hub's outcome webhooks (checking their signature when it knows the
//! secret), stores them and lists them at `GET /webhooks` (whole, or a page at a time from a
//! cursor: [`super::listing`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::listing::{self, Listing, PageQuery};
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
    /// List requests, and a hold on them (tests).
    pub listing: Listing,
    verifier: Option<TimestampedHmac>,
    received: Mutex<Store>,
}

struct Store {
    received: Vec<Received>,
    /// Changes when `received` changes other than by appending.
    epoch: u32,
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
            listing: Listing::default(),
            verifier: secret.map(|s| TimestampedHmac::new(s, Duration::from_secs(300))),
            received: Mutex::new(Store {
                received: Vec::new(),
                epoch: listing::new_epoch(),
            }),
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
        self.received.lock().expect("rgs store").received.clone()
    }

    /// Stores `bodies` as received now (tests and benchmarks that need a long list).
    pub fn seed(&self, bodies: impl IntoIterator<Item = Value>) {
        let mut store = self.received.lock().expect("rgs store");
        let received_at = chrono::Utc::now();
        store
            .received
            .extend(bodies.into_iter().map(|body| Received { received_at, body }));
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
        let mut store = self.received.lock().expect("rgs store");
        let before = store.received.len();
        store
            .received
            .retain(|r| r.body["transaction_id"] != transaction_id);
        if store.received.len() != before {
            store.epoch = listing::new_epoch();
        }
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
    rgs.received.lock().expect("rgs store").received.push(Received {
        received_at: chrono::Utc::now(),
        body: value,
    });
    (StatusCode::OK, Json(json!({"status": "received"}))).into_response()
}

/// `GET /webhooks`: every webhook in arrival order, or a page of them from a cursor.
async fn list(State(rgs): State<Arc<RgsMock>>, Query(page): Query<PageQuery>) -> Response {
    rgs.listing.admit().await;
    let (window, webhooks) = {
        let store = rgs.received.lock().expect("rgs store");
        let window = match listing::window(store.received.len(), store.epoch, &page) {
            Ok(window) => window,
            Err(refusal) => {
                drop(store);
                return rgs.listing.refuse(&page, refusal);
            }
        };
        let webhooks: Vec<Value> = store.received[window.range.clone()]
            .iter()
            .map(|r| {
                let mut body = r.body.clone();
                if let Some(map) = body.as_object_mut() {
                    map.insert("received_at".into(), json!(r.received_at));
                }
                body
            })
            .collect();
        (window, webhooks)
    };
    rgs.listing.record(&page, StatusCode::OK, webhooks.len());
    window.answer("webhooks", &webhooks)
}

async fn clear(State(rgs): State<Arc<RgsMock>>) -> StatusCode {
    let mut store = rgs.received.lock().expect("rgs store");
    store.received.clear();
    store.epoch = listing::new_epoch();
    StatusCode::NO_CONTENT
}
