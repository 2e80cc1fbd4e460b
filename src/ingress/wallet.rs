//! The wallet hub's ingress (seed 1): `POST /wallet/debit`, `POST /wallet/credit` from the RGS,
//! `POST /webhooks/incoming` from the operator.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::{ApiError, SharedState, header};
use crate::config::{Config, Secret, SecretVar};
use crate::consumers::deliver_operator::outcome_subject;
use crate::domain::Currency;
use crate::domain::wallet::{Kind, OperatorCallback, Request, Requested};
use crate::idempotency::{self, Claim, Idempotency, Record};
use crate::nats::headers;
use crate::schemas;
use crate::signatures::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, TimestampedHmac, canonical_json, unix_now,
};

/// The wallet hub's settings, as the ingress needs them.
pub struct WalletIngress {
    signer: TimestampedHmac,
    operator_signer: TimestampedHmac,
    currencies: Vec<Currency>,
    pub reconciliation_token: Secret,
    pub operator_url: String,
    pub rgs_webhooks_url: String,
}

impl WalletIngress {
    pub fn new(cfg: &Config) -> anyhow::Result<Self> {
        cfg.require(&[SecretVar::WalletHmac, SecretVar::ReconciliationToken])?;
        Ok(Self {
            signer: TimestampedHmac::new(
                cfg.secret(SecretVar::WalletHmac)?,
                cfg.signature_tolerance,
            ),
            operator_signer: TimestampedHmac::new(
                cfg.operator_webhook_secret()?,
                cfg.signature_tolerance,
            ),
            currencies: cfg.wallet_currencies.clone(),
            reconciliation_token: cfg.secret(SecretVar::ReconciliationToken)?,
            operator_url: cfg.operator_url.clone(),
            rgs_webhooks_url: cfg.rgs_webhook_url.clone(),
        })
    }
}

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/wallet/debit", post(debit))
        .route("/wallet/credit", post(credit))
        .route("/webhooks/incoming", post(operator_callback))
}

async fn debit(State(app): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    transaction(app, Kind::Debit, headers, body).await
}

async fn credit(State(app): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    transaction(app, Kind::Credit, headers, body).await
}

async fn transaction(app: SharedState, kind: Kind, headers: HeaderMap, body: Bytes) -> Response {
    let span = tracing::info_span!(
        "wallet request",
        otel.name = format!("POST /wallet/{}", kind.as_str()),
        otel.kind = "server",
        http.route = format!("/wallet/{}", kind.as_str()),
        transaction_id = tracing::field::Empty,
    );
    crate::telemetry::continue_from_http(&span, &headers);
    accept(&app, kind, &headers, &body)
        .instrument(span)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Parses the body and checks its signature: what every signed wallet call starts with.
fn verified_json(
    signer: &TimestampedHmac,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, String), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request("invalid_json", format!("the body is not JSON: {err}"))
    })?;
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
    app: &SharedState,
    kind: Kind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (value, canonical) = verified_json(&app.wallet.signer, headers, body)?;
    let raw_key = header(headers, "idempotency-key").ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "the Idempotency-Key header is required",
        )
    })?;
    idempotency::validate_key(raw_key)
        .map_err(|msg| ApiError::bad_request("invalid_idempotency_key", msg))?;
    schemas::WALLET_REQUEST.check(&value).map_err(|details| {
        ApiError::unprocessable(
            "invalid_body",
            "the body does not match schemas/wallet-request.json",
        )
        .with_details(details)
    })?;
    let request: Request = serde_json::from_value(value)
        .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
    if !app.wallet.currencies.contains(&request.currency) {
        let accepted: Vec<&str> = app.wallet.currencies.iter().map(|c| c.code()).collect();
        return Err(ApiError::unprocessable(
            "currency_not_accepted",
            format!(
                "{} is not accepted; accepted: {}",
                request.currency,
                accepted.join(", ")
            ),
        ));
    }
    let wait = prefer_wait(headers, app.max_wait);

    let key = Idempotency::key(&format!("wallet-{}", kind.as_str()), raw_key);
    let new_id = Uuid::now_v7();
    let pending = Record {
        fingerprint: idempotency::fingerprint(canonical.as_bytes()),
        resource_id: new_id.to_string(),
        status: StatusCode::ACCEPTED.as_u16(),
        body: json!({"transaction_id": new_id, "status": "pending"}),
        done: false,
    };
    let record = match app
        .idempotency
        .claim(&key, &pending)
        .await
        .map_err(ApiError::unavailable)?
    {
        Claim::Claimed => pending,
        Claim::Existing(existing) if existing.fingerprint != pending.fingerprint => {
            return Err(ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key was already used with a different body",
            ));
        }
        Claim::Existing(existing) if existing.done => return Ok(stored(existing)),
        Claim::Existing(existing) => existing,
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
            app.bus
                .client
                .subscribe(app.bus.names.subject(&outcome_subject(transaction_id)))
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
    app.bus
        .publish(
            &format!("in.wallet.{}", kind.as_str()),
            Some(&transaction_id.to_string()),
            event_headers,
            Bytes::from(serde_json::to_vec(&event).map_err(|e| ApiError::internal(e.into()))?),
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
        if let Ok(Some(latest)) = app.idempotency.get(&key).await
            && latest.done
        {
            return Ok(stored(latest));
        }
    }
    Ok(stored(record))
}

fn stored(record: Record) -> Response {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    (status, Json(record.body)).into_response()
}

/// `Prefer: wait=N` (RFC 7240), capped at `max`.
fn prefer_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
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

/// The operator's asynchronous notification after a withdraw or deposit.
async fn operator_callback(
    State(app): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = tracing::info_span!(
        "operator callback",
        otel.name = "POST /webhooks/incoming",
        otel.kind = "server",
    );
    crate::telemetry::continue_from_http(&span, &headers);
    async {
        let (value, _) = verified_json(&app.wallet.operator_signer, &headers, &body)?;
        schemas::OPERATOR_CALLBACK
            .check(&value)
            .map_err(|details| {
                ApiError::unprocessable(
                    "invalid_body",
                    "the body does not match schemas/operator-callback.json",
                )
                .with_details(details)
            })?;
        let callback: OperatorCallback = serde_json::from_value(value)
            .map_err(|err| ApiError::unprocessable("invalid_body", err.to_string()))?;
        app.bus
            .publish(
                "in.wallet.operator_callback",
                Some(&format!(
                    "opcb:{}:{}",
                    callback.transaction_id, callback.event
                )),
                async_nats::HeaderMap::new(),
                Bytes::from(
                    serde_json::to_vec(&callback).map_err(|e| ApiError::internal(e.into()))?,
                ),
            )
            .await
            .map_err(ApiError::unavailable)?;
        Ok::<_, ApiError>(
            (StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response(),
        )
    }
    .instrument(span)
    .await
    .unwrap_or_else(IntoResponse::into_response)
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
}
