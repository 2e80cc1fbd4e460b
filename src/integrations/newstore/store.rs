//! NewStore's tables: `newstore_events` (every event and its status) and `newstore_orders`
//! (per order: the order, and whether its sale and void went out).

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

/// What was decided for an order so far (read under its row lock).
#[derive(Debug, sqlx::FromRow)]
pub struct OrderState {
    pub payload: Option<Value>,
    pub sale_status: String,
    pub void_status: String,
    pub cancelled: bool,
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

/// Records `event` as `accepted` unless it is known: `None` when new, else its status and the
/// transaction it commanded.
pub async fn claim_event(
    tx: &mut PgConnection,
    event: &Accepted,
) -> sqlx::Result<Option<(String, Option<Value>)>> {
    let return_event = event
        .return_event
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|err| sqlx::Error::Encode(err.into()))?;
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO newstore_events (tenant, event_id, name, order_id, status, return_event)
         VALUES ($1, $2, $3, $4, 'accepted', $5)
         ON CONFLICT (tenant, event_id) DO NOTHING
         RETURNING status",
    )
    .bind(&event.tenant)
    .bind(&event.event_id)
    .bind(&event.name)
    .bind(&event.order_id)
    .bind(return_event)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT status, hail_transaction FROM newstore_events
         WHERE tenant = $1 AND event_id = $2 FOR UPDATE",
    )
    .bind(&event.tenant)
    .bind(&event.event_id)
    .fetch_optional(&mut *tx)
    .await
}

/// The order's row, created if new, locked until the transaction ends: events of one order
/// are decided one at a time. A new order costs one statement: the row this transaction
/// inserts is its own until it ends (a concurrent insert of the same order waits for it, then
/// reads it under the lock below).
pub async fn lock_order(
    tx: &mut PgConnection,
    tenant: &str,
    order_id: &str,
) -> sqlx::Result<OrderState> {
    let created: Option<OrderState> = sqlx::query_as(
        "INSERT INTO newstore_orders (tenant, order_id) VALUES ($1, $2)
         ON CONFLICT (tenant, order_id) DO NOTHING
         RETURNING payload, sale_status, void_status, cancelled",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(state) = created {
        return Ok(state);
    }
    sqlx::query_as(
        "SELECT payload, sale_status, void_status, cancelled FROM newstore_orders
         WHERE tenant = $1 AND order_id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_one(&mut *tx)
    .await
}

/// The returns of an order sent to Hail before `except` (theirs, as NewStore listed them), in
/// the order they were decided.
pub async fn earlier_returns(
    tx: &mut PgConnection,
    tenant: &str,
    order_id: &str,
    except: &str,
) -> sqlx::Result<Vec<Value>> {
    sqlx::query_scalar(
        "SELECT return_event FROM newstore_events
         WHERE tenant = $1 AND order_id = $2 AND event_id <> $3
           AND return_event IS NOT NULL AND hail_transaction IS NOT NULL
           AND status IN ('accepted', 'delivered')
         ORDER BY decided_at",
    )
    .bind(tenant)
    .bind(order_id)
    .bind(except)
    .fetch_all(&mut *tx)
    .await
}

/// Whether the order's sale reached Hail.
pub async fn sale_delivered(db: &PgPool, tenant: &str, order_id: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar::<_, String>(
        "SELECT sale_status FROM newstore_orders WHERE tenant = $1 AND order_id = $2",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_optional(db)
    .await?
    .as_deref()
        == Some("delivered"))
}

/// What the stage decided for an event ([`set_event`]'s columns) and the order's changes that
/// go with it (its payload, sale and void status when given, cancelled when set), in one
/// statement.
#[allow(clippy::too_many_arguments)]
pub async fn decided(
    tx: &mut PgConnection,
    tenant: &str,
    event_id: &str,
    status: &str,
    hail_transaction: Option<&Value>,
    last_error: Option<&str>,
    order_id: &str,
    payload: Option<&Value>,
    sale_status: Option<&str>,
    void_status: Option<&str>,
    cancelled: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH event AS (
           UPDATE newstore_events
           SET status = $3,
               hail_transaction_id = COALESCE($4->>'transaction_id', hail_transaction_id),
               hail_transaction = COALESCE($4, hail_transaction),
               decided_at = CASE WHEN $4 IS NULL THEN decided_at ELSE clock_timestamp() END,
               last_error = $5, updated_at = now()
           WHERE tenant = $1 AND event_id = $2
         )
         UPDATE newstore_orders
         SET payload = COALESCE($7, payload), sale_status = COALESCE($8, sale_status),
             void_status = COALESCE($9, void_status), cancelled = cancelled OR $10,
             updated_at = now()
         WHERE tenant = $1 AND order_id = $6",
    )
    .bind(tenant)
    .bind(event_id)
    .bind(status)
    .bind(hail_transaction)
    .bind(last_error)
    .bind(order_id)
    .bind(payload)
    .bind(sale_status)
    .bind(void_status)
    .bind(cancelled)
    .execute(&mut *tx)
    .await?;
    Ok(())
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

/// One call to Hail for an event's transaction, and what it means, in one statement (one
/// round trip, one commit): the attempt is recorded; on success (`delivered`) the event is
/// `delivered` and, for a sale or a void, so is the order's; else the event stays `accepted`
/// with `error`.
#[allow(clippy::too_many_arguments)]
pub async fn delivery_attempted(
    db: &mut PgConnection,
    tenant: &str,
    event_id: &str,
    order_id: &str,
    kind: &str,
    delivered: bool,
    error: Option<&str>,
    attempt: &Attempt,
) -> sqlx::Result<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {},
             event AS (
               UPDATE newstore_events
               SET status = CASE WHEN $5 THEN 'delivered' ELSE 'accepted' END,
                   last_error = $6, updated_at = now()
               WHERE tenant = $1 AND event_id = $2
             )
             UPDATE newstore_orders
             SET sale_status = CASE WHEN $4 = 'sale' THEN 'delivered' ELSE sale_status END,
                 void_status = CASE WHEN $4 = 'void' THEN 'delivered' ELSE void_status END,
                 updated_at = now()
             WHERE $5 AND $4 IN ('sale', 'void') AND tenant = $1 AND order_id = $3",
            attempts::cte(7)
        )
    });
    let query = sqlx::query(SQL.as_str())
        .bind(tenant)
        .bind(event_id)
        .bind(order_id)
        .bind(kind)
        .bind(delivered)
        .bind(error);
    crate::bind_attempt!(query, attempt).execute(db).await?;
    Ok(())
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
