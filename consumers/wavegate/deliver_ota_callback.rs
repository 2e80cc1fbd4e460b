//! `deliver-ota-callback` (OUTBOUND, `out.ota.>`): POSTs the ticketed order to the partner's
//! `callback_url`, at most `CALLBACK_CONCURRENCY` at a time per process. The URL passes the
//! SSRF rules again at send time, and the client connects only to the addresses it checked
//! (no DNS rebinding) and never follows redirects. With `CALLBACK_SIGNING_SECRET` the body is
//! signed twice: `X-Callback-Signature` (hex HMAC-SHA256 of the body) and the Standard Webhooks
//! headers. Classification and schedule as for ticketing; the order ends
//! `ota_callback_delivered` or `ota_callback_blocked`.

use std::sync::Arc;

use crate::config::Secret;
use crate::db::attempts::Attempt;
use crate::http_client::{self, Verdict};
use crate::integrations::wavegate::config::WaveGateConfig;
use crate::integrations::wavegate::domain::{Callback, CallbackCommand};
use crate::integrations::wavegate::store::{self, Job};
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};
use crate::signatures::webhooks::{StandardWebhook, callback_signature};
use crate::signatures::{canonical_json, unix_now};
use crate::ssrf::{self, CallbackPolicy};

pub struct DeliverOtaCallback {
    ctx: Context,
    policy: Arc<CallbackPolicy>,
    client: reqwest::Client,
    signer: Option<(Secret, StandardWebhook)>,
}

impl DeliverOtaCallback {
    pub fn new(ctx: &Context, cfg: WaveGateConfig) -> Self {
        let policy = Arc::new(cfg.callbacks);
        Self {
            client: ssrf::guarded_client(policy.clone(), ctx.cfg.http_timeout),
            signer: cfg
                .callback_signing_secret
                .map(|secret| (secret.clone(), StandardWebhook::new(&secret))),
            policy,
            ctx: ctx.clone(),
        }
    }

    /// POSTs the callback, signed when a secret is set.
    async fn send(
        &self,
        url: reqwest::Url,
        callback: &Callback,
    ) -> Result<http_client::Response, Failure> {
        let order = &callback.order;
        let body = canonical_json(&serde_json::to_value(callback).map_err(Failure::permanent)?);
        let mut request = super::order_headers(self.client.post(url), order)
            .header("content-type", "application/json");
        if let Some((secret, webhook)) = &self.signer {
            // One id per order, the same on every retry, as Standard Webhooks asks.
            let id = format!("msg_{}", order.id.simple());
            request = request.header(
                "x-callback-signature",
                callback_signature(secret, body.as_bytes()),
            );
            for (name, value) in webhook.headers(&id, unix_now(), body.as_bytes()) {
                request = request.header(name, value);
            }
        }
        Ok(http_client::send("ota-callback", request.body(body)).await)
    }
}

impl Stage for DeliverOtaCallback {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let CallbackCommand { callback } = delivery.json()?;
        let order = &callback.order;
        let db = &self.ctx.db;
        if !store::start_job(db, order.id, Job::OtaCallback).await? {
            return Ok(());
        }
        // Checked again now: DNS may say something else than when the order was accepted.
        let (response, refused) = match self.policy.check(&order.callback_url).await {
            Ok(checked) => (self.send(checked.url, &callback).await?, false),
            Err(violation) => (
                http_client::Response::not_sent(format!(
                    "callback_url refused at send time: {violation}"
                )),
                true,
            ),
        };
        let attempt = Attempt::of(
            Job::OtaCallback.as_str(),
            order.id,
            delivery.delivered,
            &response,
        );
        store::record_attempt(db, order.id, Job::OtaCallback, &attempt).await?;
        if refused {
            return Err(Failure::permanent(response.describe()));
        }
        if response.verdict() != Verdict::Success {
            return Err(Failure::of_response(&response));
        }
        store::callback_delivered(db, order.id).await?;
        tracing::info!(order_id = %order.id, trace_id = %order.trace_id, "partner called back");
        Ok(())
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let CallbackCommand { callback } = delivery.json()?;
        store::blocked(&self.ctx.db, callback.order.id, Job::OtaCallback, error).await?;
        Ok(())
    }
}
