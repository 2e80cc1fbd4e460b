//! The wallet hub's ingress (seed 1): `POST /wallet/debit`, `POST /wallet/credit` from the RGS,
//! `POST /webhooks/incoming` from the operator.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use super::config::{RECONCILIATION_TOKEN, WALLET_HMAC, WalletConfig, operator_webhook_secret};
use super::domain::{Kind, OperatorCallback, Request, Requested};
use super::{schemas, subjects};
use crate::config::Secret;
use crate::idempotency::{self, Idempotency, Record};
use crate::ingress::{self, ApiError, Context, Parent, header};
use crate::nats::headers;
use crate::signatures::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, TimestampedHmac, canonical_json, unix_now,
};

/// What the wallet's routes share.
pub struct Wallet {
    pub hub: Context,
    pub cfg: WalletConfig,
    signer: TimestampedHmac,
    operator_signer: TimestampedHmac,
    pub reconciliation_token: Secret,
}

pub type WalletState = Arc<Wallet>;

impl Wallet {
    pub fn new(hub: &Context) -> anyhow::Result<WalletState> {
        let env = hub.env();
        let cfg = WalletConfig::from_env(env)?;
        Ok(Arc::new(Self {
            signer: TimestampedHmac::new(env.secret(&WALLET_HMAC)?, cfg.signature_tolerance),
            operator_signer: TimestampedHmac::new(
                operator_webhook_secret(env)?,
                cfg.signature_tolerance,
            ),
            reconciliation_token: env.secret(&RECONCILIATION_TOKEN)?,
            hub: hub.clone(),
            cfg,
        }))
    }
}

pub fn router() -> Router<WalletState> {
    Router::new()
        .route("/wallet/debit", post(debit))
        .route("/wallet/credit", post(credit))
        .route("/webhooks/incoming", post(operator_callback))
}

async fn debit(State(app): State<WalletState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("POST", "/wallet/debit", transaction_id);
    ingress::respond(
        span,
        Parent::Caller(&headers),
        accept(&app, Kind::Debit, &headers, &body),
    )
    .await
}

async fn credit(State(app): State<WalletState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("POST", "/wallet/credit", transaction_id);
    ingress::respond(
        span,
        Parent::Caller(&headers),
        accept(&app, Kind::Credit, &headers, &body),
    )
    .await
}

/// Parses the body and checks its signature: what every signed wallet call starts with.
fn verified_json(
    signer: &TimestampedHmac,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, String), ApiError> {
    let value = ingress::json_body(body)?;
    let canonical = canonical_json(&value);
    signer
        .verify(
            header(headers, TIMESTAMP_HEADER),
            header(headers, SIGNATURE_HEADER),
            &canonical,
            unix_now(),
        )
        .map_err(ApiError::unauthorized)?;
    Ok((value, canonical))
}

async fn accept(
    app: &Wallet,
    kind: Kind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (value, canonical) = verified_json(&app.signer, headers, body)?;
    let raw_key = header(headers, "idempotency-key").ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "the Idempotency-Key header is required",
        )
    })?;
    idempotency::validate_key(raw_key)
        .map_err(|msg| ApiError::bad_request("invalid_idempotency_key", msg))?;
    ingress::check_schema(&schemas::WALLET_REQUEST, &value)?;
    let request: Request = serde_json::from_value(value)
        .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
    if !app.cfg.currencies.contains(&request.currency) {
        let accepted: Vec<&str> = app.cfg.currencies.iter().map(|c| c.code()).collect();
        return Err(ApiError::unprocessable(
            "currency_not_accepted",
            format!(
                "{} is not accepted; accepted: {}",
                request.currency,
                accepted.join(", ")
            ),
        ));
    }
    let wait = ingress::prefer_wait(headers, app.hub.cfg.max_wait);

    let key = Idempotency::key(&format!("wallet-{}", kind.as_str()), raw_key);
    let new_id = Uuid::now_v7();
    let pending = Record {
        fingerprint: idempotency::fingerprint(canonical.as_bytes()),
        resource_id: new_id.to_string(),
        status: StatusCode::ACCEPTED.as_u16(),
        body: json!({"transaction_id": new_id, "status": "pending"}),
        done: false,
    };
    let record = match ingress::claim(&app.hub.idempotency, &key, &pending, || {
        ApiError::conflict(
            "idempotency_conflict",
            "this Idempotency-Key was already used with a different body",
        )
    })
    .await?
    {
        None => pending,
        Some(stored) if stored.done => return Ok(ingress::replayed(stored)),
        Some(stored) => stored,
    };
    let transaction_id: Uuid = record.resource_id.parse().map_err(|_| {
        ApiError::internal(anyhow::anyhow!(
            "idempotency record holds no transaction id"
        ))
    })?;
    tracing::Span::current().record("transaction_id", tracing::field::display(transaction_id));

    // Listen before publishing, so the outcome cannot slip past.
    let mut outcome = match wait {
        Some(_) => Some(
            app.hub
                .bus
                .client
                .subscribe(app.hub.bus.names.subject(&subjects::outcome(transaction_id)))
                .await
                .map_err(|err| ApiError::unavailable(err.into()))?,
        ),
        None => None,
    };

    // A replay of a pending request publishes again: if the first request claimed the key but
    // died before publishing, this heals it; otherwise the stream drops the duplicate.
    let event = Requested {
        transaction_id,
        kind,
        player_id: request.player_id,
        amount: request.amount,
        currency: request.currency,
        round_id: request.round_id,
        game_id: request.game_id,
    };
    let mut event_headers = async_nats::HeaderMap::new();
    event_headers.insert(headers::IDEMPOTENCY_KEY, key.as_str());
    event_headers.insert(headers::FINGERPRINT, record.fingerprint.as_str());
    app.hub
        .bus
        .publish_json(
            subjects::requested(kind),
            Some(&transaction_id.to_string()),
            event_headers,
            &event,
        )
        .await
        .map_err(ApiError::unavailable)?;

    if let (Some(wait), Some(subscriber)) = (wait, outcome.as_mut()) {
        if let Ok(Some(message)) = tokio::time::timeout(wait, subscriber.next()).await
            && let Ok(body) = serde_json::from_slice::<Value>(&message.payload)
        {
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        // It may have finished before we subscribed (a replay of an older request).
        if let Ok(Some(latest)) = app.hub.idempotency.get(&key).await
            && latest.done
        {
            return Ok(ingress::replayed(latest));
        }
    }
    Ok(ingress::replayed(record))
}

/// The operator's asynchronous notification after a withdraw or deposit.
async fn operator_callback(
    State(app): State<WalletState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = crate::server_span!("POST", "/webhooks/incoming");
    ingress::respond(span, Parent::Caller(&headers), async {
        let (value, _) = verified_json(&app.operator_signer, &headers, &body)?;
        ingress::check_schema(&schemas::OPERATOR_CALLBACK, &value)?;
        let callback: OperatorCallback = serde_json::from_value(value)
            .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
        let msg_id = format!("opcb:{}:{}", callback.transaction_id, callback.event);
        app.hub
            .bus
            .publish_json(
                subjects::OPERATOR_CALLBACK,
                Some(&msg_id),
                async_nats::HeaderMap::new(),
                &callback,
            )
            .await
            .map_err(ApiError::unavailable)?;
        Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response())
    })
    .await
}
