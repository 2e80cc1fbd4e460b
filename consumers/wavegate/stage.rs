//! `stage-wavegate` (INBOUND, `in.wavegate.>`): records each accepted order (items, pending
//! ticketing job, the partner's idempotency key) and commands ticketing; records refused calls
//! in `auth_events`.

use crate::integrations::wavegate::domain::{AuthRefused, OrderAccepted, TicketingCommand};
use crate::integrations::wavegate::{store, subjects};
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};

pub struct StageWaveGate {
    ctx: Context,
}

impl StageWaveGate {
    pub fn new(ctx: &Context) -> Self {
        Self { ctx: ctx.clone() }
    }

    async fn accepted(&self, delivery: &Delivery) -> StageResult {
        let event: OrderAccepted = delivery.json()?;
        // A redelivery finds the order and commands ticketing again unless it has succeeded;
        // the stream drops a duplicate command by its id, and deliver-ticketing skips a job
        // that is done.
        if !store::record_order(&self.ctx.db, &event).await? {
            return Ok(());
        }
        let command = TicketingCommand { order: event.order };
        self.ctx
            .bus
            .publish_json(
                subjects::TICKETING_ORDER,
                Some(&format!("ticketing:{}", command.order.id)),
                async_nats::HeaderMap::new(),
                &command,
            )
            .await?;
        Ok(())
    }

    async fn refused(&self, delivery: &Delivery) -> StageResult {
        let event: AuthRefused = delivery.json()?;
        store::record_auth_event(&self.ctx.db, &event).await?;
        Ok(())
    }
}

impl Stage for StageWaveGate {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        match delivery.subject() {
            subjects::ORDER_ACCEPTED => self.accepted(delivery).await,
            subjects::AUTH_REFUSED => self.refused(delivery).await,
            other => Err(Failure::permanent(format!(
                "stage-wavegate has no handler for {other}"
            ))),
        }
    }
}
