//! WaveGate's state in Postgres: partners, orders and their items, tickets, jobs, auth events.
//! Every write is keyed by a business id with a unique constraint, so a redelivered message
//! changes nothing twice.

use anyhow::Context as _;
use serde_json::{Value, json};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::config::Secret;
use crate::domain::wavegate::{AuthRefused, OrderAccepted, PartnerSeed, PipelineStatus, Ticket};
use crate::http_client::Response;

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
        if partner.token.len() < 8 {
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
        .bind(crate::ingress::orders::token_hash(key, &partner.token))
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

/// Appends one call to the attempt log and keeps the job's last result.
pub async fn record_attempt(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    job: Job,
    attempt: u64,
    response: &Response,
) -> sqlx::Result<()> {
    let error = response.attempt_error();
    sqlx::query(
        "WITH attempt AS (
             INSERT INTO delivery_attempts
                 (target, subject_id, attempt, status_code, error, duration_ms)
             VALUES ($2, $1::text, $3, $4, $5, $6)
         )
         UPDATE order_jobs
         SET attempts = attempts + 1, last_status_code = $4, last_error = $5, updated_at = now()
         WHERE order_id = $1 AND kind = $2",
    )
    .bind(order_id)
    .bind(job.as_str())
    .bind(attempt as i32)
    .bind(response.status.map(i32::from))
    .bind(error)
    .bind(response.duration.as_millis() as i32)
    .execute(db)
    .await?;
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
