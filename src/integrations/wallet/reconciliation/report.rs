//! The report, read from the mirror in one snapshot: the mismatch count first (for the
//! header), then the rows in transaction id order, a page at a time, as CSV chunks.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::compare::{Row, csv_header, write_rows};
use super::mirror::{STORED, Stored};

/// Rows read (and CSV lines written) per chunk of the body.
const PAGE: i64 = 2000;

/// A report ready to stream.
pub struct Report {
    /// Rows whose result is not `match`, counted in the snapshot the rows are read from: it
    /// always equals the mismatches of the body.
    pub mismatches: i64,
    /// The CSV: the header line, then one chunk per page of rows. An error ends it early (the
    /// caller sees a broken transfer, never a short report that looks whole).
    pub body: BoxStream<'static, anyhow::Result<Bytes>>,
}

struct Reading {
    tx: Transaction<'static, Postgres>,
    after: Option<String>,
    /// Held until the body is read or dropped: bounds the reports read at once.
    _permit: Option<OwnedSemaphorePermit>,
}

enum Step {
    Header(Reading),
    Rows(Reading),
    Done,
}

/// Opens a snapshot of the mirror and counts its mismatches; the rows are read as the body is.
pub async fn open(db: &PgPool, permit: Option<OwnedSemaphorePermit>) -> anyhow::Result<Report> {
    let mut tx = db
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mismatches: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wallet_reconciliation WHERE result <> 'match'")
            .fetch_one(&mut *tx)
            .await?;
    let reading = Reading {
        tx,
        after: None,
        _permit: permit,
    };
    let body = futures::stream::unfold(Step::Header(reading), |step| async move {
        match step {
            Step::Header(reading) => Some((Ok(Bytes::from(csv_header())), Step::Rows(reading))),
            Step::Rows(mut reading) => match next_page(&mut reading).await {
                Ok(Some(chunk)) => Some((Ok(chunk), Step::Rows(reading))),
                Ok(None) => {
                    let _ = reading.tx.commit().await;
                    None
                }
                Err(err) => Some((Err(err), Step::Done)),
            },
            Step::Done => None,
        }
    })
    .boxed();
    Ok(Report { mismatches, body })
}

/// The next page of rows after the last one read, as CSV; `None` after the last.
async fn next_page(reading: &mut Reading) -> anyhow::Result<Option<Bytes>> {
    let page: Vec<Stored> = match &reading.after {
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {STORED} FROM wallet_reconciliation ORDER BY transaction_id LIMIT $1"
            )))
            .bind(PAGE)
            .fetch_all(&mut *reading.tx)
            .await?
        }
        Some(after) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {STORED} FROM wallet_reconciliation WHERE transaction_id > $1
                 ORDER BY transaction_id LIMIT $2"
            )))
            .bind(after)
            .bind(PAGE)
            .fetch_all(&mut *reading.tx)
            .await?
        }
    };
    let Some(last) = page.last() else {
        return Ok(None);
    };
    reading.after = Some(last.transaction_id.clone());
    let rows: Vec<Row> = page.into_iter().map(Stored::into_row).collect();
    let mut chunk = Vec::with_capacity(rows.len() * 96);
    write_rows(&mut chunk, &rows)?;
    Ok(Some(Bytes::from(chunk)))
}
