//! `stage-newstore` (INBOUND, `in.newstore.>`): records every event once and decides, under its
//! order's row lock, what goes to Hail:
//!
//! * `order.opened` keeps the order; nothing is sent.
//! * `order.completed` commands the sale, unless the order was cancelled first (then the sale
//!   is never sent and the event is `cancelled`) or a sale was already commanded.
//! * `order.cancelled` before the sale was commanded: the sale will never be sent. After it was
//!   delivered: commands the void. While it is on its way: parks until it is delivered.
//! * `return.processed` once the sale is delivered: commands the return; before: parks.
//!
//! Parked events are released by `deliver-hail` when the order's sale is delivered, and come
//! back here, in the order they were parked.
//!
//! The messages in hand are decided together ([`GroupCommit`]): every event waiting at that
//! moment in one Postgres transaction, in arrival order, each under its order's row lock; each
//! message is acked, and its Hail transaction published, only after that commit.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgConnection;

use crate::integrations::newstore::config::NewStoreConfig;
use crate::integrations::newstore::domain::{self, EventKind, Order};
use crate::integrations::newstore::messages::{Accepted, HailCommand};
use crate::integrations::newstore::{store, subjects, transform};
use crate::runtime::group_commit::{Batched, GroupCommit};
use crate::runtime::{Context, Delivery, Failure, Readiness, Stage, StageResult};

pub struct StageNewStore {
    decider: Arc<Decider>,
    batches: GroupCommit<Decider>,
}

/// Decides events: the stage's state, shared with its batching task.
struct Decider {
    ctx: Context,
    cfg: NewStoreConfig,
}

/// What is left to do once the decision is committed.
enum After {
    Publish(Value),
    Park(&'static str),
    Nothing,
}

/// The most events decided in one transaction.
const MAX_BATCH: usize = 64;

impl StageNewStore {
    pub fn new(ctx: &Context, cfg: NewStoreConfig) -> Self {
        let decider = Arc::new(Decider {
            ctx: ctx.clone(),
            cfg,
        });
        let batches = GroupCommit::start(ctx.db.clone(), decider.clone(), MAX_BATCH);
        Self { decider, batches }
    }
}

impl Batched for Decider {
    type Job = Accepted;
    type Done = After;

    fn run<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a Accepted,
    ) -> BoxFuture<'a, Result<After, Failure>> {
        Box::pin(self.decide(tx, event))
    }
}

impl Decider {
    /// Records `event` once and decides it inside `tx`, under its order's row lock.
    async fn decide(&self, tx: &mut PgConnection, event: &Accepted) -> Result<After, Failure> {
        match store::claim_event(tx, event).await? {
            None => {}
            // Parked before: it was released, decide again.
            Some((status, _)) if status == "parked" => {}
            // Decided before, and its transaction may not have been published (a crash after
            // the commit): publish again; the stream and Hail drop the duplicate.
            Some((status, Some(transaction))) if status == "accepted" => {
                return Ok(After::Publish(transaction));
            }
            Some(_) => return Ok(After::Nothing),
        }
        let (Some(kind), Some(order_id)) = (event.kind, event.order_id.as_deref()) else {
            store::set_event(&mut *tx, &event.tenant, &event.event_id, "ignored", None, None)
                .await?;
            return Ok(After::Nothing);
        };
        let tenant = self.cfg.tenant(&event.tenant).ok_or_else(|| {
            Failure::permanent(format!("no NewStore tenant {} is configured", event.tenant))
        })?;
        let state = store::lock_order(tx, &event.tenant, order_id).await?;
        let returned = if kind == EventKind::ReturnProcessed {
            store::earlier_returns(tx, &event.tenant, order_id, &event.event_id).await?
        } else {
            Vec::new()
        };
        let decision = decide(kind, event, &state, &returned, |order| {
            tenant.hail_store(&order.store_id)
        })?;
        let (status, transaction, error) = match &decision {
            Decision::Send(transaction) => ("accepted", Some(transaction), None),
            Decision::Done(status) => (*status, None, None),
            Decision::Park(_) => ("parked", None, None),
            Decision::Blocked(why) => ("blocked", None, Some(why.as_str())),
        };
        apply(tx, event, kind, &decision, (status, transaction, error)).await?;
        Ok(match decision {
            Decision::Send(transaction) => After::Publish(transaction),
            Decision::Park(reason) => After::Park(reason),
            Decision::Done(_) | Decision::Blocked(_) => After::Nothing,
        })
    }


    async fn command(&self, event: &Accepted, transaction: Value) -> StageResult {
        let transaction: transform::HailTransaction =
            serde_json::from_value(transaction).map_err(Failure::permanent)?;
        let command = HailCommand {
            tenant: event.tenant.clone(),
            event_id: event.event_id.clone(),
            order_id: event.order_id.clone().unwrap_or_default(),
            transaction,
        };
        let msg_id = format!("hail:{}:{}", event.tenant, command.transaction.transaction_id);
        self.ctx
            .bus
            .publish_json(
                subjects::HAIL_TRANSACTION,
                Some(&msg_id),
                async_nats::HeaderMap::new(),
                &command,
            )
            .await?;
        Ok(())
    }
}

/// What the stage decided for one event.
enum Decision {
    /// Send this Hail transaction.
    Send(Value),
    /// Nothing to send; the event's final status.
    Done(&'static str),
    /// Wait until the order's sale is delivered.
    Park(&'static str),
    /// Never deliverable as it is.
    Blocked(String),
}

impl Stage for StageNewStore {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let event: Accepted = delivery.json()?;
        match self.batches.submit(event.clone()).await? {
            After::Publish(transaction) => self.decider.command(&event, transaction).await,
            After::Park(reason) => Err(Failure::park(
                event.order_key().unwrap_or_default(),
                reason.to_string(),
            )),
            After::Nothing => Ok(()),
        }
    }

    /// Parked: if the sale was delivered meanwhile (its release may have run before this
    /// message was stored), the runtime releases it at once.
    async fn parked(
        &self,
        delivery: &Delivery,
        _key: &str,
        _reason: &str,
    ) -> anyhow::Result<Readiness> {
        let event: Accepted = delivery.json()?;
        let Some(order_id) = event.order_id.as_deref() else {
            return Ok(Readiness::Waiting);
        };
        Ok(
            if store::sale_delivered(&self.decider.ctx.db, &event.tenant, order_id).await? {
                Readiness::Ready
            } else {
                Readiness::Waiting
            },
        )
    }

    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        if let Ok(event) = delivery.json::<Accepted>() {
            store::set_event(&self.decider.ctx.db, &event.tenant, &event.event_id, "blocked", None, Some(error))
                .await?;
        }
        Ok(())
    }
}

/// The event's new status (its transaction, its error) and the order row's changes that go
/// with `decision`, in one statement.
async fn apply(
    tx: &mut sqlx::PgConnection,
    event: &Accepted,
    kind: EventKind,
    decision: &Decision,
    (status, transaction, error): (&str, Option<&Value>, Option<&str>),
) -> StageResult {
    let order_id = event.order_id.as_deref().unwrap_or_default();
    let payload = event
        .order
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(Failure::permanent)?;
    let (sale, void, cancelled) = match (kind, decision) {
        (EventKind::OrderCompleted, Decision::Send(_)) => (Some("sent"), None, false),
        (EventKind::OrderCancelled, Decision::Send(_)) => (None, Some("sent"), true),
        (EventKind::OrderCancelled, _) => (None, None, true),
        _ => (None, None, false),
    };
    let keep_payload = matches!(kind, EventKind::OrderOpened | EventKind::OrderCompleted);
    store::decided(
        tx,
        &event.tenant,
        &event.event_id,
        status,
        transaction,
        error,
        order_id,
        payload.as_ref().filter(|_| keep_payload),
        sale,
        void,
        cancelled,
    )
    .await?;
    Ok(())
}

/// The rule, given what is known about the order.
fn decide(
    kind: EventKind,
    event: &Accepted,
    state: &store::OrderState,
    earlier_returns: &[Value],
    hail_store: impl Fn(&Order) -> String,
) -> Result<Decision, Failure> {
    let stored_order = || -> Result<Order, Failure> {
        let payload = state.payload.clone().ok_or_else(|| {
            Failure::permanent("the order's sale was sent but its order is not stored")
        })?;
        serde_json::from_value(payload).map_err(Failure::permanent)
    };
    let to_value = |tx: transform::HailTransaction| {
        serde_json::to_value(tx).map_err(Failure::permanent)
    };
    Ok(match kind {
        EventKind::OrderOpened => Decision::Done("recorded"),
        EventKind::OrderCompleted => {
            let order = event
                .order
                .as_ref()
                .ok_or_else(|| Failure::permanent("order.completed without its order"))?;
            if state.cancelled {
                Decision::Done("cancelled")
            } else if state.sale_status != "none" {
                Decision::Done("recorded")
            } else {
                let occurred_at = order.completed_at.as_deref().unwrap_or(&event.published_at);
                Decision::Send(to_value(transform::sale(
                    order,
                    &event.event_id,
                    &hail_store(order),
                    occurred_at,
                ))?)
            }
        }
        EventKind::OrderCancelled => match state.sale_status.as_str() {
            "none" => Decision::Done("recorded"),
            "sent" => Decision::Park("its sale is on its way to Hail; the void follows it"),
            _ if state.void_status != "none" => Decision::Done("recorded"),
            _ => {
                let order = stored_order()?;
                Decision::Send(to_value(transform::void(
                    &order,
                    &event.event_id,
                    &hail_store(&order),
                    &event.published_at,
                ))?)
            }
        },
        EventKind::ReturnProcessed => {
            let ret = event
                .return_event
                .as_ref()
                .ok_or_else(|| Failure::permanent("return.processed without its return"))?;
            match state.sale_status.as_str() {
                "delivered" => {
                    let order = stored_order()?;
                    // What earlier returns of the order took back, in the order they were sent.
                    let mut before = transform::Returned::new();
                    for earlier in earlier_returns {
                        let earlier: domain::ReturnEvent = serde_json::from_value(earlier.clone())
                            .map_err(Failure::permanent)?;
                        transform::add_returned(&mut before, &earlier);
                    }
                    match transform::refund_after(
                        &order,
                        ret,
                        &before,
                        &event.event_id,
                        &hail_store(&order),
                    ) {
                        Ok(tx) => Decision::Send(to_value(tx)?),
                        Err(why) => Decision::Blocked(why),
                    }
                }
                _ if state.cancelled && state.sale_status == "none" => Decision::Blocked(
                    "the order was cancelled before its sale: there is nothing to return".into(),
                ),
                _ => Decision::Park("its order's sale has not reached Hail yet"),
            }
        }
    })
}
