//! `deliver-ticketing` (OUTBOUND, `out.ticketing.>`): POSTs the mapped order to
//! `TICKETING_URL` with `Idempotency-Key: <trace_id>`. 2xx → the tickets are stored, the order
//! is `ticketed` and its partner callback is commanded; 4xx other than 408/429 → permanent;
//! 5xx, 408, 429 and timeouts → retried by the runtime on WaveGate's schedule. A permanent
//! failure or the last attempt leaves the order `ticketing_blocked` (and the command in the DLQ).

use chrono::Utc;
use serde::Deserialize;

use crate::db::attempts::Attempt;
use crate::http_client::{self, Verdict};
use crate::integrations::wavegate::config::WaveGateConfig;
use crate::integrations::wavegate::domain::{
    Callback, CallbackCommand, Order, Ticket, TicketingCommand,
};
use crate::integrations::wavegate::store::{self, Job};
use crate::integrations::wavegate::subjects;
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};

pub struct DeliverTicketing {
    ctx: Context,
    cfg: WaveGateConfig,
}

/// What ticketing answers on success.
#[derive(Debug, Deserialize)]
pub struct Issued {
    pub ticketing_order_id: Option<String>,
    pub tickets: Vec<Ticket>,
}

/// What ticketing's answer means: the tickets it issued, or a failure (a success without a
/// ticket list is permanent: asking again gets the same answer).
pub fn issued(response: &http_client::Response) -> Result<Issued, Failure> {
    if response.verdict() != Verdict::Success {
        return Err(Failure::of_response(response));
    }
    response.json::<Issued>().ok_or_else(|| {
        Failure::permanent(format!(
            "ticketing answered {} without a ticket list",
            response.describe()
        ))
    })
}

impl DeliverTicketing {
    pub fn new(ctx: &Context, cfg: WaveGateConfig) -> Self {
        Self {
            ctx: ctx.clone(),
            cfg,
        }
    }

    async fn call(&self, order: &Order) -> http_client::Response {
        let request = super::order_headers(self.ctx.http.post(&self.cfg.ticketing_url), order)
            .json(&order.ticketing_request());
        http_client::send("ticketing", request).await
    }

    async fn command_callback(&self, order: Order, tickets: Vec<Ticket>) -> StageResult {
        let command = CallbackCommand {
            callback: Callback::ticketed(order, tickets, Utc::now()),
        };
        self.ctx
            .bus
            .publish_json(
                subjects::OTA_CALLBACK,
                Some(&format!("callback:{}", command.callback.order.id)),
                async_nats::HeaderMap::new(),
                &command,
            )
            .await?;
        Ok(())
    }
}

impl Stage for DeliverTicketing {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let TicketingCommand { order } = delivery.json()?;
        let db = &self.ctx.db;
        if !store::start_job(db, order.id, Job::Ticketing).await? {
            // Done before (a redelivery after a crash): make sure the callback was commanded.
            let tickets = store::tickets(db, order.id).await?;
            return self.command_callback(order, tickets).await;
        }
        let response = self.call(&order).await;
        let attempt = Attempt::of(
            Job::Ticketing.as_str(),
            order.id,
            delivery.delivered,
            &response,
        );
        store::record_attempt(db, order.id, Job::Ticketing, &attempt).await?;
        let issued = issued(&response)?;
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
        store::blocked(&self.ctx.db, order.id, Job::Ticketing, error).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> http_client::Response {
        http_client::Response::answered(status, body)
    }

    #[test]
    fn issued_tickets_are_read_from_a_success() {
        let issued = issued(&answer(
            201,
            r#"{"ticketing_order_id":"tko_1","status":"issued",
                "tickets":[{"sku":"A","code":"TKT-1"},{"sku":"A","code":"TKT-2"}]}"#,
        ))
        .unwrap();
        assert_eq!(issued.ticketing_order_id.as_deref(), Some("tko_1"));
        assert_eq!(issued.tickets.len(), 2);
        assert_eq!(issued.tickets[1].code, "TKT-2");
    }

    #[test]
    fn refusals_are_permanent_and_outages_retried() {
        for (status, body, permanent) in [
            (400, r#"{"error":"invalid_order"}"#, true),
            (409, "", true),
            (200, r#"{"status":"issued"}"#, true),
            (500, "", false),
            (503, "", false),
            (429, "", false),
            (408, "", false),
        ] {
            let failure = issued(&answer(status, body)).unwrap_err();
            assert_eq!(
                matches!(failure, Failure::Permanent { .. }),
                permanent,
                "{status}: {failure:?}"
            );
        }
    }
}
