//! NewStore's ingress: `POST /webhooks/newstore[/{tenant}]` (signed webhooks),
//! `POST /webhooks/newstore/simulate` (with `NEWSTORE_SIMULATE=1`), and the status pages
//! `GET /newstore/events/{id}` and `GET /newstore/orders/{order_id}` (bearer `ADMIN_TOKEN`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{ADMIN_TOKEN, DEFAULT_TENANT, NewStoreConfig, Tenant};
use super::domain::{self, Envelope, EventKind};
use super::messages::{Accepted, order_key};
use super::signature::{self, SIGNATURE_HEADER};
use super::{schemas, simulate, store, subjects};
use crate::config::Secret;
use crate::idempotency::{self, Idempotency, Record};
use crate::ingress::{self, ApiError, Context, Parent, header};

pub struct NewStore {
    hub: Context,
    cfg: NewStoreConfig,
    admin_token: Secret,
}

pub type NewStoreState = Arc<NewStore>;

impl NewStore {
    pub fn new(hub: &Context) -> anyhow::Result<NewStoreState> {
        Ok(Arc::new(Self {
            cfg: NewStoreConfig::from_env(hub.env())?,
            admin_token: hub.env().secret(&ADMIN_TOKEN)?,
            hub: hub.clone(),
        }))
    }
}

pub fn router() -> Router<NewStoreState> {
    Router::new()
        .route("/webhooks/newstore", post(webhook_default))
        .route("/webhooks/newstore/simulate", post(simulate_event))
        .route("/webhooks/newstore/{tenant}", post(webhook_tenant))
        .route("/newstore/events/{id}", get(event_status))
        .route("/newstore/orders/{order_id}", get(order_status))
}

async fn webhook_default(
    State(app): State<NewStoreState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = crate::server_span!("POST", "/webhooks/newstore", event_id);
    ingress::respond(
        span,
        Parent::Caller(&headers),
        accept(&app, DEFAULT_TENANT, &headers, &body),
    )
    .await
}

async fn webhook_tenant(
    State(app): State<NewStoreState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = crate::server_span!("POST", "/webhooks/newstore/{tenant}", event_id);
    ingress::respond(
        span,
        Parent::Caller(&headers),
        accept(&app, &tenant, &headers, &body),
    )
    .await
}

fn tenant<'a>(app: &'a NewStore, name: &str) -> Result<&'a Tenant, ApiError> {
    app.cfg
        .tenant(name)
        .ok_or_else(|| ApiError::not_found(format!("no NewStore tenant {name:?}")))
}

/// 422 `invalid_body` with `details`.
fn unprocessable(details: Vec<String>) -> ApiError {
    ApiError::unprocessable("invalid_body", "the event's payload cannot be taken as it is")
        .with_details(details)
}

/// Verifies, parses and validates one webhook, claims its event id and publishes it.
async fn accept(
    app: &NewStore,
    tenant_name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let tenant = tenant(app, tenant_name)?;
    let given = header(headers, SIGNATURE_HEADER).ok_or_else(|| {
        ApiError::unauthorized("send X-NewStore-Signature: hex HMAC-SHA256 of the body")
    })?;
    if !signature::verify(&tenant.webhook_secret, given, body) {
        return Err(ApiError::unauthorized(
            "X-NewStore-Signature does not match the body",
        ));
    }
    let value = ingress::json_body(body)?;
    ingress::check_schema(&schemas::ENVELOPE, &value)?;
    let envelope: Envelope = serde_json::from_value(value)
        .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
    tracing::Span::current().record("event_id", envelope.id.as_str());
    let kind = EventKind::parse(&envelope.name);
    // The parsers check the payload's schema themselves (one pass), then what a schema
    // cannot: decimals per currency, sums, repeated item ids.
    let (order, return_event) = match kind {
        Some(EventKind::ReturnProcessed) => {
            let parsed = domain::parse_return(&envelope.payload).map_err(unprocessable)?;
            (None, Some(parsed))
        }
        Some(_) => {
            let parsed = domain::parse_order(&envelope.payload).map_err(unprocessable)?;
            (Some(parsed), None)
        }
        None => (None, None),
    };
    let order_id = order
        .as_ref()
        .map(|o| o.id.clone())
        .or_else(|| return_event.as_ref().map(|r| r.order_id.clone()));
    let status = if kind.is_some() { "accepted" } else { "ignored" };
    let event = Accepted {
        tenant: tenant.name.clone(),
        event_id: envelope.id.clone(),
        name: envelope.name.clone(),
        kind,
        published_at: envelope.published_at.clone(),
        order_id,
        order,
        return_event,
    };

    let key = Idempotency::key("newstore", &format!("{}:{}", tenant.name, envelope.id));
    let answer = json!({"event_id": envelope.id, "status": status});
    let record = Record {
        fingerprint: idempotency::fingerprint(body),
        resource_id: envelope.id.clone(),
        status: StatusCode::ACCEPTED.as_u16(),
        body: answer.clone(),
        done: false,
    };
    let claimed = app.hub.idempotency.claim(&key, &record).await;
    let duplicate = match claimed.map_err(ApiError::unavailable)? {
        idempotency::Claim::Claimed => false,
        // Published before, or its publish failed: publishing again heals the second, and the
        // stream (and the stage, by event id) drops the first.
        idempotency::Claim::Repeat(_) => true,
        // The same event id with another body: nothing new is published.
        idempotency::Claim::Conflict => {
            return Ok(answered("duplicate", &envelope.id));
        }
    };
    app.hub
        .bus
        .publish_json(
            subjects::EVENT,
            Some(&format!("newstore:{}:{}", tenant.name, envelope.id)),
            async_nats::HeaderMap::new(),
            &event,
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok(answered(
        if duplicate { "duplicate" } else { status },
        &envelope.id,
    ))
}

fn answered(status: &str, event_id: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event_id, "status": status})),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateRequest {
    name: Option<String>,
    order_id: Option<String>,
}

/// Builds a realistic event, signs it with the default tenant's secret and sends it through
/// the same path as NewStore's own (`NEWSTORE_SIMULATE=1` only).
async fn simulate_event(
    State(app): State<NewStoreState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = crate::server_span!("POST", "/webhooks/newstore/simulate", event_id);
    ingress::respond(span, Parent::Caller(&headers), async {
        if !app.cfg.simulate {
            return Err(ApiError::not_found(
                "simulation is off: set NEWSTORE_SIMULATE=1 (ihub dev does)",
            ));
        }
        let request: SimulateRequest = if body.iter().all(u8::is_ascii_whitespace) {
            SimulateRequest::default()
        } else {
            serde_json::from_value(ingress::json_body(&body)?)
                .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?
        };
        let name = request.name.as_deref().unwrap_or("order.completed");
        let kind = EventKind::parse(name).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_body",
                format!("simulate takes order.opened, order.completed, order.cancelled or return.processed, not {name:?}"),
            )
        })?;
        let order_id = match request.order_id {
            Some(id) => id,
            None => format!("sim-{}", uuid::Uuid::now_v7().simple()),
        };
        let event = simulate::event(kind, &order_id, 0);
        let raw = serde_json::to_vec(&event).map_err(|err| ApiError::internal(err.into()))?;
        let tenant = tenant(&app, DEFAULT_TENANT)?;
        let mut signed = HeaderMap::new();
        let signature = signature::sign(&tenant.webhook_secret, &raw);
        signed.insert(
            SIGNATURE_HEADER,
            signature.parse().map_err(|_| {
                ApiError::internal(anyhow::anyhow!("a hex signature is a header value"))
            })?,
        );
        let answer = accept(&app, DEFAULT_TENANT, &signed, &raw).await?;
        Ok((answer.status(), Json(json!({"event": event, "answer": answer_body(answer).await})))
            .into_response())
    })
    .await
}

async fn answer_body(answer: Response) -> Value {
    let bytes = axum::body::to_bytes(answer.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    tenant: Option<String>,
}

/// `GET /newstore/events/{id}?tenant=`: the event, its status and every Hail attempt.
async fn event_status(
    State(app): State<NewStoreState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/newstore/events/{id}");
    ingress::respond(span, Parent::Caller(&headers), async {
        ingress::bearer(&headers, &app.admin_token, ADMIN_TOKEN.name)?;
        let query = ingress::query(query)?;
        let tenant = tenant(&app, query.tenant.as_deref().unwrap_or(DEFAULT_TENANT))?;
        let db = &app.hub.db;
        let event = store::event(db, &tenant.name, &id)
            .await
            .map_err(ApiError::database)?
            .ok_or_else(|| ApiError::not_found(format!("no event {id:?} for tenant {}", tenant.name)))?;
        let attempts = match &event.hail_transaction_id {
            Some(tx) => store::attempts(db, tx).await.map_err(ApiError::database)?,
            None => Vec::new(),
        };
        let attempts: Vec<Value> = attempts
            .into_iter()
            .map(|(attempt, status_code, error)| {
                json!({"attempt": attempt, "status_code": status_code, "error": error})
            })
            .collect();
        let mut body = serde_json::to_value(&event).map_err(|err| ApiError::internal(err.into()))?;
        body["attempts"] = json!(attempts);
        Ok(Json(body).into_response())
    })
    .await
}

/// `GET /newstore/orders/{order_id}?tenant=`: what was sent for the order, its events in
/// arrival order, and what is parked for it.
async fn order_status(
    State(app): State<NewStoreState>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/newstore/orders/{order_id}");
    ingress::respond(span, Parent::Caller(&headers), async {
        ingress::bearer(&headers, &app.admin_token, ADMIN_TOKEN.name)?;
        let query = ingress::query(query)?;
        let tenant = tenant(&app, query.tenant.as_deref().unwrap_or(DEFAULT_TENANT))?;
        let db = &app.hub.db;
        let order = store::order(db, &tenant.name, &order_id)
            .await
            .map_err(ApiError::database)?
            .ok_or_else(|| {
                ApiError::not_found(format!("no order {order_id:?} for tenant {}", tenant.name))
            })?;
        let events = store::order_events(db, &tenant.name, &order_id)
            .await
            .map_err(ApiError::database)?;
        let parked = crate::runtime::park::parked(
            &app.hub.bus,
            subjects::PARKING_DURABLE,
            &order_key(&tenant.name, &order_id),
        )
        .await
        .map_err(ApiError::unavailable)?;
        Ok(Json(json!({
            "order": order,
            "events": events,
            "parked": parked.len(),
        }))
        .into_response())
    })
    .await
}
