//! The casino's ingress. The wallet's callers (`POST /casino/{getBalance,debit,credit,
//! rollback}`, signed `x-casino-signature`) and the front end's (`POST /casino/launchGame`,
//! `/casino/simulateRound`, bearer `CASINO_API_TOKEN`) are checked here (signature or token,
//! strict JSON, schema, amount decimals), then sent as one NATS request to the wallet service
//! and answered with its reply, byte for byte. Nothing is written here. `GET /casino/ledger`
//! and `/casino/reconciliation` (bearer `ADMIN_TOKEN`) read Postgres.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{ADMIN_TOKEN, CASINO_API_TOKEN, IngressConfig};
use super::domain::MoneyRequest;
use super::reply::Reply;
use super::signature::{CASINO_HEADER, verify};
use super::{schemas, store, subjects};
use crate::ingress::{self, ApiError, Context, Parent};
use crate::schemas::Schema;

pub struct Casino {
    hub: Context,
    cfg: IngressConfig,
    /// Per player, in this process.
    players: crate::ratelimit::Local,
}

pub type CasinoState = Arc<Casino>;

impl Casino {
    pub fn new(hub: &Context) -> anyhow::Result<CasinoState> {
        let cfg = IngressConfig::from_env(hub.env())?;
        let limit = cfg.player_rate_limit;
        Ok(Arc::new(Self {
            players: crate::ratelimit::Local::new(limit, f64::from(limit)),
            cfg,
            hub: hub.clone(),
        }))
    }
}

pub fn router() -> Router<CasinoState> {
    Router::new()
        .route("/casino/getBalance", post(get_balance))
        .route("/casino/debit", post(debit))
        .route("/casino/credit", post(credit))
        .route("/casino/rollback", post(rollback))
        .route("/casino/launchGame", post(launch_game))
        .route("/casino/simulateRound", post(simulate_round))
        .route("/casino/ledger", get(ledger))
        .route("/casino/reconciliation", get(reconciliation))
}

/// Who may call a route.
enum Caller {
    /// The game provider: `x-casino-signature` over the raw body.
    Provider,
    /// The casino front end: `Authorization: Bearer <CASINO_API_TOKEN>`.
    FrontEnd,
}

/// One wallet or front-end call: checked here, answered by the wallet service.
struct Call {
    span: tracing::Span,
    caller: Caller,
    schema: &'static Schema,
    subject: &'static str,
    /// Money moves: the amount's decimals are checked against the currency here.
    money: bool,
}

async fn get_balance(State(app): State<CasinoState>, h: HeaderMap, body: Bytes) -> Response {
    let call = Call {
        span: crate::server_span!("POST", "/casino/getBalance"),
        caller: Caller::Provider,
        schema: &schemas::BALANCE,
        subject: subjects::BALANCE,
        money: false,
    };
    forward(&app, call, &h, &body).await
}

async fn debit(State(app): State<CasinoState>, h: HeaderMap, body: Bytes) -> Response {
    let call = Call {
        span: crate::server_span!("POST", "/casino/debit"),
        caller: Caller::Provider,
        schema: &schemas::TRANSACTION,
        subject: subjects::DEBIT,
        money: true,
    };
    forward(&app, call, &h, &body).await
}

async fn credit(State(app): State<CasinoState>, h: HeaderMap, body: Bytes) -> Response {
    let call = Call {
        span: crate::server_span!("POST", "/casino/credit"),
        caller: Caller::Provider,
        schema: &schemas::TRANSACTION,
        subject: subjects::CREDIT,
        money: true,
    };
    forward(&app, call, &h, &body).await
}

async fn rollback(State(app): State<CasinoState>, h: HeaderMap, body: Bytes) -> Response {
    let call = Call {
        span: crate::server_span!("POST", "/casino/rollback"),
        caller: Caller::Provider,
        schema: &schemas::ROLLBACK,
        subject: subjects::ROLLBACK,
        money: false,
    };
    forward(&app, call, &h, &body).await
}

async fn launch_game(State(app): State<CasinoState>, h: HeaderMap, body: Bytes) -> Response {
    let call = Call {
        span: crate::server_span!("POST", "/casino/launchGame"),
        caller: Caller::FrontEnd,
        schema: &schemas::LAUNCH,
        subject: subjects::LAUNCH,
        money: false,
    };
    forward(&app, call, &h, &body).await
}

async fn simulate_round(State(app): State<CasinoState>, h: HeaderMap, body: Bytes) -> Response {
    let call = Call {
        span: crate::server_span!("POST", "/casino/simulateRound"),
        caller: Caller::FrontEnd,
        schema: &schemas::LAUNCH,
        subject: subjects::SIMULATE,
        money: false,
    };
    forward(&app, call, &h, &body).await
}

async fn forward(app: &Casino, call: Call, headers: &HeaderMap, body: &[u8]) -> Response {
    ingress::respond(call.span.clone(), Parent::Caller(headers), async {
        match call.caller {
            Caller::Provider => {
                let given = ingress::header(headers, CASINO_HEADER).ok_or_else(|| {
                    ApiError::unauthorized("send x-casino-signature: hex HMAC-SHA256 of the body")
                })?;
                if !verify(&app.cfg.casino_secret, given, body) {
                    return Err(ApiError::unauthorized(
                        "x-casino-signature does not match the body",
                    ));
                }
            }
            Caller::FrontEnd => {
                ingress::bearer(headers, &app.cfg.api_token, CASINO_API_TOKEN.name)?;
            }
        }
        let value = ingress::json_body(body)?;
        ingress::check_schema(call.schema, &value)?;
        let player = match &value["userId"] {
            Value::String(id) => id.clone(),
            other => other.to_string(),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let crate::ratelimit::Decision::Limited { retry_after } = app.players.take(&player, now_ms) {
            crate::metrics::rate_limited("casino_player");
            return Err(ApiError::too_many_requests(
                format!(
                    "player {player:?} is over CASINO_PLAYER_RATE_LIMIT_PER_SEC ({}/s): retry later",
                    app.cfg.player_rate_limit
                ),
                retry_after,
            ));
        }
        if call.money {
            let request: MoneyRequest = serde_json::from_value(value)
                .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
            request
                .minor()
                .map_err(|why| ApiError::unprocessable("invalid_amount", why))?;
        }
        // The front end's calls wait for the provider (a whole round for a simulation).
        let wait = match call.caller {
            Caller::Provider => app.cfg.wallet_timeout,
            Caller::FrontEnd => app.cfg.wallet_timeout + app.cfg.provider_timeout * 8,
        };
        let reply = request(app, call.subject, body, wait).await?;
        Ok(answer(reply))
    })
    .await
}

/// One request to the wallet service, waiting at most `wait`.
async fn request(app: &Casino, subject: &str, body: &[u8], wait: std::time::Duration) -> Result<Reply, ApiError> {
    let unavailable = |why: String| ApiError::unavailable(anyhow::anyhow!(why));
    if app.hub.bus.client.connection_state() != async_nats::connection::State::Connected {
        return Err(unavailable("NATS is not reachable: the wallet cannot answer now".into()));
    }
    let message = app
        .hub
        .bus
        .request(subject, Bytes::copy_from_slice(body), wait)
        .await
        .map_err(|err| {
            ingress::unanswered(err, "the wallet", wait, "retry with the same externalTransactionId")
        })?;
    Reply::from_message(&message)
        .ok_or_else(|| unavailable("the wallet's reply has no status".into()))
}

fn answer(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, reply.body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LedgerQuery {
    user_id: String,
    limit: Option<u32>,
}

/// `GET /casino/ledger?userId=`: the player's entries, newest first.
async fn ledger(
    State(app): State<CasinoState>,
    h: HeaderMap,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/casino/ledger");
    ingress::respond(span, Parent::Caller(&h), async {
        ingress::bearer(&h, &app.cfg.admin_token, ADMIN_TOKEN.name)?;
        let query = ingress::query(query)?;
        let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 1000));
        let entries = store::ledger(&app.hub.db, &query.user_id, limit)
            .await
            .map_err(ApiError::database)?;
        Ok(Json(json!({"userId": query.user_id, "entries": entries})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconciliationQuery {
    limit: Option<u32>,
}

/// `GET /casino/reconciliation[?limit=]`: balance against the sum of the ledger's entries for
/// every wallet (counts), and up to `limit` wallets (default 100), those that disagree first.
async fn reconciliation(
    State(app): State<CasinoState>,
    h: HeaderMap,
    query: Result<Query<ReconciliationQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/casino/reconciliation");
    ingress::respond(span, Parent::Caller(&h), async {
        ingress::bearer(&h, &app.cfg.admin_token, ADMIN_TOKEN.name)?;
        let limit = i64::from(ingress::query(query)?.limit.unwrap_or(100).min(10_000));
        let report = store::reconciliation(&app.hub.db, limit)
            .await
            .map_err(ApiError::database)?;
        Ok(Json(report).into_response())
    })
    .await
}
