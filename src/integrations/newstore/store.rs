//! NewStore's tables: `newstore_events` (every event and its status) and `newstore_orders`
//! (per order: the order, and whether its sale and void went out).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::db::attempts::{self, Attempt};

use super::messages::Accepted;

/// An event's row, as the status page shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub tenant: String,
    pub event_id: String,
    pub name: String,
    pub order_id: Option<String>,
    pub status: String,
    pub hail_transaction_id: Option<String>,
    pub hail_transaction: Option<Value>,
    pub last_error: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub tenant: String,
    pub order_id: String,
    pub sale_status: String,
    pub void_status: String,
    pub cancelled: bool,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// What was known of an event when its batch claimed it.
#[derive(Debug)]
pub enum Claim {
    /// New: recorded now as `accepted`.
    New,
    /// Recorded before: its status and the transaction it commanded.
    Known(String, Option<Value>),
    /// The same event came earlier in this batch.
    Again,
}

impl Claim {
    /// Whether the event is decided now: a new one, or a parked one released back.
    pub fn decides_now(&self) -> bool {
        match self {
            Claim::New => true,
            Claim::Known(status, _) => status == "parked",
            Claim::Again => false,
        }
    }
}

/// An order's row as the stage reads it under its lock, and changes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderState {
    pub tenant: String,
    pub order_id: String,
    pub payload: Option<Value>,
    pub sale_status: String,
    pub void_status: String,
    pub cancelled: bool,
    /// An event of the order was parked (waiting for its sale) at some point.
    pub parked: bool,
}

/// A row of [`claim_and_lock`]'s first statement: an event it recorded, or an order it
/// created.
type Claimed = (
    bool,
    String,
    String,
    Option<Value>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<bool>,
);

/// Claims a batch of events and locks the rows of the orders to decide, in one statement
/// when everything is new (the common case), up to three otherwise:
///
/// 1. records the events not known yet as `accepted`, and creates the orders not known yet
///    (the rows this transaction inserts are its own until it ends; a concurrent insert of the
///    same order waits for it, then reads it under the lock below);
/// 2. if some events were known, locks their rows and reads their status;
/// 3. if some orders to decide existed, locks their rows (in key order: two batches never wait
///    for each other in a circle) and reads them.
///
/// Answers each event's [`Claim`], in order, and the state of every order an event decided
/// now names (what `order_key` gives for them).
pub async fn claim_and_lock(
    tx: &mut PgConnection,
    events: &[&Accepted],
    order_key: impl Fn(&Accepted, &Claim) -> Option<(String, String)>,
) -> sqlx::Result<(Vec<Claim>, Vec<OrderState>)> {
    let mut return_events = Vec::with_capacity(events.len());
    for event in events {
        let value = event.return_event.as_ref().map(serde_json::to_value).transpose();
        return_events.push(value.map_err(|err| sqlx::Error::Encode(err.into()))?);
    }
    let column = |f: fn(&Accepted) -> &str| -> Vec<&str> { events.iter().map(|e| f(e)).collect() };
    let (tenants, event_ids) = (column(|e| &e.tenant), column(|e| &e.event_id));
    // Every order an event names, decided now or not (creating one that exists is a no-op).
    let mut all_orders: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind.is_some())
        .filter_map(|e| Some((e.tenant.as_str(), e.order_id.as_deref()?)))
        .collect();
    all_orders.sort_unstable();
    all_orders.dedup();
    let (order_tenants, order_ids): (Vec<&str>, Vec<&str>) = all_orders.iter().copied().unzip();
    let rows: Vec<Claimed> = sqlx::query_as(
        "WITH events AS (
           INSERT INTO newstore_events (tenant, event_id, name, order_id, status, return_event)
           SELECT tenant, event_id, name, order_id, 'accepted', return_event
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
             AS i(tenant, event_id, name, order_id, return_event)
           ON CONFLICT (tenant, event_id) DO NOTHING
           RETURNING tenant, event_id
         ), orders AS (
           INSERT INTO newstore_orders (tenant, order_id)
           SELECT * FROM unnest($6::text[], $7::text[])
           ON CONFLICT (tenant, order_id) DO NOTHING
           RETURNING tenant, order_id, payload, sale_status, void_status, cancelled, parked
         )
         SELECT true, tenant, event_id, NULL::jsonb, NULL, NULL, NULL::bool, NULL::bool
         FROM events
         UNION ALL
         SELECT false, tenant, order_id, payload, sale_status, void_status, cancelled, parked
         FROM orders",
    )
    .bind(&tenants)
    .bind(&event_ids)
    .bind(column(|e| &e.name))
    .bind(events.iter().map(|e| e.order_id.as_deref()).collect::<Vec<_>>())
    .bind(&return_events)
    .bind(&order_tenants)
    .bind(&order_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut inserted = HashSet::new();
    let mut orders = HashMap::new();
    for (is_event, tenant, id, payload, sale_status, void_status, cancelled, parked) in rows {
        if is_event {
            inserted.insert((tenant, id));
        } else {
            let state = OrderState {
                tenant: tenant.clone(),
                order_id: id.clone(),
                payload,
                sale_status: sale_status.unwrap_or_default(),
                void_status: void_status.unwrap_or_default(),
                cancelled: cancelled.unwrap_or_default(),
                parked: parked.unwrap_or_default(),
            };
            orders.insert((tenant, id), state);
        }
    }

    let mut known = HashMap::new();
    if inserted.len() < events.len() {
        let rows: Vec<(String, String, String, Option<Value>)> = sqlx::query_as(
            "SELECT tenant, event_id, status, hail_transaction FROM newstore_events
             WHERE (tenant, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY tenant, event_id FOR UPDATE",
        )
        .bind(&tenants)
        .bind(&event_ids)
        .fetch_all(&mut *tx)
        .await?;
        known = rows
            .into_iter()
            .map(|(tenant, event_id, status, transaction)| ((tenant, event_id), (status, transaction)))
            .collect();
    }
    let mut seen = HashSet::new();
    let claims: Vec<Claim> = events
        .iter()
        .map(|e| {
            let key = (e.tenant.clone(), e.event_id.clone());
            if !seen.insert(key.clone()) {
                Claim::Again
            } else if inserted.contains(&key) {
                Claim::New
            } else {
                let (status, transaction) = known
                    .remove(&key)
                    .unwrap_or_else(|| ("accepted".to_string(), None));
                Claim::Known(status, transaction)
            }
        })
        .collect();

    let mut existing: Vec<(String, String)> = events
        .iter()
        .zip(&claims)
        .filter_map(|(e, claim)| order_key(e, claim))
        .filter(|key| !orders.contains_key(key))
        .collect();
    existing.sort_unstable();
    existing.dedup();
    let mut states: Vec<OrderState> = orders.into_values().collect();
    if !existing.is_empty() {
        let (tenants, order_ids): (Vec<String>, Vec<String>) = existing.into_iter().unzip();
        let locked: Vec<OrderState> = sqlx::query_as(
            "SELECT tenant, order_id, payload, sale_status, void_status, cancelled, parked
             FROM newstore_orders
             WHERE (tenant, order_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY tenant, order_id FOR UPDATE",
        )
        .bind(&tenants)
        .bind(&order_ids)
        .fetch_all(&mut *tx)
        .await?;
        states.extend(locked);
    }
    Ok((claims, states))
}

/// The returns of these orders sent to Hail (theirs, as NewStore listed them), in the order
/// they were decided: `(tenant, order id, event id, return)`.
pub async fn returns_sent(
    tx: &mut PgConnection,
    keys: &[(&str, &str)],
) -> sqlx::Result<Vec<(String, String, String, Value)>> {
    let (tenants, orders): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    sqlx::query_as(
        "SELECT tenant, order_id, event_id, return_event FROM newstore_events
         WHERE (tenant, order_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
           AND return_event IS NOT NULL AND hail_transaction IS NOT NULL
           AND status IN ('accepted', 'delivered')
         ORDER BY decided_at",
    )
    .bind(&tenants)
    .bind(&orders)
    .fetch_all(&mut *tx)
    .await
}

/// What the stage decided for one event.
#[derive(Debug)]
pub struct EventDecided<'a> {
    pub tenant: &'a str,
    pub event_id: &'a str,
    pub status: &'static str,
    pub hail_transaction: Option<Value>,
    pub last_error: Option<String>,
}

/// Writes a batch's decisions: each event's status (with the transaction it commands, or the
/// error that blocks it; `decided_at` in decision order) and each order's row as the batch
/// left it, in one statement.
pub async fn decided(
    tx: &mut PgConnection,
    events: &[EventDecided<'_>],
    orders: &[&OrderState],
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH event AS (
           UPDATE newstore_events e
           SET status = i.status,
               hail_transaction_id = COALESCE(i.tx->>'transaction_id', e.hail_transaction_id),
               hail_transaction = COALESCE(i.tx, e.hail_transaction),
               decided_at = CASE WHEN i.tx IS NULL THEN e.decided_at
                                 ELSE clock_timestamp() + i.ord * interval '1 microsecond' END,
               last_error = i.error, updated_at = now()
           FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
             WITH ORDINALITY AS i(tenant, event_id, status, tx, error, ord)
           WHERE e.tenant = i.tenant AND e.event_id = i.event_id
         )
         UPDATE newstore_orders o
         SET payload = i.payload, sale_status = i.sale_status, void_status = i.void_status,
             cancelled = i.cancelled, parked = i.parked, updated_at = now()
         FROM unnest($6::text[], $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::bool[],
                     $12::bool[])
           AS i(tenant, order_id, payload, sale_status, void_status, cancelled, parked)
         WHERE o.tenant = i.tenant AND o.order_id = i.order_id",
    )
    .bind(events.iter().map(|e| e.tenant).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.status).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.hail_transaction.as_ref()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.last_error.as_deref()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.tenant.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.payload.as_ref()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.sale_status.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.void_status.as_str()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.cancelled).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.parked).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether what waits for the order's sale can be decided now: the sale reached Hail, or the
/// order was cancelled before its sale was sent (it never will be).
pub async fn parked_can_go(db: &PgPool, tenant: &str, order_id: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT sale_status = 'delivered' OR (cancelled AND sale_status = 'none')
         FROM newstore_orders WHERE tenant = $1 AND order_id = $2",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_optional(db)
    .await?
    .unwrap_or(false))
}

/// Sets an event's status (and the transaction it commands, or the error that blocks it).
pub async fn set_event<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tenant: &str,
    event_id: &str,
    status: &str,
    hail_transaction: Option<&Value>,
    last_error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE newstore_events
         SET status = $3,
             hail_transaction_id = COALESCE($4->>'transaction_id', hail_transaction_id),
             hail_transaction = COALESCE($4, hail_transaction),
             decided_at = CASE WHEN $4 IS NULL THEN decided_at ELSE clock_timestamp() END,
             last_error = $5, updated_at = now()
         WHERE tenant = $1 AND event_id = $2",
    )
    .bind(tenant)
    .bind(event_id)
    .bind(status)
    .bind(hail_transaction)
    .bind(last_error)
    .execute(db)
    .await?;
    Ok(())
}

/// The status of an event, if known.
pub async fn event_status(db: &PgPool, tenant: &str, event_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT status FROM newstore_events WHERE tenant = $1 AND event_id = $2")
        .bind(tenant)
        .bind(event_id)
        .fetch_optional(db)
        .await
}

/// One call to Hail for an event's transaction, and what it came to.
#[derive(Debug)]
pub struct HailOutcome {
    pub tenant: String,
    pub event_id: String,
    pub order_id: String,
    /// `sale`, `void` or `return`.
    pub kind: &'static str,
    /// Hail answered 2xx.
    pub delivered: bool,
    pub error: Option<String>,
    pub attempt: Attempt,
}

/// Calls to Hail and what they mean, in one statement (one round trip) for them all: every
/// attempt is recorded; a delivered event is `delivered` (and, for a sale or a void, so is its
/// order's); else the event stays `accepted` with its error. Answers, per outcome, whether it
/// is a delivered sale whose order has parked events to release.
pub async fn deliveries_recorded(
    db: &mut PgConnection,
    outcomes: &[&HailOutcome],
) -> sqlx::Result<Vec<bool>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {},
             input AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                                    $6::text[]) WITH ORDINALITY
                 AS i(tenant, event_id, order_id, kind, delivered, error, ord)
             ),
             event AS (
               UPDATE newstore_events e
               SET status = CASE WHEN i.delivered THEN 'delivered' ELSE 'accepted' END,
                   last_error = i.error, updated_at = now()
               FROM (SELECT DISTINCT ON (tenant, event_id) * FROM input
                     ORDER BY tenant, event_id, delivered DESC, ord DESC) i
               WHERE e.tenant = i.tenant AND e.event_id = i.event_id
             )
             UPDATE newstore_orders o
             SET sale_status = CASE WHEN i.sale THEN 'delivered' ELSE o.sale_status END,
                 void_status = CASE WHEN i.void THEN 'delivered' ELSE o.void_status END,
                 updated_at = now()
             FROM (SELECT tenant, order_id, bool_or(kind = 'sale') AS sale,
                          bool_or(kind = 'void') AS void
                   FROM input WHERE delivered AND kind IN ('sale', 'void')
                   GROUP BY tenant, order_id) i
             WHERE o.tenant = i.tenant AND o.order_id = i.order_id
             RETURNING o.tenant, o.order_id, o.parked",
            attempts::many_cte(7)
        )
    });
    let column = |f: fn(&HailOutcome) -> &str| -> Vec<&str> { outcomes.iter().map(|o| f(o)).collect() };
    let mut attempts = attempts::Columns::default();
    for outcome in outcomes {
        attempts.push(&outcome.attempt);
    }
    let query = sqlx::query_as::<_, (String, String, bool)>(SQL.as_str())
        .bind(column(|o| &o.tenant))
        .bind(column(|o| &o.event_id))
        .bind(column(|o| &o.order_id))
        .bind(column(|o| o.kind))
        .bind(outcomes.iter().map(|o| o.delivered).collect::<Vec<_>>())
        .bind(outcomes.iter().map(|o| o.error.as_deref()).collect::<Vec<_>>());
    let orders = crate::bind_attempts!(query, &attempts).fetch_all(db).await?;
    let parked: HashSet<(&str, &str)> = orders
        .iter()
        .filter(|(_, _, parked)| *parked)
        .map(|(tenant, order, _)| (tenant.as_str(), order.as_str()))
        .collect();
    Ok(outcomes
        .iter()
        .map(|o| {
            o.delivered
                && o.kind == "sale"
                && parked.contains(&(o.tenant.as_str(), o.order_id.as_str()))
        })
        .collect())
}

pub async fn event(db: &PgPool, tenant: &str, event_id: &str) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as("SELECT * FROM newstore_events WHERE tenant = $1 AND event_id = $2")
        .bind(tenant)
        .bind(event_id)
        .fetch_optional(db)
        .await
}

pub async fn order(db: &PgPool, tenant: &str, order_id: &str) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(
        "SELECT tenant, order_id, sale_status, void_status, cancelled, updated_at
         FROM newstore_orders WHERE tenant = $1 AND order_id = $2",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_optional(db)
    .await
}

pub async fn order_events(db: &PgPool, tenant: &str, order_id: &str) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "SELECT * FROM newstore_events WHERE tenant = $1 AND order_id = $2
         ORDER BY received_at, event_id",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_all(db)
    .await
}

/// Every call to Hail for a transaction: (attempt, status code, error).
pub async fn attempts(
    db: &PgPool,
    transaction_id: &str,
) -> sqlx::Result<Vec<(i32, Option<i32>, Option<String>)>> {
    sqlx::query_as(
        "SELECT attempt, status_code, error FROM delivery_attempts
         WHERE target = 'hail' AND subject_id = $1 ORDER BY id",
    )
    .bind(transaction_id)
    .fetch_all(db)
    .await
}
