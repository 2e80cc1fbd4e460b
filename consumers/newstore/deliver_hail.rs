//! `deliver-hail` (OUTBOUND, `out.hail.>`): validates each Hail transaction against
//! `schemas/newstore/`, POSTs it to its tenant's Hail with `Authorization: Bearer <key>` and
//! `Idempotency-Key: <transaction id>`, and records every attempt. 2xx → the event is
//! `delivered` (and a delivered sale releases what waited for it); 4xx other than 408/429 →
//! the DLQ at once (`blocked`); anything else is retried with exponential backoff. The calls
//! run concurrently; what they come to is written with a group commit ([`GroupCommit`]), and
//! a message is acked only after its write committed.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::db::attempts::Attempt;
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

/// One call's attempt and what it means for its event and order.
struct Outcome {
    tenant: String,
    event_id: String,
    order_id: String,
    kind: &'static str,
    success: bool,
    error: Option<String>,
    attempt: Attempt,
}

/// Writes outcomes, many to a transaction.
struct Recorder;

impl Batched for Recorder {
    type Job = Outcome;
    type Done = ();

    fn run<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            store::delivery_attempted(
                tx,
                &outcome.tenant,
                &outcome.event_id,
                &outcome.order_id,
                outcome.kind,
                outcome.success,
                outcome.error.as_deref(),
                &outcome.attempt,
            )
            .await?;
            Ok(())
        })
    }
}

impl DeliverHail {
    /// A delivered sale releases what was parked for its order (after the delivery committed:
    /// see `runtime::park` for why that order matters).
    async fn release_after(&self, command: &HailCommand) -> StageResult {
        if command.transaction.kind.as_str() == "sale" {
            park::release(
                &self.ctx.bus,
                subjects::PARKING_DURABLE,
                &order_key(&command.tenant, &command.order_id),
            )
            .await?;
        }
        Ok(())
    }
}

impl Stage for DeliverHail {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let command: HailCommand = delivery.json()?;
        let tenant = self.cfg.tenant(&command.tenant).ok_or_else(|| {
            Failure::permanent(format!("no NewStore tenant {} is configured", command.tenant))
        })?;
        let db = &self.ctx.db;
        if store::event_status(db, &command.tenant, &command.event_id)
            .await?
            .as_deref()
            == Some("delivered")
        {
            // Delivered before (this is a redelivery, maybe after a crash before the
            // release): release again; nothing parked is a cheap no-op.
            return self.release_after(&command).await;
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
        // The attempt and what it means for the event and its order: one statement, in the
        // next group commit.
        self.outcomes
            .submit(Outcome {
                tenant: command.tenant.clone(),
                event_id: command.event_id.clone(),
                order_id: command.order_id.clone(),
                kind: transaction.kind.as_str(),
                success,
                error,
                attempt,
            })
            .await?;
        if !success {
            return Err(Failure::of_response(&response));
        }
        self.release_after(&command).await
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
