//! The wallet's state in Postgres: transactions, outcome webhooks to the RGS, operator
//! callbacks. Every write is keyed by a business id with a unique constraint, so a redelivered
//! message changes nothing twice.

use std::sync::LazyLock;

use sqlx::PgPool;
use uuid::Uuid;

use super::domain::{OperatorCallback, OperatorCommand, Outcome, Requested, RgsWebhook, Status};
use crate::db::attempts::{self, Attempt};

/// Records an accepted debit or credit as `pending`. Committed asynchronously (no wait for the
/// WAL flush, off the path to the operator): the outcome write inserts the whole row anyway,
/// so losing this one in a crash loses nothing. A redelivery finds the row and changes nothing.
pub async fn record_requested(
    db: &PgPool,
    event: &Requested,
    trace_id: Option<String>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wallet_transactions
             (id, kind, player_id, amount_minor, currency, round_id, game_id, trace_id)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8
         FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(event.transaction_id)
    .bind(event.kind.as_str())
    .bind(event.player_id.as_str())
    .bind(event.amount.minor())
    .bind(event.currency.code())
    .bind(&event.round_id)
    .bind(&event.game_id)
    .bind(trace_id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn record_operator_callback(db: &PgPool, callback: &OperatorCallback) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO operator_callbacks (operator_transaction_id, event, transaction_id, payload)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (operator_transaction_id, event) DO NOTHING",
    )
    .bind(&callback.transaction_id)
    .bind(&callback.event)
    .bind(&callback.external_transaction_id)
    .bind(sqlx::types::Json(callback))
    .execute(db)
    .await?;
    Ok(())
}

/// The outcome with its webhook; the attempt, when there was a call, is inserted first.
const OUTCOME: &str = "outcome AS (
         INSERT INTO wallet_transactions
             (id, kind, player_id, amount_minor, currency, round_id, game_id,
              status, balance_minor, operator_transaction_id, reason, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE
         SET status = EXCLUDED.status, balance_minor = EXCLUDED.balance_minor,
             operator_transaction_id = EXCLUDED.operator_transaction_id,
             reason = EXCLUDED.reason, updated_at = now()
         WHERE wallet_transactions.status IN ('pending', 'failed')
         RETURNING id
     ), webhook AS (
         INSERT INTO rgs_webhooks (id, transaction_id, payload)
         SELECT $13, id, $14 FROM outcome
         ON CONFLICT (id) DO NOTHING
         RETURNING id
     )
     SELECT EXISTS (SELECT 1 FROM outcome), EXISTS (SELECT 1 FROM webhook)";

/// Records a final outcome, in one statement and one commit: the call's attempt (if any), the
/// transaction with its outcome (inserted whole, so it does not depend on the stage's early
/// row) and the webhook to send. The outcome only replaces `pending` or `failed`. Returns
/// whether it did, and whether the webhook is new.
pub async fn record_outcome(
    db: &PgPool,
    command: &OperatorCommand,
    outcome: &Outcome,
    webhook: &RgsWebhook,
    attempt: Option<&Attempt>,
    trace_id: Option<String>,
) -> sqlx::Result<(bool, bool)> {
    static WITH_ATTEMPT: LazyLock<String> =
        LazyLock::new(|| format!("WITH {}, {OUTCOME}", attempts::cte(15)));
    static WITHOUT_ATTEMPT: LazyLock<String> = LazyLock::new(|| format!("WITH {OUTCOME}"));
    let sql = match attempt {
        Some(_) => WITH_ATTEMPT.as_str(),
        None => WITHOUT_ATTEMPT.as_str(),
    };
    let query = sqlx::query_as(sql)
        .bind(command.transaction_id)
        .bind(command.kind.as_str())
        .bind(command.player_id.as_str())
        .bind(command.amount.minor())
        .bind(command.currency.code())
        .bind(&command.round_id)
        .bind(&command.game_id)
        .bind(outcome.status.as_str())
        .bind(outcome.balance)
        .bind(&outcome.operator_transaction_id)
        .bind(&outcome.reason)
        .bind(trace_id)
        .bind(webhook.id)
        .bind(sqlx::types::Json(webhook));
    let query = match attempt {
        Some(attempt) => crate::bind_attempt!(query, attempt),
        None => query,
    };
    query.fetch_one(db).await
}

/// The final outcome recorded for transaction `id`; `None` while it is still pending.
pub async fn recorded_outcome(db: &PgPool, id: Uuid) -> sqlx::Result<Option<Outcome>> {
    let (status, balance, operator_transaction_id, reason): (
        String,
        Option<i64>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT status, balance_minor, operator_transaction_id, reason
         FROM wallet_transactions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await?;
    Ok(Status::parse(&status)
        .filter(|status| *status != Status::Pending)
        .map(|status| Outcome {
            transaction_id: id,
            status,
            balance,
            operator_transaction_id,
            reason,
        }))
}

/// Records `webhook` unless it is; returns whether it still has to be sent.
pub async fn webhook_pending(db: &PgPool, webhook: &RgsWebhook) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "WITH inserted AS (
             INSERT INTO rgs_webhooks (id, transaction_id, payload) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING
             RETURNING status)
         SELECT status = 'pending' FROM inserted
         UNION ALL
         SELECT status = 'pending' FROM rgs_webhooks WHERE id = $1
         LIMIT 1",
    )
    .bind(webhook.id)
    .bind(webhook.transaction_id)
    .bind(sqlx::types::Json(webhook))
    .fetch_one(db)
    .await
}

pub async fn webhook_delivered(db: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let delivered: Option<bool> =
        sqlx::query_scalar("SELECT status = 'delivered' FROM rgs_webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(delivered == Some(true))
}

/// One delivery attempt of a webhook and the webhook's new state, in one statement.
pub async fn record_webhook_attempt(
    db: &PgPool,
    id: Uuid,
    delivered: bool,
    attempt: &Attempt,
) -> sqlx::Result<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {}
             UPDATE rgs_webhooks
             SET attempts = attempts + 1,
                 last_error = $2,
                 status = CASE WHEN $3 THEN 'delivered' ELSE status END,
                 delivered_at = CASE WHEN $3 THEN now() ELSE delivered_at END,
                 updated_at = now()
             WHERE id = $1",
            attempts::cte(4)
        )
    });
    let query = sqlx::query(SQL.as_str())
        .bind(id)
        .bind(&attempt.error)
        .bind(delivered);
    crate::bind_attempt!(query, attempt).execute(db).await?;
    Ok(())
}

pub async fn webhook_dead_lettered(db: &PgPool, id: Uuid, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE rgs_webhooks SET status = 'dead_lettered', last_error = $2, updated_at = now()
         WHERE id = $1 AND status <> 'delivered'",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}
