//! WaveGate's ingress (seed 3): OTA partners post orders and read them back.
//!
//! `POST /orders` checks, in order: the partner's credentials (401), its source IP against its
//! allowlist (403), its token bucket (429), the body (400/422), the `callback_url` (400, SSRF
//! rules), then the idempotency key and the external order id (the original order, or 409), and
//! publishes `in.wavegate.order_accepted`. Refused calls are published as
//! `in.wavegate.auth_refused` for the `auth_events` table. `GET /orders` and `GET /orders/{id}`
//! read Postgres with the same credentials; `GET /admin/orders` finds blocked and stuck orders.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::{ApiError, SharedState, header};
use crate::config::{Config, Secret, SecretVar};
use crate::domain::wavegate::{
    AuthRefused, Order, OrderAccepted, OrderRequest, PartnerId, PipelineStatus,
};
use crate::idempotency::{self, Claim, Idempotency, Record};
use crate::ratelimit::{Decision, RateLimiter};
use crate::signatures::{canonical_json, constant_time_eq, hmac_sha256};
use crate::ssrf::CallbackPolicy;
use crate::{db, schemas};

/// WaveGate's settings, as the ingress needs them.
pub struct OrdersIngress {
    token_key: Secret,
    admin_token: Secret,
    trusted_proxies: Vec<IpNet>,
    limiter: RateLimiter,
    callbacks: CallbackPolicy,
}

impl OrdersIngress {
    pub async fn new(cfg: &Config, bus: &crate::nats::Bus) -> anyhow::Result<Self> {
        cfg.require(&[SecretVar::AppHmac, SecretVar::AdminToken])?;
        let wavegate = &cfg.wavegate;
        Ok(Self {
            token_key: cfg.secret(SecretVar::AppHmac)?,
            admin_token: cfg.secret(SecretVar::AdminToken)?,
            trusted_proxies: wavegate.trusted_proxies.clone(),
            limiter: RateLimiter::new(
                bus.kv("ratelimit").await?,
                wavegate.rate_limit_capacity,
                wavegate.rate_limit_per_sec,
            ),
            callbacks: wavegate.callbacks.clone(),
        })
    }
}

/// How a partner token is stored: hex HMAC-SHA256(APP_HMAC_SECRET, token).
pub fn token_hash(key: &Secret, token: &str) -> String {
    hex::encode(hmac_sha256(key.expose().as_bytes(), token.as_bytes()))
}

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(show))
        .route("/admin/orders", get(admin_list))
}

/// Who is calling, as far as the checks go.
struct Caller {
    ip: IpAddr,
    user_agent: Option<String>,
    method: Method,
    path: &'static str,
}

impl Caller {
    fn new(app: &SharedState, peer: SocketAddr, headers: &HeaderMap, method: Method) -> Self {
        Caller {
            ip: client_ip(peer.ip(), headers, &app.orders.trusted_proxies),
            user_agent: header(headers, "user-agent").map(|ua| ua.chars().take(512).collect()),
            path: if method == Method::POST {
                "/orders"
            } else {
                "/orders/*"
            },
            method,
        }
    }

    /// Records the refusal (best effort: a refusal must not wait on it) and returns it.
    async fn refuse(
        &self,
        app: &SharedState,
        partner: Option<&str>,
        reason: &str,
        error: ApiError,
    ) -> ApiError {
        let event = AuthRefused {
            id: Uuid::now_v7(),
            partner_id: partner.map(|p| p.chars().take(64).collect()),
            reason: reason.to_string(),
            ip: self.ip.to_string(),
            user_agent: self.user_agent.clone(),
            method: self.method.to_string(),
            path: self.path.to_string(),
            occurred_at: chrono::Utc::now(),
        };
        tracing::info!(
            reason,
            partner = partner.unwrap_or("-"),
            ip = %self.ip,
            "call refused"
        );
        let id = event.id.to_string();
        match serde_json::to_vec(&event) {
            Ok(payload) => {
                if let Err(err) = app
                    .bus
                    .publish(
                        "in.wavegate.auth_refused",
                        Some(&id),
                        async_nats::HeaderMap::new(),
                        payload.into(),
                    )
                    .await
                {
                    tracing::warn!(error = format!("{err:#}"), "auth event not recorded");
                }
            }
            Err(err) => tracing::warn!(%err, "auth event not serialisable"),
        }
        error
    }
}

/// The client's address: the socket's peer, or — only when that peer is a trusted proxy — the
/// nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[derive(sqlx::FromRow)]
struct PartnerRow {
    token_hash: String,
    allowlist_cidrs: Vec<String>,
}

/// Checks `X-Partner-Id` / `X-Partner-Token` (401) and the source IP (403).
async fn authenticate(
    app: &SharedState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<PartnerId, ApiError> {
    let claimed = header(headers, "x-partner-id");
    let invalid = || ApiError::unauthorized("invalid partner or token");
    let (Some(raw_id), Some(token)) = (claimed, header(headers, "x-partner-token")) else {
        let error = ApiError::unauthorized("send X-Partner-Id and X-Partner-Token");
        return Err(caller
            .refuse(app, claimed, "missing_credentials", error)
            .await);
    };
    let Ok(partner) = PartnerId::parse(raw_id) else {
        return Err(caller
            .refuse(app, Some(raw_id), "unknown_partner", invalid())
            .await);
    };
    let row: Option<PartnerRow> =
        sqlx::query_as("SELECT token_hash, allowlist_cidrs FROM partners WHERE id = $1")
            .bind(partner.as_str())
            .fetch_optional(&app.db)
            .await
            .map_err(|err| ApiError::unavailable(err.into()))?;
    let Some(row) = row else {
        return Err(caller
            .refuse(app, Some(raw_id), "unknown_partner", invalid())
            .await);
    };
    let presented = token_hash(&app.orders.token_key, token);
    if !constant_time_eq(presented.as_bytes(), row.token_hash.as_bytes()) {
        return Err(caller
            .refuse(app, Some(raw_id), "invalid_token", invalid())
            .await);
    }
    let allowed = row
        .allowlist_cidrs
        .iter()
        .any(|cidr| crate::config::parse_net(cidr).is_ok_and(|net| net.contains(&caller.ip)));
    if !allowed {
        let error = ApiError::forbidden(
            "ip_not_allowed",
            format!(
                "source IP {} is not allowlisted for partner {partner}",
                caller.ip
            ),
        );
        return Err(caller
            .refuse(app, Some(raw_id), "ip_not_allowed", error)
            .await);
    }
    Ok(partner)
}

/// What `POST /orders` answers (201), stored for replays.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Accepted {
    id: Uuid,
    partner_id: PartnerId,
    external_order_id: String,
    trace_id: Uuid,
    pipeline_status: PipelineStatus,
    created_at: chrono::DateTime<chrono::Utc>,
}

async fn create(
    State(app): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Each order is its own trace, started here; its id is the order's trace_id.
    let span = tracing::info_span!(
        "order request",
        otel.name = "POST /orders",
        otel.kind = "server",
        http.route = "/orders",
        partner_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let trace_id = crate::telemetry::trace_uuid(&span);
    span.record("trace_id", tracing::field::display(trace_id));
    let caller = Caller::new(&app, peer, &headers, Method::POST);
    accept(&app, &caller, &headers, &body, trace_id)
        .instrument(span)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn accept(
    app: &SharedState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    trace_id: Uuid,
) -> Result<Response, ApiError> {
    let partner = authenticate(app, caller, headers).await?;
    tracing::Span::current().record("partner_id", partner.as_str());
    if let Decision::Limited { retry_after } = app
        .orders
        .limiter
        .take(partner.as_str())
        .await
        .map_err(ApiError::unavailable)?
    {
        let error = ApiError::too_many_requests(
            format!("partner {partner} is over its rate limit"),
            retry_after,
        );
        return Err(caller
            .refuse(app, Some(partner.as_str()), "rate_limited", error)
            .await);
    }

    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request("invalid_json", format!("the body is not JSON: {err}"))
    })?;
    let raw_key = header(headers, "idempotency-key");
    if let Some(key) = raw_key {
        idempotency::validate_key(key)
            .map_err(|msg| ApiError::bad_request("invalid_idempotency_key", msg))?;
    }
    schemas::ORDER_REQUEST.check(&value).map_err(|details| {
        ApiError::unprocessable(
            "invalid_body",
            "the body does not match schemas/order-request.json",
        )
        .with_details(details)
    })?;
    let request: OrderRequest = serde_json::from_value(value.clone())
        .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
    let (currency, total_minor) = request
        .totals()
        .map_err(|msg| ApiError::unprocessable("invalid_items", msg))?;
    app.orders
        .callbacks
        .check(&request.callback_url)
        .await
        .map_err(|violation| {
            ApiError::bad_request("invalid_callback_url", format!("callback_url: {violation}"))
                .with_details(vec![violation.rule().to_string()])
        })?;

    let order = Order {
        id: Uuid::now_v7(),
        partner_id: partner.clone(),
        external_order_id: request.external_order_id,
        trace_id,
        callback_url: request.callback_url,
        currency,
        total_minor,
        items: request.items,
        buyer: request.buyer,
        created_at: chrono::Utc::now(),
    };
    let accepted = Accepted {
        id: order.id,
        partner_id: partner.clone(),
        external_order_id: order.external_order_id.clone(),
        trace_id,
        pipeline_status: PipelineStatus::Accepted,
        created_at: order.created_at,
    };
    let record = Record {
        fingerprint: idempotency::fingerprint(canonical_json(&value).as_bytes()),
        resource_id: order.id.to_string(),
        status: StatusCode::CREATED.as_u16(),
        body: serde_json::to_value(&accepted).map_err(|e| ApiError::internal(e.into()))?,
        done: true,
    };
    let event = OrderAccepted {
        order,
        idempotency_key: raw_key.map(str::to_string),
        raw_payload: value,
    };

    let by_key = raw_key.map(|key| Idempotency::key(&format!("orders-{partner}"), key));
    let by_external = Idempotency::key(
        &format!("orders-ext-{partner}"),
        &event.order.external_order_id,
    );
    let claim = |key: String| {
        let record = &record;
        async move {
            app.idempotency
                .claim(&key, record)
                .await
                .map_err(ApiError::unavailable)
        }
    };
    if let Some(key) = &by_key {
        match claim(key.clone()).await? {
            Claim::Claimed => {}
            Claim::Existing(existing) if existing.fingerprint != record.fingerprint => {
                return Err(ApiError::conflict(
                    "idempotency_conflict",
                    "this Idempotency-Key was already used with a different order",
                ));
            }
            Claim::Existing(existing) => return replay(app, existing, event).await,
        }
    }
    match claim(by_external).await? {
        Claim::Claimed => {}
        Claim::Existing(existing) if existing.fingerprint != record.fingerprint => {
            if let Some(key) = &by_key {
                // The key was claimed for an order that will not exist: free it.
                let _ = app.idempotency.release(key).await;
            }
            return Err(ApiError::conflict(
                "external_order_id_conflict",
                format!(
                    "external_order_id {:?} was already used with a different order",
                    event.order.external_order_id
                ),
            ));
        }
        Claim::Existing(existing) => {
            if let Some(key) = &by_key {
                app.idempotency
                    .complete(key, &existing)
                    .await
                    .map_err(ApiError::unavailable)?;
            }
            return replay(app, existing, event).await;
        }
    }
    publish(app, &event).await?;
    tracing::Span::current().record("order_id", tracing::field::display(event.order.id));
    Ok((StatusCode::CREATED, Json(record.body)).into_response())
}

/// Answers with the original order and publishes its event again: a request that claimed its
/// keys but died before publishing is healed by the partner's retry (the stream drops the
/// duplicate otherwise).
async fn replay(
    app: &SharedState,
    existing: Record,
    mut event: OrderAccepted,
) -> Result<Response, ApiError> {
    let original: Accepted = serde_json::from_value(existing.body.clone()).map_err(|err| {
        ApiError::internal(anyhow::anyhow!("stored order answer unreadable: {err}"))
    })?;
    event.order.id = original.id;
    event.order.trace_id = original.trace_id;
    event.order.created_at = original.created_at;
    tracing::Span::current().record("order_id", tracing::field::display(original.id));
    publish(app, &event).await?;
    let status = StatusCode::from_u16(existing.status).unwrap_or(StatusCode::CREATED);
    Ok((status, Json(existing.body)).into_response())
}

async fn publish(app: &SharedState, event: &OrderAccepted) -> Result<(), ApiError> {
    let payload = serde_json::to_vec(event).map_err(|e| ApiError::internal(e.into()))?;
    app.bus
        .publish(
            "in.wavegate.order_accepted",
            Some(&format!("order:{}", event.order.id)),
            async_nats::HeaderMap::new(),
            payload.into(),
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    /// Cursor: the `next_before` of the previous page.
    before: Option<Uuid>,
}

#[derive(Serialize, sqlx::FromRow)]
struct OrderSummary {
    id: Uuid,
    partner_id: String,
    external_order_id: String,
    trace_id: Uuid,
    status: String,
    blocked_reason: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

const SUMMARY_COLUMNS: &str = "id, partner_id, external_order_id, trace_id, \
     pipeline_status AS status, blocked_reason, created_at, updated_at";

/// The calling partner's orders, newest first, `limit` (default 20, at most 100) a page.
async fn list(
    State(app): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    async {
        let caller = Caller::new(&app, peer, &headers, Method::GET);
        let partner = authenticate(&app, &caller, &headers).await?;
        let limit = query.limit.unwrap_or(20).clamp(1, 100);
        let mut orders: Vec<OrderSummary> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM orders
             WHERE partner_id = $1 AND ($2::uuid IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(partner.as_str())
        .bind(query.before)
        .bind(limit + 1)
        .fetch_all(&app.db)
        .await
        .map_err(|err| ApiError::unavailable(err.into()))?;
        let next_before = (orders.len() as i64 > limit).then(|| {
            orders.truncate(limit as usize);
            orders.last().map(|o| o.id)
        });
        Ok::<_, ApiError>(Json(
            json!({"orders": orders, "next_before": next_before.flatten()}),
        ))
    }
    .await
    .into_response()
}

/// One of the calling partner's orders with its items, tickets and jobs (404 for anyone else's).
async fn show(
    State(app): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    async {
        let caller = Caller::new(&app, peer, &headers, Method::GET);
        let partner = authenticate(&app, &caller, &headers).await?;
        let not_found = || ApiError::not_found(format!("no order {id} for partner {partner}"));
        let order_id: Uuid = id.parse().map_err(|_| not_found())?;
        let detail = db::wavegate::order_detail(&app.db, order_id, Some(partner.as_str()))
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(not_found)?;
        Ok::<_, ApiError>(Json(detail))
    }
    .await
    .into_response()
}

#[derive(Debug, Deserialize)]
struct AdminQuery {
    /// Comma-separated pipeline statuses.
    status: Option<String>,
    partner_id: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders still in flight that have not moved for this many seconds.
    stuck_secs: Option<u64>,
    limit: Option<i64>,
}

/// `GET /admin/orders?status=&partner_id=&since=&stuck_secs=` behind `ADMIN_TOKEN`.
async fn admin_list(
    State(app): State<SharedState>,
    headers: HeaderMap,
    query: Result<Query<AdminQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    async {
        super::bearer(&headers, &app.orders.admin_token, "ADMIN_TOKEN")?;
        let Query(query) =
            query.map_err(|err| ApiError::bad_request("invalid_query", err.body_text()))?;
        let statuses = query
            .status
            .as_deref()
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        PipelineStatus::parse(s).map(|s| s.as_str()).ok_or_else(|| {
                            ApiError::bad_request("invalid_query", format!("unknown status {s:?}"))
                                .with_details(
                                    PipelineStatus::ALL
                                        .iter()
                                        .map(|s| s.as_str().to_string())
                                        .collect(),
                                )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let orders: Vec<OrderSummary> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM orders
             WHERE ($1::text[] IS NULL OR pipeline_status = ANY($1))
               AND ($2::text IS NULL OR partner_id = $2)
               AND ($3::timestamptz IS NULL OR created_at >= $3)
               AND ($4::float8 IS NULL OR (
                    pipeline_status IN ('accepted', 'ticketing_processing', 'ticketed',
                                        'ota_callback_pending')
                    AND updated_at < now() - make_interval(secs => $4)))
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(statuses)
        .bind(query.partner_id)
        .bind(query.since)
        .bind(query.stuck_secs.map(|s| s as f64))
        .bind(query.limit.unwrap_or(100).clamp(1, 500))
        .fetch_all(&app.db)
        .await
        .map_err(|err| ApiError::unavailable(err.into()))?;
        Ok::<_, ApiError>(Json(json!({ "orders": orders })))
    }
    .await
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let headers = xff("203.0.113.9, 10.0.0.7");
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        // A spoofed first hop does not win over the address the proxy saw.
        let headers = xff("1.1.1.1, 203.0.113.9");
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn tokens_are_stored_as_keyed_hashes() {
        let key = Secret::new("k");
        let hash = token_hash(&key, "demotoken");
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, token_hash(&Secret::new("other"), "demotoken"));
        assert!(!hash.contains("demotoken"));
    }
}
