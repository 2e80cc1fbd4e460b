//! `deliver-rgs` (OUTBOUND, `out.rgs.>`): POSTs each outcome webhook to `RGS_WEBHOOK_URL`,
//! signed like the RGS's own requests, recording every attempt; retried with doubling backoff
//! up to its attempt limit, then dead-lettered.

use crate::db::attempts::Attempt;
use crate::http_client::{self, Verdict};
use crate::integrations::wallet::config::{WALLET_HMAC, WalletConfig};
use crate::integrations::wallet::domain::RgsWebhook;
use crate::integrations::wallet::store;
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};
use crate::signatures::{TimestampedHmac, canonical_json};

pub struct DeliverRgs {
    ctx: Context,
    cfg: WalletConfig,
    signer: TimestampedHmac,
}

impl DeliverRgs {
    pub fn new(ctx: &Context, cfg: WalletConfig) -> anyhow::Result<Self> {
        let signer = TimestampedHmac::new(ctx.env().secret(&WALLET_HMAC)?, cfg.signature_tolerance);
        Ok(Self {
            ctx: ctx.clone(),
            cfg,
            signer,
        })
    }
}

impl Stage for DeliverRgs {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let webhook: RgsWebhook = delivery.json()?;
        let db = &self.ctx.db;
        if store::webhook_delivered(db, webhook.id).await? {
            return Ok(());
        }

        let body = serde_json::to_value(&webhook).map_err(Failure::permanent)?;
        let canonical = canonical_json(&body);
        let mut request = self
            .ctx
            .http
            .post(&self.cfg.rgs_webhook_url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook.id.to_string());
        for (name, value) in self.signer.headers_for(&body) {
            request = request.header(name, value);
        }
        let response = http_client::send("rgs", request.body(canonical)).await;
        let delivered = response.verdict() == Verdict::Success;
        let attempt = Attempt::of("rgs", webhook.transaction_id, delivery.delivered, &response);
        store::record_webhook_attempt(db, webhook.id, delivered, &attempt).await?;
        if delivered {
            Ok(())
        } else {
            Err(Failure::of_response(&response))
        }
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let Ok(webhook) = delivery.json::<RgsWebhook>() else {
            return Ok(());
        };
        store::webhook_dead_lettered(&self.ctx.db, webhook.id, error).await?;
        Ok(())
    }
}
