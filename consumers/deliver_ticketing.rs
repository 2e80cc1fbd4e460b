//! `deliver-ticketing` (OUTBOUND, `out.ticketing.>`): POSTs the mapped order to
//! `TICKETING_URL` with `Idempotency-Key: <trace_id>`. 2xx → the tickets are stored, the order
//! is `ticketed` and its partner callback is commanded; 4xx other than 408/429 → permanent;
//! 5xx, 408, 429 and timeouts → retried by the runtime on WaveGate's schedule. A permanent
//! failure or the last attempt leaves the order `ticketing_blocked` (and the command in the DLQ).

use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::Deps;
use crate::db::wavegate::{self as store, Job};
use crate::domain::wavegate::{Callback, CallbackCommand, Order, Ticket, TicketingCommand};
use crate::http_client::{self, Verdict};
use crate::runtime::{Delivery, Failure, Stage, StageResult};

pub struct DeliverTicketing {
    deps: Deps,
}

/// What ticketing answers on success.
#[derive(Deserialize)]
struct Issued {
    ticketing_order_id: Option<String>,
    tickets: Vec<Ticket>,
}

impl DeliverTicketing {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    async fn call(&self, order: &Order) -> http_client::Response {
        let request = super::wavegate_headers(
            self.deps.http.post(&self.deps.cfg.wavegate.ticketing_url),
            order,
        )
        .json(&json!({
            "order_id": order.id,
            "partner_id": order.partner_id,
            "external_order_id": order.external_order_id,
            "currency": order.currency,
            "total_minor": order.total_minor,
            "items": order.items,
            "buyer": order.buyer,
        }));
        http_client::send("ticketing", request).await
    }

    async fn command_callback(&self, order: Order, tickets: Vec<Ticket>) -> StageResult {
        let command = CallbackCommand {
            callback: Callback {
                event: "order.ticketed".into(),
                status: "ticketed".into(),
                order,
                tickets,
                ticketed_at: Utc::now(),
            },
        };
        self.deps
            .bus
            .publish(
                "out.ota.callback",
                Some(&format!("callback:{}", command.callback.order.id)),
                async_nats::HeaderMap::new(),
                Bytes::from(serde_json::to_vec(&command).map_err(Failure::permanent)?),
            )
            .await?;
        Ok(())
    }
}

impl Stage for DeliverTicketing {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let TicketingCommand { order } = delivery.json()?;
        let db = &self.deps.db;
        if !store::start_job(db, order.id, Job::Ticketing).await? {
            // Done before (a redelivery after a crash): make sure the callback was commanded.
            let tickets = store::tickets(db, order.id).await?;
            return self.command_callback(order, tickets).await;
        }
        let response = self.call(&order).await;
        store::record_attempt(db, order.id, Job::Ticketing, delivery.delivered, &response).await?;
        if response.verdict() != Verdict::Success {
            return Err(response.failure());
        }
        let Some(issued) = response.json::<Issued>() else {
            return Err(Failure::permanent(format!(
                "ticketing answered {} without a ticket list",
                response.describe()
            )));
        };
        store::ticketed(
            db,
            order.id,
            issued.ticketing_order_id.as_deref(),
            &issued.tickets,
        )
        .await?;
        tracing::info!(
            order_id = %order.id,
            trace_id = %order.trace_id,
            tickets = issued.tickets.len(),
            "order ticketed"
        );
        self.command_callback(order, issued.tickets).await
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let TicketingCommand { order } = delivery.json()?;
        store::blocked(&self.deps.db, order.id, Job::Ticketing, error).await?;
        Ok(())
    }
}
