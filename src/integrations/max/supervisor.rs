//! Telling the supervisor: a failed adapter operation is recorded in
//! `max_supervisor_notices`, and the supervisor gets a signed POST (`X-Supervisor-Signature:
//! <hex HMAC-SHA256(SUPERVISOR_WEBHOOK_SECRET, raw body)>`) at most once per adapter per
//! [`Supervisor::window`] (5 minutes for MAX) while an outage lasts. Processes
//! decide one at a time per adapter (a transaction-scoped advisory lock), so two processes
//! never both notify for the same outage.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::config::Secret;
use crate::signatures::body_signature;

pub const SIGNATURE_HEADER: &str = "x-supervisor-signature";

pub struct Supervisor {
    pub url: String,
    pub secret: Secret,
    pub window: Duration,
}

/// What became of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Sent; the supervisor answered this status (None: no answer).
    Sent(Option<u16>),
    /// Recorded only: the supervisor heard of this adapter's outage within the window.
    Suppressed,
}

impl Supervisor {
    /// Records the failure of `operation` on `adapter` and tells the supervisor unless it was
    /// told of this adapter within the window.
    pub async fn failed(
        &self,
        db: &PgPool,
        http: &reqwest::Client,
        adapter: &str,
        operation: &str,
        error: &str,
    ) -> anyhow::Result<Notice> {
        let mut tx = db.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('max-supervisor:' || $1))")
            .bind(adapter)
            .execute(&mut *tx)
            .await?;
        let window_secs = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        let (id, notified): (i64, bool) = sqlx::query_as(
            "INSERT INTO max_supervisor_notices (adapter, operation, error, notified)
             SELECT $1, $2, $3, NOT EXISTS (
                 SELECT 1 FROM max_supervisor_notices
                 WHERE adapter = $1 AND notified
                   AND created_at > now() - make_interval(secs => $4))
             RETURNING id, notified",
        )
        .bind(adapter)
        .bind(operation)
        .bind(error)
        .bind(window_secs as f64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if !notified {
            return Ok(Notice::Suppressed);
        }
        let body = json!({
            "adapter": adapter,
            "operation": operation,
            "error": error,
            "notice_id": id,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .to_string();
        let sent = http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, body_signature(&self.secret, body.as_bytes()))
            .body(body)
            .send()
            .await;
        let status = match sent {
            Ok(response) => Some(response.status().as_u16()),
            Err(err) => {
                tracing::warn!(%err, adapter, "the supervisor did not answer");
                None
            }
        };
        sqlx::query("UPDATE max_supervisor_notices SET status_code = $2 WHERE id = $1")
            .bind(id)
            .bind(status.map(i32::from))
            .execute(db)
            .await?;
        Ok(Notice::Sent(status))
    }
}
