//! The HTTP ingress: `/health`, `/ready`, and each integration's routes. Handlers are thin:
//! verify, parse, claim the idempotency key, publish one event, answer. The ingress writes only
//! to NATS; it reads Postgres for readiness and query endpoints.
//!
//! What every handler does the same way lives here: its server span ([`server_span!`],
//! [`respond`]), JSON and schema checks, bearer tokens, the idempotency claim and replay, and
//! `Prefer: wait=N`.

mod edge;
mod error;

pub use edge::{json_body, json_errors, meaningless_control};
pub use error::ApiError;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgPool;
use tracing::Instrument;

use crate::config::{Config, Env, Secret, SecretVar};
use crate::idempotency::{Claim, Idempotency, Record};
use crate::nats::Bus;
use crate::schemas::Schema;

/// An integration's routes: the secrets they need and how to build them.
pub struct Ingress {
    /// Its contract: the routes, their security and bodies (`GET /openapi.json`).
    pub api: &'static crate::openapi::Api,
    /// Checked, with those of every other part a process runs, before anything connects.
    pub secrets: &'static [&'static SecretVar],
    /// Builds the routes, with their state applied.
    pub routes: for<'a> fn(&'a Context) -> BoxFuture<'a, anyhow::Result<Router>>,
}

/// What an integration's routes can reach.
#[derive(Clone)]
pub struct Context {
    pub cfg: Arc<Config>,
    pub bus: Bus,
    pub db: PgPool,
    pub idempotency: Idempotency,
    /// The client for calls to partners (reconciliation reads them).
    pub http: reqwest::Client,
}

impl Context {
    /// Where the integration reads its settings and secrets.
    pub fn env(&self) -> &Env {
        &self.cfg.env
    }
}

/// `/health`, `/ready` and the integrations' `routes`. While NATS is known to be down, calls
/// that would publish (every method but GET and HEAD) are refused at once with 503 and
/// `Retry-After` instead of waiting out `PUBLISH_TIMEOUT_MS`.
pub fn router(ctx: &Context, routes: Vec<Router>, contract: Value) -> Router {
    let ready = Router::new()
        .route("/ready", get(ready))
        .with_state((ctx.bus.clone(), ctx.db.clone()));
    crate::metrics::install();
    routes
        .into_iter()
        .fold(Router::new(), Router::merge)
        .layer(axum::middleware::from_fn_with_state(
            ctx.bus.clone(),
            refuse_while_nats_is_down,
        ))
        .route("/health", get(health))
        .route("/openapi.json", get(move || async move { Json(contract) }))
        .merge(ready)
        .merge(crate::metrics::router())
        .route_layer(axum::middleware::from_fn(crate::metrics::http_requests))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            edge::refuse_control_characters_in_url,
        ))
        .fallback(edge::not_found)
        .layer(axum::middleware::map_response(edge::json_errors))
}

/// The largest request body the ingress reads (413 `body_too_large` beyond it).
pub const BODY_LIMIT: usize = 256 * 1024;

async fn refuse_while_nats_is_down(
    State(bus): State<Bus>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method();
    if method != axum::http::Method::GET
        && method != axum::http::Method::HEAD
        && let Err(why) = bus.connected()
    {
        return ApiError::unavailable(anyhow::anyhow!(why)).into_response();
    }
    next.run(request).await
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when NATS and Postgres answer; otherwise 503 with what is wrong in `reasons`.
async fn ready(State((bus, db)): State<(Bus, PgPool)>) -> impl IntoResponse {
    let nats = bus.connected();
    let postgres = crate::db::ping(&db).await;
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let mut reasons = Vec::new();
    if let Err(why) = &nats {
        reasons.push(why.clone());
    }
    if !postgres {
        reasons.push("Postgres does not answer; the pool reconnects by itself".to_string());
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "nats": word(nats.is_ok()),
        "postgres": word(postgres),
    });
    if !reasons.is_empty() {
        body["reasons"] = json!(reasons);
    }
    (status, Json(body))
}

/// The server span of a route, named and attributed as OpenTelemetry's HTTP conventions ask
/// (`POST /wallet/debit`, kind server, method, route, status code); further fields are
/// declared empty, for the handler to record.
#[macro_export]
macro_rules! server_span {
    ($method:literal, $route:literal $(, $field:ident)* $(,)?) => {
        ::tracing::info_span!(
            "request",
            otel.name = concat!($method, " ", $route),
            otel.kind = "server",
            http.request.method = $method,
            http.route = $route,
            url.scheme = "http",
            http.response.status_code = ::tracing::field::Empty,
            $($field = ::tracing::field::Empty,)*
        )
    };
}

/// Whose trace a request's span joins.
pub enum Parent<'a> {
    /// The caller's, when its headers carry a `traceparent`.
    Caller(&'a HeaderMap),
    /// None: the request starts its own trace.
    NewTrace,
}

/// Runs a handler's `work` inside its `span` and answers with what it comes to, success or
/// refusal, recording the status on the span.
pub async fn respond(
    span: tracing::Span,
    parent: Parent<'_>,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    if let Parent::Caller(headers) = parent {
        crate::telemetry::continue_from_http(&span, headers);
    }
    let response = work
        .instrument(span.clone())
        .await
        .unwrap_or_else(IntoResponse::into_response);
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// A query string as `T`, or 400 `invalid_query` saying what is wrong with it.
pub fn query<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(query)| query)
        .map_err(|err| ApiError::bad_request("invalid_query", err.body_text()))
}

/// 422 `invalid_body` with every violation of `schema`.
pub fn check_schema(schema: &Schema, value: &Value) -> Result<(), ApiError> {
    schema.check(value).map_err(|details| {
        ApiError::unprocessable(
            "invalid_body",
            format!("the body does not match schemas/{}", schema.name),
        )
        .with_details(details)
    })
}

/// Claims `key` for `record`: `None` when this request owns it, the stored record when the
/// same request came before, and `conflict` when another body holds the key.
pub async fn claim(
    idempotency: &Idempotency,
    key: &str,
    record: &Record,
    conflict: impl FnOnce() -> ApiError,
) -> Result<Option<Record>, ApiError> {
    match idempotency
        .claim(key, record)
        .await
        .map_err(ApiError::unavailable)?
    {
        Claim::Claimed => Ok(None),
        Claim::Repeat(stored) => Ok(Some(stored)),
        Claim::Conflict => Err(conflict()),
    }
}

/// The answer an idempotency record stores.
pub fn replayed(record: Record) -> Response {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    (status, Json(record.body)).into_response()
}

/// The 503 for a request to a service (`Bus::request`) that got no answer; the log says why
/// and what to do (`then`, e.g. "retry with the same externalTransactionId").
pub fn unanswered(
    err: async_nats::RequestError,
    service: &str,
    wait: Duration,
    then: &str,
) -> ApiError {
    let why = match err.kind() {
        async_nats::RequestErrorKind::NoResponders => {
            format!("no process serves {service}: start `ihub consume` (ihub dev runs one)")
        }
        async_nats::RequestErrorKind::TimedOut => {
            format!(
                "{service} did not answer within {} ms: {then}",
                wait.as_millis()
            )
        }
        _ => format!("{service} did not answer: {err}"),
    };
    ApiError::unavailable(anyhow::anyhow!(why))
}

/// `Prefer: wait=N` (RFC 7240), capped at `max`.
pub fn prefer_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|part| part.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(max))
        .find(|d| !d.is_zero())
}

/// Checks `Authorization: Bearer <token>` against `expected` (named by its variable in the
/// refusal), in constant time.
pub fn bearer(headers: &HeaderMap, expected: &Secret, variable: &str) -> Result<(), ApiError> {
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
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("prefer", value.parse().unwrap());
        prefer_wait(&headers, Duration::from_secs(10))
    }

    #[test]
    fn reads_prefer_wait() {
        assert_eq!(prefer("wait=5"), Some(Duration::from_secs(5)));
        assert_eq!(
            prefer("respond-async, wait=3"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(prefer("wait=60"), Some(Duration::from_secs(10)));
        assert_eq!(prefer("wait=0"), None);
        assert_eq!(prefer("respond-async"), None);
        assert_eq!(prefer("wait=soon"), None);
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let secret = Secret::new("t0ken");
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers, &secret, "ADMIN_TOKEN").is_err());
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        let refused = bearer(&headers, &secret, "ADMIN_TOKEN").unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert!(refused.message.contains("ADMIN_TOKEN"));
        headers.insert("authorization", "Bearer t0ken".parse().unwrap());
        assert!(bearer(&headers, &secret, "ADMIN_TOKEN").is_ok());
    }

    #[test]
    fn schema_refusals_name_the_file_and_every_violation() {
        crate::schema!(SAMPLE, "wallet/wallet-request.json");
        let refused = check_schema(&SAMPLE, &json!({"amount": "10"})).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            refused.message,
            "the body does not match schemas/wallet/wallet-request.json"
        );
        assert!(refused.details.len() >= 2, "{:?}", refused.details);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever `Prefer` holds, the wait is capped and never zero.
            #[test]
            fn any_prefer_header_gives_a_bounded_wait(value in "[ -~]{0,60}") {
                let mut headers = HeaderMap::new();
                if let Ok(value) = value.parse() {
                    headers.insert("prefer", value);
                }
                if let Some(wait) = prefer_wait(&headers, Duration::from_secs(10)) {
                    prop_assert!(!wait.is_zero() && wait <= Duration::from_secs(10));
                }
            }

            /// Any bearer header: no panic; only the exact token passes.
            #[test]
            fn any_authorization_header_passes_only_with_the_token(value in prop::collection::vec(any::<u8>(), 0..40)) {
                let mut headers = HeaderMap::new();
                if let Ok(value) = axum::http::HeaderValue::from_bytes(&value) {
                    headers.insert("authorization", value);
                }
                let passed = bearer(&headers, &Secret::new("t0ken"), "T").is_ok();
                prop_assert_eq!(passed, header(&headers, "authorization") == Some("Bearer t0ken"));
            }
        }
    }
}
