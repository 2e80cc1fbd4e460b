//! WaveGate's state in Postgres: partners, orders and their items, tickets, jobs, auth events,
//! and the reads of `GET /orders` and `/admin/orders`. Every write is keyed by a business id
//! with a unique constraint, so a redelivered message changes nothing twice.

use std::sync::LazyLock;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::domain::{
    AuthRefused, OrderAccepted, PartnerId, PartnerSeed, PipelineStatus, Ticket, token_hash,
};
use crate::config::Secret;
use crate::db::attempts::{self, Attempt};

/// The two jobs of an order, by delivery target (also the `delivery_attempts.target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Ticketing,
    OtaCallback,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Ticketing => "ticketing",
            Job::OtaCallback => "ota_callback",
        }
    }

    /// (the order's status while the job runs, when it is blocked, the statuses it may start
    /// from — a DLQ replay starts again from blocked).
    fn statuses(self) -> (PipelineStatus, PipelineStatus, [PipelineStatus; 3]) {
        use PipelineStatus::*;
        match self {
            Job::Ticketing => (
                TicketingProcessing,
                TicketingBlocked,
                [Accepted, TicketingProcessing, TicketingBlocked],
            ),
            Job::OtaCallback => (
                OtaCallbackPending,
                OtaCallbackBlocked,
                [Ticketed, OtaCallbackPending, OtaCallbackBlocked],
            ),
        }
    }
}

/// A partner's stored credentials.
#[derive(sqlx::FromRow)]
pub struct PartnerRow {
    pub token_hash: String,
    pub allowlist_cidrs: Vec<String>,
}

pub async fn partner(db: &PgPool, id: &PartnerId) -> sqlx::Result<Option<PartnerRow>> {
    sqlx::query_as("SELECT token_hash, allowlist_cidrs FROM partners WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(db)
        .await
}

/// Creates or updates the partners of `PARTNERS_JSON`; tokens are stored as keyed hashes.
/// Returns the ids seeded.
pub async fn seed_partners(
    pool: &PgPool,
    partners_json: &str,
    key: &Secret,
) -> anyhow::Result<Vec<String>> {
    let partners: Vec<PartnerSeed> = serde_json::from_str(partners_json).context(
        "PARTNERS_JSON is not a list like \
         [{\"id\":\"demo\",\"name\":\"Demo\",\"token\":\"…\",\"allowlist_cidrs\":[\"0.0.0.0/0\"]}]",
    )?;
    let mut tx = pool.begin().await?;
    let mut seeded = Vec::new();
    for partner in partners {
        if partner.token.expose().len() < 8 {
            anyhow::bail!(
                "PARTNERS_JSON: partner {} has a token shorter than 8 characters",
                partner.id
            );
        }
        let cidrs = partner
            .allowlist_cidrs
            .iter()
            .map(|raw| {
                crate::config::parse_net(raw)
                    .map(|net| net.to_string())
                    .with_context(|| format!("PARTNERS_JSON: partner {}", partner.id))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        sqlx::query(
            "INSERT INTO partners (id, name, token_hash, allowlist_cidrs) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET name = EXCLUDED.name, token_hash = EXCLUDED.token_hash,
                 allowlist_cidrs = EXCLUDED.allowlist_cidrs, updated_at = now()",
        )
        .bind(partner.id.as_str())
        .bind(&partner.name)
        .bind(token_hash(key, partner.token.expose()))
        .bind(&cidrs)
        .execute(&mut *tx)
        .await?;
        seeded.push(partner.id.to_string());
    }
    tx.commit().await?;
    Ok(seeded)
}

/// Records an accepted order with its items and its pending ticketing job. Returns whether
/// ticketing still has to be commanded (false once the job has moved on).
pub async fn record_order(pool: &PgPool, event: &OrderAccepted) -> sqlx::Result<bool> {
    let order = &event.order;
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (id, partner_id, external_order_id, callback_url, currency,
             total_minor, buyer, raw_payload, trace_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT DO NOTHING",
    )
    .bind(order.id)
    .bind(order.partner_id.as_str())
    .bind(&order.external_order_id)
    .bind(&order.callback_url)
    .bind(order.currency.code())
    .bind(order.total_minor)
    .bind(order.buyer.as_ref().map(sqlx::types::Json))
    .bind(sqlx::types::Json(&event.raw_payload))
    .bind(order.trace_id)
    .bind(order.created_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        for (line_no, item) in order.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, qty, unit_price_minor, currency)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(order.id)
            .bind(line_no as i32 + 1)
            .bind(&item.sku)
            .bind(item.qty as i32)
            .bind(item.unit_price_minor)
            .bind(item.currency.code())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("INSERT INTO order_jobs (order_id, kind) VALUES ($1, 'ticketing')")
            .bind(order.id)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = &event.idempotency_key {
            sqlx::query(
                "INSERT INTO idempotency_keys (partner_id, idempotency_key, order_id)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(order.partner_id.as_str())
            .bind(key)
            .bind(order.id)
            .execute(&mut *tx)
            .await?;
        }
    }
    let pending: bool = sqlx::query_scalar(
        "SELECT status <> 'succeeded' FROM order_jobs WHERE order_id = $1 AND kind = 'ticketing'",
    )
    .bind(order.id)
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(false);
    tx.commit().await?;
    Ok(pending)
}

pub async fn record_auth_event(pool: &PgPool, event: &AuthRefused) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO auth_events (id, partner_id, reason, ip, user_agent, method, path, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(event.id)
    .bind(&event.partner_id)
    .bind(&event.reason)
    .bind(&event.ip)
    .bind(&event.user_agent)
    .bind(&event.method)
    .bind(&event.path)
    .bind(event.occurred_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves the order and its job to "in progress" before a call. Returns false when the job has
/// already succeeded (a redelivery or a replay after success): nothing is to be sent again.
pub async fn start_job(pool: &PgPool, order_id: Uuid, job: Job) -> sqlx::Result<bool> {
    let (running, _, from) = job.statuses();
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let started: Option<bool> = sqlx::query_scalar(
        "WITH job AS (
             INSERT INTO order_jobs (order_id, kind, status) VALUES ($1, $2, 'processing')
             ON CONFLICT (order_id, kind) DO UPDATE
             SET status = 'processing', updated_at = now()
             WHERE order_jobs.status <> 'succeeded'
             RETURNING 1
         ), moved AS (
             UPDATE orders SET pipeline_status = $3, blocked_reason = NULL, blocked_at = NULL,
                 updated_at = now()
             WHERE id = $1 AND pipeline_status = ANY($4) AND EXISTS (SELECT 1 FROM job)
         )
         SELECT EXISTS (SELECT 1 FROM job)",
    )
    .bind(order_id)
    .bind(job.as_str())
    .bind(running.as_str())
    .bind(&from)
    .fetch_optional(pool)
    .await?;
    Ok(started.unwrap_or(false))
}

/// Appends one call to the attempt log and keeps the job's last result, in one statement.
pub async fn record_attempt(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    job: Job,
    attempt: &Attempt,
) -> sqlx::Result<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {}
             UPDATE order_jobs
             SET attempts = attempts + 1, last_status_code = $3, last_error = $4,
                 updated_at = now()
             WHERE order_id = $1 AND kind = $2",
            attempts::cte(5)
        )
    });
    let query = sqlx::query(SQL.as_str())
        .bind(order_id)
        .bind(job.as_str())
        .bind(attempt.status_code)
        .bind(&attempt.error);
    crate::bind_attempt!(query, attempt).execute(db).await?;
    Ok(())
}

/// Ticketing succeeded: its tickets, the job done, the order `ticketed`, the callback job queued.
pub async fn ticketed(
    pool: &PgPool,
    order_id: Uuid,
    ticketing_order_id: Option<&str>,
    tickets: &[Ticket],
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for ticket in tickets {
        sqlx::query(
            "INSERT INTO tickets (code, order_id, sku, ticketing_order_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (code) DO NOTHING",
        )
        .bind(&ticket.code)
        .bind(order_id)
        .bind(&ticket.sku)
        .bind(ticketing_order_id)
        .execute(&mut *tx)
        .await?;
    }
    finish_job(&mut tx, order_id, Job::Ticketing, PipelineStatus::Ticketed).await?;
    sqlx::query(
        "INSERT INTO order_jobs (order_id, kind) VALUES ($1, 'ota_callback') ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The callback was delivered: the order is done.
pub async fn callback_delivered(pool: &PgPool, order_id: Uuid) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    finish_job(
        &mut tx,
        order_id,
        Job::OtaCallback,
        PipelineStatus::OtaCallbackDelivered,
    )
    .await?;
    tx.commit().await
}

async fn finish_job(
    tx: &mut sqlx::PgConnection,
    order_id: Uuid,
    job: Job,
    status: PipelineStatus,
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH job AS (
             UPDATE order_jobs SET status = 'succeeded', updated_at = now()
             WHERE order_id = $1 AND kind = $2
         )
         UPDATE orders SET pipeline_status = $3, blocked_reason = NULL, blocked_at = NULL,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(order_id)
    .bind(job.as_str())
    .bind(status.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The job will not succeed as it is (permanent answer, or out of attempts): the order is
/// blocked with the reason, unless the job has succeeded meanwhile.
pub async fn blocked(pool: &PgPool, order_id: Uuid, job: Job, reason: &str) -> sqlx::Result<()> {
    let (_, blocked, _) = job.statuses();
    sqlx::query(
        "WITH job AS (
             UPDATE order_jobs SET status = 'blocked', last_error = $3, updated_at = now()
             WHERE order_id = $1 AND kind = $2 AND status <> 'succeeded'
             RETURNING 1
         )
         UPDATE orders SET pipeline_status = $4, blocked_reason = $3, blocked_at = now(),
             updated_at = now()
         WHERE id = $1 AND EXISTS (SELECT 1 FROM job)",
    )
    .bind(order_id)
    .bind(job.as_str())
    .bind(reason)
    .bind(blocked.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// The tickets issued for an order.
pub async fn tickets(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Vec<Ticket>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT sku, code FROM tickets WHERE order_id = $1 ORDER BY created_at, code",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sku, code)| Ticket { sku, code })
        .collect())
}

/// An order as `GET /orders/{id}` shows it: items, tickets, and each job with its attempts.
/// With `partner`, only that partner's order is found.
pub async fn order_detail(
    pool: &PgPool,
    order_id: Uuid,
    partner: Option<&str>,
) -> anyhow::Result<Option<Value>> {
    let detail: Option<sqlx::types::Json<Value>> = sqlx::query_scalar(
        "SELECT json_build_object(
             'id', o.id, 'partner_id', o.partner_id, 'external_order_id', o.external_order_id,
             'trace_id', o.trace_id, 'status', o.pipeline_status,
             'blocked_reason', o.blocked_reason, 'blocked_at', o.blocked_at,
             'callback_url', o.callback_url, 'currency', o.currency,
             'total_minor', o.total_minor, 'buyer', o.buyer,
             'created_at', o.created_at, 'updated_at', o.updated_at,
             'items', (SELECT coalesce(json_agg(json_build_object(
                           'sku', i.sku, 'qty', i.qty, 'unit_price_minor', i.unit_price_minor,
                           'currency', i.currency) ORDER BY i.line_no), '[]')
                       FROM order_items i WHERE i.order_id = o.id),
             'tickets', (SELECT coalesce(json_agg(json_build_object('sku', t.sku, 'code', t.code)
                             ORDER BY t.created_at, t.code), '[]')
                         FROM tickets t WHERE t.order_id = o.id),
             'jobs', (SELECT coalesce(json_object_agg(j.kind, json_build_object(
                          'status', j.status, 'attempt_count', j.attempts,
                          'last_status_code', j.last_status_code, 'last_error', j.last_error,
                          'updated_at', j.updated_at,
                          'attempts', (SELECT coalesce(json_agg(json_build_object(
                                           'no', a.attempt, 'code', a.status_code,
                                           'error', a.error, 'duration_ms', a.duration_ms,
                                           'at', a.created_at) ORDER BY a.id), '[]')
                                       FROM delivery_attempts a
                                       WHERE a.target = j.kind AND a.subject_id = o.id::text))),
                          '{}')
                      FROM order_jobs j WHERE j.order_id = o.id))
         FROM orders o
         WHERE o.id = $1 AND ($2::text IS NULL OR o.partner_id = $2)",
    )
    .bind(order_id)
    .bind(partner)
    .fetch_optional(pool)
    .await
    .context("could not read the order")?;
    Ok(detail.map(|sqlx::types::Json(mut detail)| {
        let jobs = detail["jobs"].take();
        detail["ticketing_job"] = jobs.get("ticketing").cloned().unwrap_or(json!(null));
        detail["ota_callback_job"] = jobs.get("ota_callback").cloned().unwrap_or(json!(null));
        if let Some(map) = detail.as_object_mut() {
            map.remove("jobs");
        }
        detail
    }))
}

/// An order as the lists show it.
#[derive(Serialize, sqlx::FromRow)]
pub struct OrderSummary {
    pub id: Uuid,
    pub partner_id: String,
    pub external_order_id: String,
    pub trace_id: Uuid,
    pub status: String,
    pub blocked_reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const SUMMARY_COLUMNS: &str = "id, partner_id, external_order_id, trace_id, \
     pipeline_status AS status, blocked_reason, created_at, updated_at";

/// A partner's orders, newest first: `limit` of them older than `before` (a page cursor).
pub async fn partner_orders(
    db: &PgPool,
    partner: &PartnerId,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<OrderSummary>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {SUMMARY_COLUMNS} FROM orders
             WHERE partner_id = $1 AND ($2::uuid IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3"
        )
    });
    sqlx::query_as(SQL.as_str())
        .bind(partner.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// What `/admin/orders` filters on; every filter is optional.
#[derive(Debug, Default)]
pub struct AdminFilter {
    pub statuses: Option<Vec<&'static str>>,
    pub partner_id: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders in flight that have not moved for this long.
    pub stuck_secs: Option<u64>,
    pub limit: i64,
}

/// Every partner's orders matching `filter`, newest first.
pub async fn admin_orders(db: &PgPool, filter: AdminFilter) -> sqlx::Result<Vec<OrderSummary>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {SUMMARY_COLUMNS} FROM orders
             WHERE ($1::text[] IS NULL OR pipeline_status = ANY($1))
               AND ($2::text IS NULL OR partner_id = $2)
               AND ($3::timestamptz IS NULL OR created_at >= $3)
               AND ($4::float8 IS NULL OR (
                    pipeline_status IN ('accepted', 'ticketing_processing', 'ticketed',
                                        'ota_callback_pending')
                    AND updated_at < now() - make_interval(secs => $4)))
             ORDER BY id DESC LIMIT $5"
        )
    });
    sqlx::query_as(SQL.as_str())
        .bind(filter.statuses)
        .bind(filter.partner_id)
        .bind(filter.since)
        .bind(filter.stuck_secs.map(|s| s as f64))
        .bind(filter.limit)
        .fetch_all(db)
        .await
}
