//! The partners' lists, mirrored in `wallet_reconciliation`: each refresh reads what each
//! partner listed since its stored cursor, a page at a time, and folds it into one row per
//! transaction id with both sides and their comparison.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};

use super::compare::{OperatorEntry, OperatorSide, RgsEntry, RgsSide, Row, classify};

/// Serialises refreshes across processes (`pg_advisory_xact_lock`); "ihubrecn".
const LOCK_KEY: i64 = 0x6968_7562_7265_636e;
/// How long a refresh waits for another process's before its caller is told to retry.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Rows reclassified per statement after a partner's list was read again from the start.
const RECLASSIFY_BATCH: i64 = 5000;

/// Where the partners list what they saw.
#[derive(Clone, Debug)]
pub struct Partners {
    /// The RGS's list of webhooks (`GET` on its webhook URL).
    pub rgs_url: String,
    /// The operator's list of transactions (`GET /v2/transactions`).
    pub operator_url: String,
    /// Entries asked for per request.
    pub page_size: usize,
}

/// One partner's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Rgs,
    Operator,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Rgs => "rgs",
            Side::Operator => "operator",
        }
    }
}

/// What a refresh read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Entries read from the RGS and from the operator.
    pub rgs_entries: u64,
    pub operator_entries: u64,
    /// Requests made to each.
    pub rgs_requests: u64,
    pub operator_requests: u64,
    /// Partners whose list was read again from the start (cursor expired, or no paging).
    pub reread: Vec<&'static str>,
}

/// Why a refresh failed: a partner (502 to the caller) or our database (503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshError {
    Partner(String),
    Store(String),
}

impl From<sqlx::Error> for RefreshError {
    fn from(err: sqlx::Error) -> Self {
        RefreshError::Store(format!("the reconciliation mirror: {err}"))
    }
}

/// A page of a partner's list. A partner that does not page (no `next_cursor`) answers its
/// whole list: it is read whole each time.
#[derive(Deserialize)]
struct Listing<T> {
    #[serde(alias = "webhooks", alias = "transactions")]
    entries: Vec<T>,
    next_cursor: Option<String>,
    #[serde(default)]
    has_more: bool,
}

enum Fetched<T> {
    Page(Listing<T>),
    /// 410: the cursor no longer points into the list (it changed other than by appending,
    /// or the partner restarted); read it again from the start.
    Expired,
}

async fn fetch<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Fetched<T>, RefreshError> {
    let partner = |err: anyhow::Error| RefreshError::Partner(format!("{err:#}"));
    let mut page_url = reqwest::Url::parse(url)
        .with_context(|| format!("{url} is not a URL"))
        .map_err(partner)?;
    {
        let mut query = page_url.query_pairs_mut();
        if let Some(cursor) = cursor {
            query.append_pair("since", cursor);
        }
        query.append_pair("limit", &limit.to_string());
    }
    let response = http
        .get(page_url)
        .send()
        .await
        .with_context(|| format!("{url} not reachable"))
        .map_err(partner)?;
    if response.status() == StatusCode::GONE && cursor.is_some() {
        return Ok(Fetched::Expired);
    }
    let listing = response
        .error_for_status()
        .with_context(|| format!("{url} refused"))
        .map_err(partner)?
        .json::<Listing<T>>()
        .await
        .with_context(|| format!("{url} answered something that is not its list"))
        .map_err(partner)?;
    Ok(Fetched::Page(listing))
}

/// Text from a partner as Postgres can store it (it refuses NUL).
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Brings the mirror up to date with both partners, in one transaction under a lock that
/// other processes' refreshes wait for: readers see the mirror before or after, never half.
pub async fn refresh(
    db: &PgPool,
    http: &reqwest::Client,
    partners: &Partners,
) -> Result<Refreshed, RefreshError> {
    let started = Instant::now();
    let mut tx = db.begin().await?;
    // Another process's refresh holds the lock: wait for it (then this one reads only what
    // came after), but not forever.
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", LOCK_WAIT.as_millis()))
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let mut refreshed = Refreshed::default();
    sync::<RgsEntry>(&mut tx, http, partners, Side::Rgs, &mut refreshed).await?;
    sync::<OperatorEntry>(&mut tx, http, partners, Side::Operator, &mut refreshed).await?;
    if !refreshed.reread.is_empty() {
        reclassify_pending(&mut tx).await?;
    }
    tx.commit().await?;
    tracing::info!(
        rgs_entries = refreshed.rgs_entries,
        operator_entries = refreshed.operator_entries,
        rgs_requests = refreshed.rgs_requests,
        operator_requests = refreshed.operator_requests,
        reread = ?refreshed.reread,
        ms = started.elapsed().as_millis() as u64,
        "reconciliation mirror refreshed"
    );
    Ok(refreshed)
}

/// What the mirror does with a page of each partner's entries.
trait Entry: DeserializeOwned + Send + 'static {
    async fn apply(tx: &mut PgConnection, entries: &[Self]) -> sqlx::Result<()>;
}

impl Entry for RgsEntry {
    async fn apply(tx: &mut PgConnection, entries: &[Self]) -> sqlx::Result<()> {
        apply_rgs(tx, entries).await
    }
}

impl Entry for OperatorEntry {
    async fn apply(tx: &mut PgConnection, entries: &[Self]) -> sqlx::Result<()> {
        apply_operator(tx, entries).await
    }
}

/// Reads one partner's list from its cursor to its end, a page at a time; the next page is
/// fetched while the current one is written. A cursor the partner no longer knows (410) starts
/// the list over, once per refresh: a list that keeps changing while it is read fails the
/// refresh (502), and the next one starts over again.
async fn sync<T: Entry>(
    tx: &mut PgConnection,
    http: &reqwest::Client,
    partners: &Partners,
    side: Side,
    refreshed: &mut Refreshed,
) -> Result<(), RefreshError> {
    let url = match side {
        Side::Rgs => &partners.rgs_url,
        Side::Operator => &partners.operator_url,
    };
    let limit = partners.page_size.max(1);
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT cursor FROM wallet_reconciliation_cursors WHERE partner = $1",
    )
    .bind(side.name())
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let (mut requests, mut entries, mut reread, mut first) = (1u64, 0u64, false, true);
    let mut fetched = fetch::<T>(http, url, stored.as_deref(), limit).await?;
    // Where the list was read up to.
    let cursor = loop {
        let mut page = match fetched {
            Fetched::Page(page) => page,
            Fetched::Expired if !reread => {
                // What was mirrored of this side is replaced by the list read from the start.
                (reread, first, entries) = (true, true, 0);
                forget_side(tx, side).await?;
                requests += 1;
                fetched = fetch::<T>(http, url, None, limit).await?;
                continue;
            }
            Fetched::Expired => {
                return Err(RefreshError::Partner(format!(
                    "{url} changed its list while it was read; retry"
                )));
            }
        };
        if first && page.next_cursor.is_none() && !reread {
            // A partner that does not page answered its whole list: it replaces this side.
            reread = true;
            forget_side(tx, side).await?;
        }
        first = false;
        entries += page.entries.len() as u64;
        let more = page.has_more && page.next_cursor.is_some() && !page.entries.is_empty();
        if !more {
            T::apply(tx, &page.entries).await?;
            break page.next_cursor.take();
        }
        requests += 1;
        let (applied, next) = futures::join!(
            T::apply(tx, &page.entries),
            fetch::<T>(http, url, page.next_cursor.as_deref(), limit)
        );
        applied?;
        fetched = next?;
    };
    sqlx::query(
        "INSERT INTO wallet_reconciliation_cursors (partner, cursor, entries, refreshed_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (partner) DO UPDATE
         SET cursor = EXCLUDED.cursor,
             entries = CASE WHEN $4 THEN EXCLUDED.entries
                            ELSE wallet_reconciliation_cursors.entries + EXCLUDED.entries END,
             refreshed_at = now()",
    )
    .bind(side.name())
    .bind(&cursor)
    .bind(entries as i64)
    .bind(reread)
    .execute(&mut *tx)
    .await?;
    match side {
        Side::Rgs => {
            refreshed.rgs_entries = entries;
            refreshed.rgs_requests = requests;
        }
        Side::Operator => {
            refreshed.operator_entries = entries;
            refreshed.operator_requests = requests;
        }
    }
    if reread {
        refreshed.reread.push(side.name());
    }
    Ok(())
}

/// A row of the mirror.
#[derive(sqlx::FromRow)]
pub struct Stored {
    pub transaction_id: String,
    rgs_kind: Option<String>,
    rgs_status: Option<String>,
    rgs_amount_minor: Option<i64>,
    rgs_currency: Option<String>,
    operator_transaction_id: Option<String>,
    operator_operation: Option<String>,
    operator_amount_minor: Option<i64>,
    operator_currency: Option<String>,
    result: String,
}

/// The columns of [`Stored`], in a `SELECT` or `RETURNING`.
pub const STORED: &str = "transaction_id, rgs_kind, rgs_status, rgs_amount_minor, rgs_currency,
     operator_transaction_id, operator_operation, operator_amount_minor, operator_currency, result";

impl Stored {
    fn rgs(&self) -> Option<RgsSide> {
        Some(RgsSide {
            kind: self.rgs_kind.clone()?,
            status: self.rgs_status.clone()?,
            amount_minor: self.rgs_amount_minor?,
            currency: self.rgs_currency.clone()?,
        })
    }

    fn operator(&self) -> Option<OperatorSide> {
        Some(OperatorSide {
            transaction_id: self.operator_transaction_id.clone()?,
            operation: self.operator_operation.clone().unwrap_or_default(),
            amount_minor: self.operator_amount_minor,
            currency: self.operator_currency.clone().unwrap_or_default(),
        })
    }

    fn classify(&self) -> &'static str {
        classify(self.rgs().as_ref(), self.operator().as_ref())
    }

    pub fn into_row(self) -> Row {
        let (rgs, operator) = (self.rgs(), self.operator());
        Row::new(self.transaction_id, rgs, operator, &self.result)
    }
}

/// Writes the comparison of rows whose sides changed, where it changed.
async fn reclassify(tx: &mut PgConnection, rows: &[Stored]) -> sqlx::Result<()> {
    let (ids, results): (Vec<&str>, Vec<&str>) = rows
        .iter()
        .filter_map(|row| {
            let result = row.classify();
            (result != row.result).then_some((row.transaction_id.as_str(), result))
        })
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE wallet_reconciliation AS t SET result = u.result
         FROM unnest($1::text[], $2::text[]) AS u (id, result)
         WHERE t.transaction_id = u.id",
    )
    .bind(ids)
    .bind(results)
    .execute(tx)
    .await?;
    Ok(())
}

/// Keeps the last of entries with the same key (or the first), in their order.
fn dedup_by<T>(entries: &[T], key: impl Fn(&T) -> &str, keep_last: bool) -> Vec<&T> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    let mut kept: Vec<Option<&T>> = Vec::with_capacity(entries.len());
    for entry in entries {
        match at.get(key(entry)) {
            Some(&i) if keep_last => kept[i] = Some(entry),
            Some(_) => {}
            None => {
                at.insert(key(entry), kept.len());
                kept.push(Some(entry));
            }
        }
    }
    kept.into_iter().flatten().collect()
}

/// A page of RGS webhooks: each is now the RGS's state of its transaction (the latest wins).
async fn apply_rgs(tx: &mut PgConnection, entries: &[RgsEntry]) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let latest = dedup_by(entries, |e| &e.transaction_id, true);
    let mut ids = Vec::with_capacity(latest.len());
    let mut kinds = Vec::with_capacity(latest.len());
    let mut statuses = Vec::with_capacity(latest.len());
    let mut amounts = Vec::with_capacity(latest.len());
    let mut currencies = Vec::with_capacity(latest.len());
    let mut results = Vec::with_capacity(latest.len());
    for entry in latest {
        ids.push(storable(&entry.transaction_id));
        kinds.push(storable(&entry.kind));
        statuses.push(storable(&entry.status));
        amounts.push(entry.amount);
        currencies.push(storable(&entry.currency));
        // What a new row compares to: nothing at the operator yet.
        results.push(classify(Some(&RgsSide::from(entry)), None));
    }
    let changed: Vec<Stored> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO wallet_reconciliation AS t
             (transaction_id, rgs_kind, rgs_status, rgs_amount_minor, rgs_currency, result)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                              $6::text[])
         ON CONFLICT (transaction_id) DO UPDATE
         SET rgs_kind = EXCLUDED.rgs_kind, rgs_status = EXCLUDED.rgs_status,
             rgs_amount_minor = EXCLUDED.rgs_amount_minor, rgs_currency = EXCLUDED.rgs_currency
         RETURNING {STORED}"
    )))
    .bind(ids)
    .bind(kinds)
    .bind(statuses)
    .bind(amounts)
    .bind(currencies)
    .bind(results)
    .fetch_all(&mut *tx)
    .await?;
    reclassify(tx, &changed).await
}

/// A page of operator transactions: the first booking listed for an id is the operator's.
async fn apply_operator(tx: &mut PgConnection, entries: &[OperatorEntry]) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let first = dedup_by(entries, |e| &e.external_transaction_id, false);
    let mut ids = Vec::with_capacity(first.len());
    let mut operator_ids = Vec::with_capacity(first.len());
    let mut operations = Vec::with_capacity(first.len());
    let mut amounts = Vec::with_capacity(first.len());
    let mut currencies = Vec::with_capacity(first.len());
    let mut results = Vec::with_capacity(first.len());
    for entry in first {
        let side = OperatorSide::from(entry);
        results.push(classify(None, Some(&side)));
        ids.push(storable(&entry.external_transaction_id));
        operator_ids.push(storable(&side.transaction_id));
        operations.push(storable(&side.operation));
        amounts.push(side.amount_minor);
        currencies.push(storable(&side.currency));
    }
    // Rows that already have a booking keep it (and are not returned).
    let changed: Vec<Stored> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO wallet_reconciliation AS t
             (transaction_id, operator_transaction_id, operator_operation, operator_amount_minor,
              operator_currency, result)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                              $6::text[])
         ON CONFLICT (transaction_id) DO UPDATE
         SET operator_transaction_id = EXCLUDED.operator_transaction_id,
             operator_operation = EXCLUDED.operator_operation,
             operator_amount_minor = EXCLUDED.operator_amount_minor,
             operator_currency = EXCLUDED.operator_currency
         WHERE t.operator_transaction_id IS NULL
         RETURNING {STORED}"
    )))
    .bind(ids)
    .bind(operator_ids)
    .bind(operations)
    .bind(amounts)
    .bind(currencies)
    .bind(results)
    .fetch_all(&mut *tx)
    .await?;
    reclassify(tx, &changed).await
}

/// Empties one side of the mirror before its partner's list is read again from the start.
/// Rows keeping the other side are marked `pending` until [`reclassify_pending`].
async fn forget_side(tx: &mut PgConnection, side: Side) -> sqlx::Result<()> {
    let (clear, gone) = match side {
        Side::Rgs => (
            "UPDATE wallet_reconciliation
             SET rgs_kind = NULL, rgs_status = NULL, rgs_amount_minor = NULL,
                 rgs_currency = NULL, result = 'pending'
             WHERE rgs_status IS NOT NULL",
            "DELETE FROM wallet_reconciliation
             WHERE rgs_status IS NULL AND operator_transaction_id IS NULL",
        ),
        Side::Operator => (
            "UPDATE wallet_reconciliation
             SET operator_transaction_id = NULL, operator_operation = NULL,
                 operator_amount_minor = NULL, operator_currency = NULL, result = 'pending'
             WHERE operator_transaction_id IS NOT NULL",
            "DELETE FROM wallet_reconciliation
             WHERE rgs_status IS NULL AND operator_transaction_id IS NULL",
        ),
    };
    sqlx::query(clear).execute(&mut *tx).await?;
    sqlx::query(gone).execute(&mut *tx).await?;
    Ok(())
}

/// Compares every row left `pending` by [`forget_side`], a batch at a time.
async fn reclassify_pending(tx: &mut PgConnection) -> sqlx::Result<()> {
    loop {
        let pending: Vec<Stored> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {STORED} FROM wallet_reconciliation
             WHERE result = 'pending' ORDER BY transaction_id LIMIT $1"
        )))
        .bind(RECLASSIFY_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            return Ok(());
        }
        reclassify(tx, &pending).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_the_first_or_the_last_in_order() {
        let entries = ["a1", "b1", "a2", "c1", "b2"];
        let last: Vec<&str> = dedup_by(&entries, |e| &e[..1], true)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(last, ["a2", "b2", "c1"]);
        let first: Vec<&str> = dedup_by(&entries, |e| &e[..1], false)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(first, ["a1", "b1", "c1"]);
    }

    #[test]
    fn a_listing_reads_either_partners_key() {
        let rgs: Listing<serde_json::Value> =
            serde_json::from_str(r#"{"webhooks":[{}],"next_cursor":"x","has_more":true}"#)
                .unwrap();
        assert_eq!(
            (rgs.entries.len(), rgs.next_cursor.as_deref(), rgs.has_more),
            (1, Some("x"), true)
        );
        let whole: Listing<serde_json::Value> =
            serde_json::from_str(r#"{"transactions":[]}"#).unwrap();
        assert_eq!((whole.next_cursor, whole.has_more), (None, false));
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
    }
}
