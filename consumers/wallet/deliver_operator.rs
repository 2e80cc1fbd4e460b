//! `deliver-operator` (OUTBOUND, `out.operator.>`): calls the operator's
//! `POST /v2/players/{player}/withdraw|deposit` with the transaction id as its idempotency key,
//! under a rate-limit guard. 2xx → completed, 4xx → rejected (both final: recorded, RGS told,
//! waiting request answered); 5xx, 408, 429 and timeouts are retried by the runtime.

use std::num::NonZeroU32;

use async_nats::HeaderMap;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::json;

use crate::db::attempts::{self, Attempt};
use crate::http_client::{self, Verdict};
use crate::idempotency::Record;
use crate::integrations::wallet::config::WalletConfig;
use crate::integrations::wallet::domain::{OperatorCommand, Outcome, RgsWebhook, Status};
use crate::integrations::wallet::{store, subjects};
use crate::money::parse_major;
use crate::nats::headers;
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};

pub struct DeliverOperator {
    ctx: Context,
    cfg: WalletConfig,
    limiter: DefaultDirectRateLimiter,
}

/// The operator's answer to a withdraw or deposit.
#[derive(Deserialize)]
struct Booked {
    transaction_id: String,
    balance: String,
}

/// The operator's error body.
#[derive(Deserialize)]
struct Refusal {
    error: Option<String>,
    message: Option<String>,
}

/// What the operator's answer means: the transaction's final outcome (completed with the new
/// balance, or rejected with the operator's reason), or a failure to retry.
pub fn outcome(
    command: &OperatorCommand,
    response: &http_client::Response,
) -> Result<Outcome, Failure> {
    let decided = |status, balance, operator_transaction_id, reason| Outcome {
        transaction_id: command.transaction_id,
        status,
        balance,
        operator_transaction_id,
        reason,
    };
    match response.verdict() {
        Verdict::Success => {
            let booked: Booked = response.json().ok_or_else(|| {
                Failure::retry(format!(
                    "operator answered {} with a body we cannot read",
                    response.status.unwrap_or_default()
                ))
            })?;
            let balance = parse_major(&booked.balance, command.currency)
                .map_err(|err| Failure::retry(format!("operator balance: {err}")))?;
            Ok(decided(
                Status::Completed,
                Some(balance),
                Some(booked.transaction_id),
                None,
            ))
        }
        Verdict::Permanent => {
            let reason = match response.json::<Refusal>() {
                Some(Refusal {
                    error: Some(error),
                    message: Some(message),
                }) => format!("{error}: {message}"),
                Some(Refusal { error, message }) => {
                    error.or(message).unwrap_or_else(|| response.describe())
                }
                None => response.describe(),
            };
            Ok(decided(Status::Rejected, None, None, Some(reason)))
        }
        Verdict::Retry => Err(Failure::of_response(response)),
    }
}

impl DeliverOperator {
    pub fn new(ctx: &Context, cfg: WalletConfig) -> Self {
        let per_second =
            NonZeroU32::new(cfg.operator_rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
            ctx: ctx.clone(),
            cfg,
        }
    }

    async fn call(&self, command: &OperatorCommand) -> http_client::Response {
        // The guard queues calls in-process to stay under the operator's rate.
        self.limiter.until_ready().await;
        let url = format!(
            "{}/v2/players/{}/{}",
            self.cfg.operator_url,
            percent_encode(command.player_id.as_str()),
            command.kind.operator_operation()
        );
        let request = self
            .ctx
            .http
            .post(url)
            .header("idempotency-key", command.transaction_id.to_string())
            .json(&json!({
                "transaction_id": command.transaction_id,
                "amount": command.operator_amount,
                "currency": command.currency,
            }));
        http_client::send("operator", request).await
    }

    /// Records a final outcome and tells everyone who waits for it. Safe to repeat: the first
    /// final outcome recorded is the one that stands.
    async fn finish(
        &self,
        delivery: &Delivery,
        command: &OperatorCommand,
        outcome: Outcome,
        attempt: Option<&Attempt>,
    ) -> StageResult {
        let id = command.transaction_id;
        let db = &self.ctx.db;
        let webhook = RgsWebhook::for_outcome(command, &outcome, chrono::Utc::now());
        let recorded = store::record_outcome(
            db,
            command,
            &outcome,
            &webhook,
            attempt,
            crate::telemetry::current_trace_id(),
        )
        .await?;
        let (outcome, webhook, send_webhook) = match recorded {
            (true, created) => (outcome, webhook, created),
            // Already final (a redelivery after a crash, a duplicate): what stands is told again.
            (false, _) => {
                let Some(stood) = store::recorded_outcome(db, id).await? else {
                    return Err(Failure::retry(format!("transaction {id} is still pending")));
                };
                let webhook = RgsWebhook::for_outcome(command, &stood, chrono::Utc::now());
                let pending = store::webhook_pending(db, &webhook).await?;
                (stood, webhook, pending)
            }
        };
        if send_webhook {
            self.ctx
                .bus
                .publish_json(
                    subjects::RGS_WEBHOOK,
                    Some(&format!("rgs:{}", webhook.id)),
                    HeaderMap::new(),
                    &webhook,
                )
                .await?;
        }
        let body = serde_json::to_value(&outcome).map_err(Failure::permanent)?;
        if let (Some(key), Some(fingerprint)) = (
            delivery.header(headers::IDEMPOTENCY_KEY),
            delivery.header(headers::FINGERPRINT),
        ) {
            let record = Record {
                fingerprint: fingerprint.to_string(),
                resource_id: id.to_string(),
                status: 200,
                body: body.clone(),
                done: true,
            };
            self.ctx.idempotency.complete(key, &record).await?;
        }
        self.ctx
            .bus
            .notify(&subjects::outcome(id), Bytes::from(body.to_string()))
            .await;
        tracing::debug!(transaction_id = %id, status = outcome.status.as_str(), "wallet outcome");
        Ok(())
    }
}

impl Stage for DeliverOperator {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let command: OperatorCommand = delivery.json()?;
        let response = self.call(&command).await;
        let attempt = Attempt::of(
            "operator",
            command.transaction_id,
            delivery.delivered,
            &response,
        );
        match outcome(&command, &response) {
            Ok(outcome) => self.finish(delivery, &command, outcome, Some(&attempt)).await,
            Err(failure) => {
                attempts::record(&self.ctx.db, &attempt).await?;
                Err(failure)
            }
        }
    }

    /// Out of attempts: the transaction is `failed` and the RGS is told; a replay from the DLQ
    /// that succeeds later moves it to its real outcome.
    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let Ok(command) = delivery.json::<OperatorCommand>() else {
            return Ok(());
        };
        let outcome = Outcome {
            transaction_id: command.transaction_id,
            status: Status::Failed,
            balance: None,
            operator_transaction_id: None,
            reason: Some(format!("operator unavailable: {error}")),
        };
        Ok(self.finish(delivery, &command, outcome, None).await?)
    }
}

/// Percent-encodes a path segment (unreserved characters stay).
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::wallet::domain::{Kind, PlayerId};
    use crate::money::{Amount, Currency};

    fn command(currency: &str) -> OperatorCommand {
        OperatorCommand {
            transaction_id: uuid::Uuid::from_u128(1),
            kind: Kind::Debit,
            player_id: PlayerId::parse("p1").unwrap(),
            amount: Amount::parse(1050).unwrap(),
            currency: Currency::parse(currency).unwrap(),
            operator_amount: "10.50".into(),
            round_id: None,
            game_id: None,
        }
    }

    fn answer(status: u16, body: &str) -> http_client::Response {
        http_client::Response::answered(status, body)
    }

    #[test]
    fn a_booking_completes_with_the_operators_balance() {
        let done = outcome(
            &command("EUR"),
            &answer(200, r#"{"transaction_id":"op_7","balance":"989.50"}"#),
        )
        .unwrap();
        assert_eq!(done.status, Status::Completed);
        assert_eq!(done.balance, Some(98_950));
        assert_eq!(done.operator_transaction_id.as_deref(), Some("op_7"));
        let yen = outcome(
            &command("JPY"),
            &answer(200, r#"{"transaction_id":"op_8","balance":"1200"}"#),
        )
        .unwrap();
        assert_eq!(yen.balance, Some(1200));
    }

    #[test]
    fn a_refusal_rejects_with_the_operators_words() {
        for (body, reason) in [
            (
                r#"{"error":"insufficient_funds","message":"balance 1.00"}"#,
                "insufficient_funds: balance 1.00",
            ),
            (r#"{"error":"currency_not_supported"}"#, "currency_not_supported"),
            ("gateway says no", "HTTP 422: gateway says no"),
        ] {
            let rejected = outcome(&command("EUR"), &answer(422, body)).unwrap();
            assert_eq!(rejected.status, Status::Rejected);
            assert_eq!(rejected.reason.as_deref(), Some(reason));
            assert_eq!(rejected.balance, None);
        }
    }

    #[test]
    fn failures_and_unreadable_bookings_are_retried() {
        for response in [
            answer(503, "down"),
            answer(429, ""),
            http_client::Response::not_sent("timed out".into()),
            answer(200, "not json"),
            answer(200, r#"{"transaction_id":"op_9","balance":"ten"}"#),
        ] {
            let failure = outcome(&command("EUR"), &response).unwrap_err();
            assert!(matches!(failure, Failure::Retry { .. }), "{failure:?}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(percent_encode("p-1_x.y~"), "p-1_x.y~");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
