//! `POST /orders` (seed 3): checks, in order, the partner's credentials (401), its source IP
//! against its allowlist (403), its token bucket (429), the body (400/422), the `callback_url`
//! (400, SSRF rules), then the idempotency key and the external order id (the original order,
//! or 409), and publishes `in.wavegate.order_accepted`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Caller, authenticate};
use super::domain::{Order, OrderAccepted, OrderRequest, PartnerId, PipelineStatus};
use super::state::{State as WaveGateState, WaveGate};
use super::{schemas, subjects};
use crate::idempotency::{self, Idempotency, Record};
use crate::ingress::{self, ApiError, Parent, header};
use crate::ratelimit::Decision;
use crate::signatures::canonical_json;

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

pub async fn create(
    State(app): State<WaveGateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Each order is its own trace, started here; its id is the order's trace_id.
    let span = crate::server_span!("POST", "/orders", partner_id, order_id, trace_id);
    let trace_id = crate::telemetry::trace_uuid(&span);
    span.record("trace_id", tracing::field::display(trace_id));
    let caller = Caller::new(&app, peer, &headers, Method::POST);
    ingress::respond(
        span,
        Parent::NewTrace,
        accept(&app, &caller, &headers, &body, trace_id),
    )
    .await
}

async fn accept(
    app: &WaveGate,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    trace_id: Uuid,
) -> Result<Response, ApiError> {
    let partner = authenticate(app, caller, headers).await?;
    if let Decision::Limited { retry_after } = app
        .limiter
        .take(partner.as_str())
        .await
        .map_err(ApiError::unavailable)?
    {
        crate::metrics::rate_limited("wavegate_partner");
        let error = ApiError::too_many_requests(
            format!("partner {partner} is over its rate limit"),
            retry_after,
        );
        return Err(caller
            .refuse(app, Some(partner.as_str()), "rate_limited", error)
            .await);
    }

    let value = ingress::json_body(body)?;
    let raw_key = header(headers, "idempotency-key");
    if let Some(key) = raw_key {
        idempotency::validate_key(key)
            .map_err(|msg| ApiError::bad_request("invalid_idempotency_key", msg))?;
    }
    ingress::check_schema(&schemas::ORDER_REQUEST, &value)?;
    let request: OrderRequest = serde_json::from_value(value.clone())
        .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
    let (currency, total_minor) = request
        .totals()
        .map_err(|msg| ApiError::unprocessable("invalid_items", msg))?;
    app.cfg
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

    let idempotency = &app.hub.idempotency;
    let by_key = raw_key.map(|key| Idempotency::key(&format!("orders-{partner}"), key));
    if let Some(key) = &by_key {
        let conflict = || {
            ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was already used with a different order",
            )
        };
        if let Some(stored) = ingress::claim(idempotency, key, &record, conflict).await? {
            return replay(app, stored, event).await;
        }
    }
    let by_external = Idempotency::key(
        &format!("orders-ext-{partner}"),
        &event.order.external_order_id,
    );
    let conflict = || {
        ApiError::conflict(
            "external_order_id_conflict",
            format!(
                "external_order_id {:?} was already used with a different order",
                event.order.external_order_id
            ),
        )
    };
    match ingress::claim(idempotency, &by_external, &record, conflict).await {
        Ok(None) => {}
        Ok(Some(stored)) => {
            if let Some(key) = &by_key {
                idempotency
                    .complete(key, &stored)
                    .await
                    .map_err(ApiError::unavailable)?;
            }
            return replay(app, stored, event).await;
        }
        Err(refusal) => {
            if let Some(key) = &by_key {
                // The key was claimed for an order that will not exist: free it.
                let _ = idempotency.release(key).await;
            }
            return Err(refusal);
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
    app: &WaveGate,
    stored: Record,
    mut event: OrderAccepted,
) -> Result<Response, ApiError> {
    let original: Accepted = serde_json::from_value(stored.body.clone()).map_err(|err| {
        ApiError::internal(anyhow::anyhow!("stored order answer unreadable: {err}"))
    })?;
    event.order.id = original.id;
    event.order.trace_id = original.trace_id;
    event.order.created_at = original.created_at;
    tracing::Span::current().record("order_id", tracing::field::display(original.id));
    publish(app, &event).await?;
    Ok(ingress::replayed(stored))
}

async fn publish(app: &WaveGate, event: &OrderAccepted) -> Result<(), ApiError> {
    app.hub
        .bus
        .publish_json(
            subjects::ORDER_ACCEPTED,
            Some(&format!("order:{}", event.order.id)),
            async_nats::HeaderMap::new(),
            event,
        )
        .await
        .map_err(ApiError::unavailable)?;
    Ok(())
}
