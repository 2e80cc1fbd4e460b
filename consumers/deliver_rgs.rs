//! `deliver-rgs` (OUTBOUND, `out.rgs.>`): POSTs each outcome webhook to `RGS_WEBHOOK_URL`,
//! signed like the RGS's own requests, recording every attempt; retried with doubling backoff
//! up to its attempt limit, then dead-lettered.

use super::Deps;
use crate::config::SecretVar;
use crate::domain::wallet::RgsWebhook;
use crate::http_client::{self, Verdict};
use crate::runtime::{Delivery, Stage, StageResult};
use crate::signatures::{TimestampedHmac, canonical_json};

pub struct DeliverRgs {
    deps: Deps,
    signer: TimestampedHmac,
}

impl DeliverRgs {
    pub fn new(deps: Deps) -> anyhow::Result<Self> {
        let signer = TimestampedHmac::new(
            deps.cfg.secret(SecretVar::WalletHmac)?,
            deps.cfg.signature_tolerance,
        );
        Ok(Self { deps, signer })
    }
}

impl Stage for DeliverRgs {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let webhook: RgsWebhook = delivery.json()?;
        let delivered: Option<bool> =
            sqlx::query_scalar("SELECT status = 'delivered' FROM rgs_webhooks WHERE id = $1")
                .bind(webhook.id)
                .fetch_optional(&self.deps.db)
                .await?;
        if delivered == Some(true) {
            return Ok(());
        }

        let body = serde_json::to_value(&webhook).map_err(crate::runtime::Failure::permanent)?;
        let canonical = canonical_json(&body);
        let mut request = self
            .deps
            .http
            .post(&self.deps.cfg.rgs_webhook_url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook.id.to_string());
        for (name, value) in self.signer.headers_for(&body) {
            request = request.header(name, value);
        }
        let response = http_client::send("rgs", request.body(canonical)).await;
        let success = response.verdict() == Verdict::Success;

        // The attempt and the webhook's new state, in one statement.
        sqlx::query(
            "WITH attempt AS (
                 INSERT INTO delivery_attempts
                     (target, subject_id, attempt, status_code, error, duration_ms)
                 VALUES ('rgs', $4, $5, $6, $2, $7)
             )
             UPDATE rgs_webhooks
             SET attempts = attempts + 1,
                 last_error = $2,
                 status = CASE WHEN $3 THEN 'delivered' ELSE status END,
                 delivered_at = CASE WHEN $3 THEN now() ELSE delivered_at END,
                 updated_at = now()
             WHERE id = $1",
        )
        .bind(webhook.id)
        .bind((!success).then(|| response.describe()))
        .bind(success)
        .bind(webhook.transaction_id.to_string())
        .bind(delivery.delivered as i32)
        .bind(response.status.map(i32::from))
        .bind(response.duration.as_millis() as i32)
        .execute(&self.deps.db)
        .await?;

        if success {
            Ok(())
        } else {
            Err(response.failure())
        }
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let Ok(webhook) = delivery.json::<RgsWebhook>() else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE rgs_webhooks SET status = 'dead_lettered', last_error = $2, updated_at = now()
             WHERE id = $1 AND status <> 'delivered'",
        )
        .bind(webhook.id)
        .bind(error)
        .execute(&self.deps.db)
        .await?;
        Ok(())
    }
}
