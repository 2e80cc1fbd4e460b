//! `delivery_attempts`: every call to a partner, by every delivery target, append-only.
//!
//! There is one insert. It runs as a statement of its own ([`record`]), or as the first part of
//! a statement that also moves the business record ([`cte`], bound with
//! [`bind_attempt!`](crate::bind_attempt)), so that an attempt and what it changed commit
//! together, in one round trip.

use sqlx::PgExecutor;

use crate::http_client::Response;

/// One call to a partner, as the log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The delivery target, e.g. `operator`, `ticketing`.
    pub target: &'static str,
    /// What the call was about (a transaction or order id).
    pub subject_id: String,
    /// 1 for the first delivery of the message.
    pub attempt: i32,
    pub status_code: Option<i32>,
    /// Nothing for a success, else what went wrong.
    pub error: Option<String>,
    pub duration_ms: i32,
}

impl Attempt {
    pub fn of(
        target: &'static str,
        subject_id: impl ToString,
        attempt: u64,
        response: &Response,
    ) -> Self {
        Self {
            target,
            subject_id: subject_id.to_string(),
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            status_code: response.status.map(i32::from),
            error: response.attempt_error(),
            duration_ms: i32::try_from(response.duration.as_millis()).unwrap_or(i32::MAX),
        }
    }
}

/// The insert, its six values at `$first` … `$first + 5` in [`bind_attempt!`](crate::bind_attempt)'s order.
fn insert(first: usize) -> String {
    let values: Vec<String> = (first..first + 6).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO delivery_attempts \
         (target, subject_id, attempt, status_code, error, duration_ms) VALUES ({})",
        values.join(", ")
    )
}

/// `attempt AS (INSERT …)`, for the `WITH` clause of a statement whose own parameters are
/// `$1` … `$(first - 1)`: bind the attempt after them with [`bind_attempt!`](crate::bind_attempt).
pub fn cte(first: usize) -> String {
    format!("attempt AS ({})", insert(first))
}

/// Binds an [`Attempt`]'s six values, in the order [`cte`] expects them, to a query.
#[macro_export]
macro_rules! bind_attempt {
    ($query:expr, $attempt:expr) => {{
        let attempt: &$crate::db::attempts::Attempt = $attempt;
        $query
            .bind(attempt.target)
            .bind(&attempt.subject_id)
            .bind(attempt.attempt)
            .bind(attempt.status_code)
            .bind(&attempt.error)
            .bind(attempt.duration_ms)
    }};
}

/// Appends `attempt` on its own.
pub async fn record(db: impl PgExecutor<'_>, attempt: &Attempt) -> sqlx::Result<()> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert(1));
    crate::bind_attempt!(sqlx::query(SQL.as_str()), attempt)
        .execute(db)
        .await?;
    Ok(())
}

/// Many attempts as columns, for one insert of them all ([`many_cte`], bound with
/// [`bind_attempts!`](crate::bind_attempts)).
#[derive(Debug, Default)]
pub struct Columns {
    pub target: Vec<&'static str>,
    pub subject_id: Vec<String>,
    pub attempt: Vec<i32>,
    pub status_code: Vec<Option<i32>>,
    pub error: Vec<Option<String>>,
    pub duration_ms: Vec<i32>,
}

impl Columns {
    pub fn push(&mut self, attempt: &Attempt) {
        self.target.push(attempt.target);
        self.subject_id.push(attempt.subject_id.clone());
        self.attempt.push(attempt.attempt);
        self.status_code.push(attempt.status_code);
        self.error.push(attempt.error.clone());
        self.duration_ms.push(attempt.duration_ms);
    }
}

/// `attempt AS (INSERT … SELECT * FROM unnest(…))`: [`cte`] for many attempts, their six
/// arrays at `$first` … `$first + 5`.
pub fn many_cte(first: usize) -> String {
    let types = ["text", "text", "int", "int", "text", "int"];
    let arrays: Vec<String> = (first..)
        .zip(types)
        .map(|(n, ty)| format!("${n}::{ty}[]"))
        .collect();
    format!(
        "attempt AS (INSERT INTO delivery_attempts \
         (target, subject_id, attempt, status_code, error, duration_ms) \
         SELECT * FROM unnest({}))",
        arrays.join(", ")
    )
}

/// Binds [`Columns`], in the order [`many_cte`] expects them, to a query.
#[macro_export]
macro_rules! bind_attempts {
    ($query:expr, $columns:expr) => {{
        let columns: &$crate::db::attempts::Columns = $columns;
        $query
            .bind(&columns.target)
            .bind(&columns.subject_id)
            .bind(&columns.attempt)
            .bind(&columns.status_code)
            .bind(&columns.error)
            .bind(&columns.duration_ms)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_takes_its_values_where_it_is_told() {
        assert_eq!(
            cte(4),
            "attempt AS (INSERT INTO delivery_attempts \
             (target, subject_id, attempt, status_code, error, duration_ms) \
             VALUES ($4, $5, $6, $7, $8, $9))"
        );
    }

    #[test]
    fn many_attempts_are_one_insert_of_six_arrays() {
        assert_eq!(
            many_cte(7),
            "attempt AS (INSERT INTO delivery_attempts \
             (target, subject_id, attempt, status_code, error, duration_ms) \
             SELECT * FROM unnest($7::text[], $8::text[], $9::int[], $10::int[], \
             $11::text[], $12::int[]))"
        );
    }

    #[test]
    fn an_attempt_keeps_what_the_response_says() {
        let response = Response::not_sent("connection refused".into());
        let attempt = Attempt::of("rgs", 42, 3, &response);
        assert_eq!(
            attempt,
            Attempt {
                target: "rgs",
                subject_id: "42".into(),
                attempt: 3,
                status_code: None,
                error: Some("connection refused".into()),
                duration_ms: 0,
            }
        );
    }
}
