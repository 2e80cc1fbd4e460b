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
//! Parked events are released by `deliver-hail` when the order's sale is delivered, or here
//! when a cancellation means the sale is never sent, and come back here, in the order they
//! were parked (a return then is blocked: there is nothing to return).
//!
//! The messages in hand are decided together ([`GroupCommit`]): every event waiting at that
//! moment in one Postgres transaction and a handful of statements, in arrival order, under
//! their orders' row locks; each message is acked, and its Hail transaction published, only
//! after that commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgConnection;

use crate::integrations::newstore::config::NewStoreConfig;
use crate::integrations::newstore::domain::{self, EventKind, Order};
use crate::integrations::newstore::messages::{Accepted, HailCommand};
use crate::integrations::newstore::{store, subjects, transform};
use crate::runtime::group_commit::{Batched, GroupCommit};
use crate::runtime::{Context, Delivery, Failure, Readiness, Stage, StageResult, park};

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
    /// Release what was parked for this order key.
    Release(String),
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
        events: &'a [&'a Accepted],
    ) -> BoxFuture<'a, Result<Vec<After>, Failure>> {
        Box::pin(self.decide(tx, events))
    }
}

impl Decider {
    /// Records `events` once and decides them, in arrival order, inside `tx` under their
    /// orders' row locks. Two statements for a batch of new events and new orders (claim and
    /// create; write every decision), a few more when some were known or a return needs the
    /// order's earlier returns.
    async fn decide(&self, tx: &mut PgConnection, events: &[&Accepted]) -> Result<Vec<After>, Failure> {
        let (claims, states) = store::claim_and_lock(tx, events, |event, claim| {
            order_to_decide(event, claim).map(|(t, o)| (t.to_string(), o.to_string()))
        })
        .await?;
        let pairs: Vec<(&Accepted, &store::Claim)> = events.iter().copied().zip(&claims).collect();
        let mut orders: HashMap<(String, String), store::OrderState> = states
            .into_iter()
            .map(|state| ((state.tenant.clone(), state.order_id.clone()), state))
            .collect();
        // What earlier returns of an order took back, for the returns that may go out now.
        let returning: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(event, _)| event.kind == Some(EventKind::ReturnProcessed))
            .filter_map(|(event, claim)| order_to_decide(event, claim))
            .filter(|(t, o)| {
                orders
                    .get(&(t.to_string(), o.to_string()))
                    .is_some_and(|state| state.sale_status == "delivered")
            })
            .collect();
        let mut sent_returns: HashMap<(String, String), Vec<(String, Value)>> = HashMap::new();
        if !returning.is_empty() {
            for (tenant, order, event_id, ret) in store::returns_sent(tx, &returning).await? {
                sent_returns.entry((tenant, order)).or_default().push((event_id, ret));
            }
        }

        let mut written = Vec::new();
        let mut afters = Vec::with_capacity(events.len());
        let mut touched = HashSet::new();
        for (event, claim) in &pairs {
            match claim {
                store::Claim::New => {}
                // Parked before: it was released, decide again.
                store::Claim::Known(status, _) if status == "parked" => {}
                // Decided before, and its transaction may not have been published (a crash
                // after the commit): publish again; the stream and Hail drop the duplicate.
                store::Claim::Known(status, Some(transaction)) if status == "accepted" => {
                    afters.push(After::Publish(transaction.clone()));
                    continue;
                }
                store::Claim::Known(..) | store::Claim::Again => {
                    afters.push(After::Nothing);
                    continue;
                }
            }
            let (Some(kind), Some(order_id)) = (event.kind, event.order_id.as_deref()) else {
                written.push(store::EventDecided {
                    tenant: &event.tenant,
                    event_id: &event.event_id,
                    status: "ignored",
                    hail_transaction: None,
                    last_error: None,
                });
                afters.push(After::Nothing);
                continue;
            };
            let tenant = self.cfg.tenant(&event.tenant).ok_or_else(|| {
                Failure::permanent(format!("no NewStore tenant {} is configured", event.tenant))
            })?;
            let key = (event.tenant.clone(), order_id.to_string());
            let state = orders
                .get_mut(&key)
                .ok_or_else(|| Failure::permanent("the order's row was not locked"))?;
            let returned: Vec<&Value> = sent_returns
                .get(&key)
                .into_iter()
                .flatten()
                .filter(|(id, _)| *id != event.event_id)
                .map(|(_, ret)| ret)
                .collect();
            let decision = decide(kind, event, state, &returned, |order| {
                tenant.hail_store(&order.store_id)
            })?;
            apply(state, event, kind, &decision)?;
            touched.insert(key.clone());
            let (status, transaction, error) = match &decision {
                Decision::Send(transaction) => ("accepted", Some(transaction.clone()), None),
                Decision::Done(status) => (*status, None, None),
                Decision::Park(_) => ("parked", None, None),
                Decision::Blocked(why) => ("blocked", None, Some(why.clone())),
            };
            if let (Decision::Send(_), Some(ret)) = (&decision, &event.return_event) {
                let ret = serde_json::to_value(ret).map_err(Failure::permanent)?;
                sent_returns.entry(key).or_default().push((event.event_id.clone(), ret));
            }
            written.push(store::EventDecided {
                tenant: &event.tenant,
                event_id: &event.event_id,
                status,
                hail_transaction: transaction,
                last_error: error,
            });
            afters.push(match decision {
                Decision::Send(transaction) => After::Publish(transaction),
                Decision::Park(reason) => After::Park(reason),
                // A cancellation before the sale was sent: the sale never goes, so what waited
                // for it is decided again (and blocked) now.
                Decision::Done(_)
                    if kind == EventKind::OrderCancelled
                        && state.sale_status == "none"
                        && state.parked =>
                {
                    After::Release(event.order_key().unwrap_or_default())
                }
                Decision::Done(_) | Decision::Blocked(_) => After::Nothing,
            });
        }
        if !written.is_empty() {
            let changed: Vec<&store::OrderState> =
                touched.iter().filter_map(|key| orders.get(key)).collect();
            store::decided(tx, &written, &changed).await?;
        }
        Ok(afters)
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

/// The order (tenant, order id) of an event that is decided now: a new one, or a parked one
/// released back here, that names its order.
fn order_to_decide<'a>(event: &'a Accepted, claim: &store::Claim) -> Option<(&'a str, &'a str)> {
    if !claim.decides_now() || event.kind.is_none() {
        return None;
    }
    Some((event.tenant.as_str(), event.order_id.as_deref()?))
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
            After::Release(key) => {
                park::release(&self.decider.ctx.bus, subjects::PARKING_DURABLE, &key).await?;
                Ok(())
            }
            After::Nothing => Ok(()),
        }
    }

    /// Parked: if the sale was delivered, or the order cancelled before its sale, meanwhile
    /// (its release may have run before this message was stored), the runtime releases it at
    /// once.
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
            if store::parked_can_go(&self.decider.ctx.db, &event.tenant, order_id).await? {
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

/// The order row's changes that go with `decision` (written with the batch).
fn apply(
    state: &mut store::OrderState,
    event: &Accepted,
    kind: EventKind,
    decision: &Decision,
) -> StageResult {
    if matches!(kind, EventKind::OrderOpened | EventKind::OrderCompleted)
        && let Some(order) = &event.order
    {
        state.payload = Some(serde_json::to_value(order).map_err(Failure::permanent)?);
    }
    match (kind, decision) {
        (EventKind::OrderCompleted, Decision::Send(_)) => state.sale_status = "sent".into(),
        (EventKind::OrderCancelled, Decision::Send(_)) => {
            state.void_status = "sent".into();
            state.cancelled = true;
        }
        (EventKind::OrderCancelled, _) => state.cancelled = true,
        _ => {}
    }
    if matches!(decision, Decision::Park(_)) {
        state.parked = true;
    }
    Ok(())
}

/// The rule, given what is known about the order.
fn decide(
    kind: EventKind,
    event: &Accepted,
    state: &store::OrderState,
    earlier_returns: &[&Value],
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
                        let earlier: domain::ReturnEvent = serde_json::from_value((*earlier).clone())
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
