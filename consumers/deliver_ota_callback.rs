//! `deliver-ota-callback` (OUTBOUND, `out.ota.>`): POSTs the ticketed order to the partner's
//! `callback_url`, at most `CALLBACK_CONCURRENCY` at a time per process. The URL passes the
//! SSRF rules again at send time, and the client connects only to the addresses it checked
//! (no DNS rebinding) and never follows redirects. With `CALLBACK_SIGNING_SECRET` the body is
//! signed twice: `X-Callback-Signature` (hex HMAC-SHA256 of the body) and the Standard Webhooks
//! headers. Classification and schedule as for ticketing; the order ends
//! `ota_callback_delivered` or `ota_callback_blocked`.

use std::sync::Arc;

use super::Deps;
use crate::db::wavegate::{self as store, Job};
use crate::domain::wavegate::{Callback, CallbackCommand};
use crate::http_client::{self, Verdict};
use crate::runtime::{Delivery, Failure, Stage, StageResult};
use crate::signatures::webhooks::{StandardWebhook, callback_signature};
use crate::signatures::{canonical_json, unix_now};
use crate::ssrf::{self, CallbackPolicy};

pub struct DeliverOtaCallback {
    deps: Deps,
    policy: Arc<CallbackPolicy>,
    client: reqwest::Client,
    signer: Option<(crate::config::Secret, StandardWebhook)>,
}

impl DeliverOtaCallback {
    pub fn new(deps: Deps) -> Self {
        let wavegate = &deps.cfg.wavegate;
        let policy = Arc::new(wavegate.callbacks.clone());
        Self {
            client: ssrf::guarded_client(policy.clone(), deps.cfg.http_timeout),
            signer: wavegate
                .callback_signing_secret
                .clone()
                .map(|secret| (secret.clone(), StandardWebhook::new(&secret))),
            policy,
            deps,
        }
    }
}

impl DeliverOtaCallback {
    /// POSTs the callback, signed when a secret is set.
    async fn send(
        &self,
        url: reqwest::Url,
        callback: &Callback,
    ) -> Result<http_client::Response, Failure> {
        let order = &callback.order;
        let body = canonical_json(&serde_json::to_value(callback).map_err(Failure::permanent)?);
        let mut request = super::wavegate_headers(self.client.post(url), order)
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
        let db = &self.deps.db;
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
        store::record_attempt(
            db,
            order.id,
            Job::OtaCallback,
            delivery.delivered,
            &response,
        )
        .await?;
        if refused {
            return Err(Failure::permanent(response.describe()));
        }
        if response.verdict() != Verdict::Success {
            return Err(response.failure());
        }
        store::callback_delivered(db, order.id).await?;
        tracing::info!(order_id = %order.id, trace_id = %order.trace_id, "partner called back");
        Ok(())
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let CallbackCommand { callback } = delivery.json()?;
        store::blocked(&self.deps.db, callback.order.id, Job::OtaCallback, error).await?;
        Ok(())
    }
}
