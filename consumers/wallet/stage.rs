//! `stage-wallet` (INBOUND, `in.wallet.>`): records each accepted debit or credit and commands
//! the operator call; records the operator's callbacks.

use async_nats::HeaderMap;

use crate::integrations::wallet::domain::{OperatorCallback, Requested};
use crate::integrations::wallet::{store, subjects};
use crate::nats::headers;
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};

pub struct StageWallet {
    ctx: Context,
}

impl StageWallet {
    pub fn new(ctx: &Context) -> Self {
        Self { ctx: ctx.clone() }
    }

    async fn requested(&self, delivery: &Delivery) -> StageResult {
        let event: Requested = delivery.json()?;
        store::record_requested(&self.ctx.db, &event, crate::telemetry::current_trace_id()).await?;
        // The command is published again on a redelivery; the stream drops the duplicate by
        // its id, so a crash between the two loses nothing.
        let command = event.operator_command();
        let mut forward = HeaderMap::new();
        for name in [headers::IDEMPOTENCY_KEY, headers::FINGERPRINT] {
            if let Some(value) = delivery.header(name) {
                forward.insert(name, value);
            }
        }
        self.ctx
            .bus
            .publish_json(
                subjects::operator_command(command.kind),
                Some(&format!("operator:{}", command.transaction_id)),
                forward,
                &command,
            )
            .await?;
        Ok(())
    }

    async fn operator_callback(&self, delivery: &Delivery) -> StageResult {
        let callback: OperatorCallback = delivery.json()?;
        store::record_operator_callback(&self.ctx.db, &callback).await?;
        Ok(())
    }
}

impl Stage for StageWallet {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        match delivery.subject() {
            subjects::DEBIT_REQUESTED | subjects::CREDIT_REQUESTED => {
                self.requested(delivery).await
            }
            subjects::OPERATOR_CALLBACK => self.operator_callback(delivery).await,
            other => Err(Failure::permanent(format!(
                "stage-wallet has no handler for {other}"
            ))),
        }
    }
}
