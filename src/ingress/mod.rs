//! The HTTP ingress: one router per integration, merged here. Handlers are thin: verify,
//! parse, claim the idempotency key, publish one event, answer. The ingress writes only to
//! NATS; it reads Postgres for readiness and query endpoints.

mod error;
pub mod orders;
pub mod reconciliation;
pub mod wallet;

pub use error::ApiError;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

use crate::config::Config;
use crate::idempotency::Idempotency;
use crate::nats::Bus;

/// What every handler can reach.
pub struct AppState {
    pub bus: Bus,
    pub db: PgPool,
    pub idempotency: Idempotency,
    pub http: reqwest::Client,
    pub wallet: wallet::WalletIngress,
    pub orders: orders::OrdersIngress,
    /// The longest `Prefer: wait=N` honoured.
    pub max_wait: Duration,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub async fn new(cfg: &Config, bus: Bus, db: PgPool) -> anyhow::Result<SharedState> {
        Ok(Arc::new(AppState {
            idempotency: Idempotency::new(bus.kv("idempotency").await?),
            http: crate::http_client::client(cfg.http_timeout),
            wallet: wallet::WalletIngress::new(cfg)?,
            orders: orders::OrdersIngress::new(cfg, &bus).await?,
            max_wait: cfg.max_wait,
            bus,
            db,
        }))
    }
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(wallet::router())
        .merge(reconciliation::router())
        .merge(orders::router())
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(app): State<SharedState>) -> impl IntoResponse {
    let nats = app.bus.client.connection_state() == async_nats::connection::State::Connected;
    let postgres = crate::db::ping(&app.db).await;
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if nats && postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not ready" },
            "nats": word(nats),
            "postgres": word(postgres),
        })),
    )
}

/// Checks `Authorization: Bearer <token>` against `expected` (named by its variable in the
/// refusal), in constant time.
pub(crate) fn bearer(
    headers: &HeaderMap,
    expected: &crate::config::Secret,
    variable: &str,
) -> Result<(), ApiError> {
    let token = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    if token.is_some_and(|t| {
        crate::signatures::constant_time_eq(t.as_bytes(), expected.expose().as_bytes())
    }) {
        return Ok(());
    }
    Err(
        ApiError::unauthorized(format!("send Authorization: Bearer <{variable}>")).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        ),
    )
}

/// A header's value as text, if present and printable.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
