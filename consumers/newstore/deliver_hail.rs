//! `deliver-hail` (OUTBOUND, `out.hail.>`): validates each Hail transaction against
//! `schemas/newstore/`, POSTs it to its tenant's Hail with `Authorization: Bearer <key>` and
//! `Idempotency-Key: <transaction id>`, and records every attempt. 2xx → the event is
//! `delivered` (and a delivered sale releases what waited for it, when its order has anything
//! parked); 4xx other than 408/429 →
//! the DLQ at once (`blocked`); anything else is retried with exponential backoff. The calls
//! run concurrently; what they come to is written with a group commit ([`GroupCommit`]), and
//! a message is acked only after its write committed.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::db::attempts::Attempt;
use crate::integrations::newstore::store::HailOutcome;
use crate::http_client::{self, Verdict};
use crate::integrations::newstore::config::NewStoreConfig;
use crate::integrations::newstore::messages::{HailCommand, order_key};
use crate::integrations::newstore::{store, subjects, transform};
use crate::runtime::group_commit::{Batched, GroupCommit};
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult, park};

pub struct DeliverHail {
    ctx: Context,
    cfg: NewStoreConfig,
    outcomes: GroupCommit<Recorder>,
}

/// The most outcomes written in one transaction.
const MAX_BATCH: usize = 64;

impl DeliverHail {
    pub fn new(ctx: &Context, cfg: NewStoreConfig) -> Self {
        Self {
            outcomes: GroupCommit::start(ctx.db.clone(), Arc::new(Recorder), MAX_BATCH),
            ctx: ctx.clone(),
            cfg,
        }
    }
}

/// Writes outcomes: a batch in one statement.
struct Recorder;

impl Batched for Recorder {
    type Job = HailOutcome;
    /// A delivered sale whose order has parked events.
    type Done = bool;
    const ONE_STATEMENT: bool = true;

    fn run<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        outcomes: &'a [&'a HailOutcome],
    ) -> BoxFuture<'a, Result<Vec<bool>, Failure>> {
        Box::pin(async move { Ok(store::deliveries_recorded(tx, outcomes).await?) })
    }
}

impl DeliverHail {
    /// Releases what was parked for the order of a delivered sale (after the delivery
    /// committed: see `runtime::park` for why that order matters).
    async fn release(&self, command: &HailCommand) -> StageResult {
        park::release(
            &self.ctx.bus,
            subjects::PARKING_DURABLE,
            &order_key(&command.tenant, &command.order_id),
        )
        .await?;
        Ok(())
    }
}

impl Stage for DeliverHail {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let command: HailCommand = delivery.json()?;
        let tenant = self.cfg.tenant(&command.tenant).ok_or_else(|| {
            Failure::permanent(format!("no NewStore tenant {} is configured", command.tenant))
        })?;
        // A redelivery may come after a crash between the commit of the delivery and the
        // release: release again (nothing parked is one request). A first delivery of a
        // delivered event (a replay) goes to Hail again, which answers the repeat from its
        // idempotency key.
        if delivery.delivered > 1
            && store::event_status(&self.ctx.db, &command.tenant, &command.event_id)
                .await?
                .as_deref()
                == Some("delivered")
        {
            if command.transaction.kind.as_str() == "sale" {
                self.release(&command).await?;
            }
            return Ok(());
        }
        transform::validate(&command.transaction).map_err(|violations| {
            Failure::permanent(format!(
                "the Hail transaction does not match its schema: {}",
                violations.join("; ")
            ))
        })?;
        let transaction = &command.transaction;
        let request = self
            .ctx
            .http
            .post(&tenant.hail_url)
            .bearer_auth(tenant.hail_api_key.expose())
            .header("idempotency-key", &transaction.transaction_id)
            .json(transaction);
        let response = http_client::send("hail", request).await;
        let attempt = Attempt::of(
            "hail",
            &transaction.transaction_id,
            delivery.delivered,
            &response,
        );
        let success = response.verdict() == Verdict::Success;
        let error = (!success).then(|| response.describe());
        // The attempt and what it means for the event and its order, in the next group
        // commit (one statement for the batch).
        let parked = self
            .outcomes
            .submit(HailOutcome {
                tenant: command.tenant.clone(),
                event_id: command.event_id.clone(),
                order_id: command.order_id.clone(),
                kind: transaction.kind.as_str(),
                delivered: success,
                error,
                attempt,
            })
            .await?;
        if !success {
            return Err(Failure::of_response(&response));
        }
        if parked {
            self.release(&command).await?;
        }
        Ok(())
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        if let Ok(command) = delivery.json::<HailCommand>() {
            store::set_event(
                &self.ctx.db,
                &command.tenant,
                &command.event_id,
                "blocked",
                None,
                Some(error),
            )
            .await?;
        }
        Ok(())
    }
}
