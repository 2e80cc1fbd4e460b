//! `stage-wavegate` (INBOUND, `in.wavegate.>`): records each accepted order (items, pending
//! ticketing job, the partner's idempotency key) and commands ticketing; records refused calls
//! in `auth_events`.

use bytes::Bytes;

use super::Deps;
use crate::db::wavegate as store;
use crate::domain::wavegate::{AuthRefused, OrderAccepted, TicketingCommand};
use crate::runtime::{Delivery, Failure, Stage, StageResult};

pub struct StageWaveGate {
    deps: Deps,
}

impl StageWaveGate {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    async fn accepted(&self, delivery: &Delivery) -> StageResult {
        let event: OrderAccepted = delivery.json()?;
        // A redelivery finds the order and commands ticketing again unless it has succeeded;
        // the stream drops a duplicate command by its id, and deliver-ticketing skips a job
        // that is done.
        if !store::record_order(&self.deps.db, &event).await? {
            return Ok(());
        }
        let command = TicketingCommand { order: event.order };
        self.deps
            .bus
            .publish(
                "out.ticketing.order",
                Some(&format!("ticketing:{}", command.order.id)),
                async_nats::HeaderMap::new(),
                Bytes::from(serde_json::to_vec(&command).map_err(Failure::permanent)?),
            )
            .await?;
        Ok(())
    }

    async fn refused(&self, delivery: &Delivery) -> StageResult {
        let event: AuthRefused = delivery.json()?;
        store::record_auth_event(&self.deps.db, &event).await?;
        Ok(())
    }
}

impl Stage for StageWaveGate {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        match delivery.subject() {
            "in.wavegate.order_accepted" => self.accepted(delivery).await,
            "in.wavegate.auth_refused" => self.refused(delivery).await,
            other => Err(Failure::permanent(format!(
                "stage-wavegate has no handler for {other}"
            ))),
        }
    }
}
