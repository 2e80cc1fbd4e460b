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
use uuid::Uuid;

use super::{Deps, record_attempt};
use crate::domain::parse_major;
use crate::domain::wallet::{OperatorCommand, Outcome, RgsWebhook, Status};
use crate::http_client::{self, Verdict};
use crate::idempotency::Record;
use crate::nats::headers;
use crate::runtime::{Delivery, Failure, Stage, StageResult};

pub struct DeliverOperator {
    deps: Deps,
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

impl DeliverOperator {
    pub fn new(deps: Deps) -> Self {
        let per_second =
            NonZeroU32::new(deps.cfg.operator_rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
            deps,
        }
    }

    async fn call(&self, command: &OperatorCommand) -> http_client::Response {
        // The guard queues calls in-process to stay under the operator's rate.
        self.limiter.until_ready().await;
        let url = format!(
            "{}/v2/players/{}/{}",
            self.deps.cfg.operator_url,
            percent_encode(command.player_id.as_str()),
            command.kind.operator_operation()
        );
        let request = self
            .deps
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
        response: Option<&http_client::Response>,
    ) -> StageResult {
        let id = command.transaction_id;
        let webhook = webhook_for(command, &outcome);
        // One statement, one commit: the call's attempt, the transaction with its outcome
        // (inserted whole, so it does not depend on the stage's early row), and the webhook
        // to send. The outcome only replaces `pending` or `failed`.
        let recorded: (bool, bool) = sqlx::query_as(
            "WITH attempt AS (
                 INSERT INTO delivery_attempts
                     (target, subject_id, attempt, status_code, error, duration_ms)
                 SELECT 'operator', $1::text, $13, $14, $15, $16 WHERE $17
             ), outcome AS (
                 INSERT INTO wallet_transactions
                     (id, kind, player_id, amount_minor, currency, round_id, game_id,
                      status, balance_minor, operator_transaction_id, reason, trace_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (id) DO UPDATE
                 SET status = EXCLUDED.status, balance_minor = EXCLUDED.balance_minor,
                     operator_transaction_id = EXCLUDED.operator_transaction_id,
                     reason = EXCLUDED.reason, updated_at = now()
                 WHERE wallet_transactions.status IN ('pending', 'failed')
                 RETURNING id
             ), webhook AS (
                 INSERT INTO rgs_webhooks (id, transaction_id, payload)
                 SELECT $18, id, $19 FROM outcome
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id
             )
             SELECT EXISTS (SELECT 1 FROM outcome), EXISTS (SELECT 1 FROM webhook)",
        )
        .bind(id)
        .bind(command.kind.as_str())
        .bind(command.player_id.as_str())
        .bind(command.amount.minor())
        .bind(command.currency.code())
        .bind(&command.round_id)
        .bind(&command.game_id)
        .bind(outcome.status.as_str())
        .bind(outcome.balance)
        .bind(&outcome.operator_transaction_id)
        .bind(&outcome.reason)
        .bind(crate::telemetry::current_trace_id())
        .bind(delivery.delivered as i32)
        .bind(response.and_then(|r| r.status).map(i32::from))
        .bind(response.and_then(http_client::Response::attempt_error))
        .bind(response.map_or(0, |r| r.duration.as_millis() as i32))
        .bind(response.is_some())
        .bind(webhook.id)
        .bind(sqlx::types::Json(&webhook))
        .fetch_one(&self.deps.db)
        .await?;

        let (outcome, webhook, send_webhook) = match recorded {
            (true, created) => (outcome, webhook, created),
            // Already final (a redelivery after a crash, a duplicate): what stands is told again.
            (false, _) => self.stored(command).await?,
        };
        if send_webhook {
            self.deps
                .bus
                .publish(
                    "out.rgs.webhook",
                    Some(&format!("rgs:{}", webhook.id)),
                    HeaderMap::new(),
                    Bytes::from(serde_json::to_vec(&webhook).map_err(Failure::permanent)?),
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
            self.deps.idempotency.complete(key, &record).await?;
        }
        self.deps
            .bus
            .notify(&outcome_subject(id), Bytes::from(body.to_string()))
            .await;
        tracing::debug!(transaction_id = %id, status = outcome.status.as_str(), "wallet outcome");
        Ok(())
    }

    /// The outcome already recorded for the command's transaction, its webhook, and whether
    /// that webhook still has to be sent.
    async fn stored(
        &self,
        command: &OperatorCommand,
    ) -> Result<(Outcome, RgsWebhook, bool), Failure> {
        #[derive(sqlx::FromRow)]
        struct Stored {
            status: String,
            balance_minor: Option<i64>,
            operator_transaction_id: Option<String>,
            reason: Option<String>,
        }
        let id = command.transaction_id;
        let stored: Stored = sqlx::query_as(
            "SELECT status, balance_minor, operator_transaction_id, reason
             FROM wallet_transactions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.deps.db)
        .await?;
        let status = match stored.status.as_str() {
            "completed" => Status::Completed,
            "rejected" => Status::Rejected,
            "failed" => Status::Failed,
            other => return Err(Failure::retry(format!("transaction {id} is {other}"))),
        };
        let outcome = Outcome {
            transaction_id: id,
            status,
            balance: stored.balance_minor,
            operator_transaction_id: stored.operator_transaction_id,
            reason: stored.reason,
        };
        let webhook = webhook_for(command, &outcome);
        let pending: bool = sqlx::query_scalar(
            "WITH inserted AS (
                 INSERT INTO rgs_webhooks (id, transaction_id, payload) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING status)
             SELECT status = 'pending' FROM inserted
             UNION ALL
             SELECT status = 'pending' FROM rgs_webhooks WHERE id = $1
             LIMIT 1",
        )
        .bind(webhook.id)
        .bind(id)
        .bind(sqlx::types::Json(&webhook))
        .fetch_one(&self.deps.db)
        .await?;
        Ok((outcome, webhook, pending))
    }
}

fn webhook_for(command: &OperatorCommand, outcome: &Outcome) -> RgsWebhook {
    RgsWebhook {
        id: RgsWebhook::id_for(command.transaction_id, outcome.status),
        event: format!("transaction.{}", outcome.status.as_str()),
        transaction_id: command.transaction_id,
        kind: command.kind,
        status: outcome.status,
        player_id: command.player_id.clone(),
        amount: command.amount,
        currency: command.currency,
        balance: outcome.balance,
        operator_transaction_id: outcome.operator_transaction_id.clone(),
        reason: outcome.reason.clone(),
        round_id: command.round_id.clone(),
        game_id: command.game_id.clone(),
        occurred_at: chrono::Utc::now(),
    }
}

/// Where the ingress waits for the outcome of transaction `id` (core NATS, not a stream).
pub fn outcome_subject(id: Uuid) -> String {
    format!("reply.wallet.{id}")
}

impl Stage for DeliverOperator {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let command: OperatorCommand = delivery.json()?;
        let response = self.call(&command).await;
        let outcome = match response.verdict() {
            Verdict::Success => {
                let booked: Booked = response.json().ok_or_else(|| {
                    Failure::retry(format!(
                        "operator answered {} with a body we cannot read",
                        response.status.unwrap_or_default()
                    ))
                })?;
                let balance = parse_major(&booked.balance, command.currency)
                    .map_err(|err| Failure::retry(format!("operator balance: {err}")))?;
                Outcome {
                    transaction_id: command.transaction_id,
                    status: Status::Completed,
                    balance: Some(balance),
                    operator_transaction_id: Some(booked.transaction_id),
                    reason: None,
                }
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
                Outcome {
                    transaction_id: command.transaction_id,
                    status: Status::Rejected,
                    balance: None,
                    operator_transaction_id: None,
                    reason: Some(reason),
                }
            }
            Verdict::Retry => {
                record_attempt(
                    &self.deps.db,
                    "operator",
                    &command.transaction_id.to_string(),
                    delivery.delivered,
                    &response,
                )
                .await?;
                return Err(response.failure());
            }
        };
        self.finish(delivery, &command, outcome, Some(&response))
            .await
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
        self.finish(delivery, &command, outcome, None)
            .await
            .map_err(|failure| anyhow::anyhow!(failure.error().to_string()))
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
    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(super::percent_encode("p-1_x.y~"), "p-1_x.y~");
        assert_eq!(super::percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
