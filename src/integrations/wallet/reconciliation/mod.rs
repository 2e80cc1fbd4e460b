//! `GET /reconciliation_data`: compares what the RGS was told (`GET` on its webhook URL) with
//! what the operator booked (`GET /v2/transactions`), one CSV row per transaction id.
//!
//! It used to download both partners' whole lists on every call and build the report in
//! memory: megabytes per call, growing without end, one download per concurrent caller (under
//! 182 concurrent calls, 44 timed out). Now:
//!
//! * **A mirror, read incrementally.** Postgres keeps a read model of both lists
//!   (`wallet_reconciliation`, migration `0003_wallet_reconciliation.sql`): one row per
//!   transaction id with the RGS's latest webhook, the operator's first booking and their
//!   comparison, plus each partner's cursor (`wallet_reconciliation_cursors`). A refresh asks
//!   each partner only for what it listed since that cursor (`?since=<cursor>&limit=N`,
//!   `RECONCILIATION_PAGE_SIZE` entries a request, in the partner's append order), folds each
//!   page into the mirror and recomputes the comparison of the rows the page touched
//!   ([`mirror`]). A partner answering 410 Gone to a cursor has changed its list other than
//!   by appending (or restarted): that side is read again from the start, the way Google
//!   Calendar's sync tokens and Kubernetes' watches recover. A partner that does not page
//!   (its answer has no `next_cursor`) is read whole each time, as before.
//! * **On demand, single flight.** A report refreshes first, so it says what the partners say
//!   now. Refreshes run one at a time per process ([`flight`]): every caller that arrives
//!   while one runs is answered by the next, so a burst of callers costs at most two
//!   refreshes, whatever its size; a caller that hangs up cancels nothing. Across processes,
//!   a refresh runs in one Postgres transaction under an advisory lock, so a second ingress
//!   waits for the first's refresh and then reads only what came after it (and readers see the
//!   mirror before or after a refresh, never half of one).
//! * **Streamed, in bounded memory.** The report is read from the mirror in one
//!   `REPEATABLE READ` snapshot ([`report`]): first the number of rows that do not match
//!   (counted on a partial index, for the `X-Mismatch-Count` header: known before the body,
//!   and always equal to the mismatched rows of that body), then the rows in transaction id
//!   order (bytewise, `COLLATE "C"`), 2,000 at a time by keyset, each page one CSV chunk of
//!   the response body. The hub holds one page, whatever the size of the report: a report of
//!   1,000,000 rows streams with a peak RSS of 14 MiB (`ihub bench --scenario
//!   reconciliation`; README, "Reconciliation at scale"). At most half the connection pool
//!   streams reports at once; a caller that waits longer than 30 s for its turn gets 503 with
//!   `Retry-After`. A failure in the middle of the body breaks the transfer, so a cut report
//!   never looks whole.
//!
//! The ingress otherwise writes only to NATS. The mirror is not state of record but a cache of
//! what the partners list, rebuilt from them at will (emptying it costs one full re-read), so
//! the reasons for that rule (one commit point, idempotent redelivery) do not apply; and
//! refreshing on demand in the reader is what makes the report current when it is asked for,
//! which a periodic worker would not.
//!
//! Limits: the first read of long lists takes long (1,000,000 entries a partner: about a
//! minute), though it runs to its end whoever hangs up, and later calls read only what is new;
//! a refresh waits at most 60 s for another process's (then 503). The comparison is stored
//! when a row is written, so a change to the rules in [`compare`] reaches rows already mirrored
//! only once the mirror is emptied (`TRUNCATE wallet_reconciliation,
//! wallet_reconciliation_cursors`: the next report reads both lists again). A partner that
//! rewrites its list without expiring its cursors is not noticed: 410 is the contract.
//!
//! The columns, their meaning and the results (`match`, `missing_at_operator`,
//! `missing_at_rgs`, `amount_mismatch`, `type_mismatch`, `booked_but_not_completed`) are as
//! before; [`compare`] holds the rules.

pub mod bench;
pub mod compare;
pub mod flight;
pub mod mirror;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use super::config::RECONCILIATION_TOKEN;
use super::routes::WalletState;
use crate::ingress::{self, ApiError, Parent};
use flight::{Lost, SingleFlight};
use mirror::{Partners, RefreshError, Refreshed};
use report::Report;

/// How long a caller waits for its turn to stream a report.
const TURN_WAIT: Duration = Duration::from_secs(30);

/// The report's machinery: the mirror, its single-flight refresh, and the reports in flight.
pub struct Reconciler {
    db: PgPool,
    refresh: SingleFlight<Result<Refreshed, RefreshError>>,
    turns: Arc<Semaphore>,
}

impl Reconciler {
    /// Reads `partners` into the mirror in `db`; starts the refresh runner (a task that lives as
    /// long as this value).
    pub fn new(db: PgPool, http: reqwest::Client, partners: Partners) -> Arc<Self> {
        let turns = (db.options().get_max_connections() / 2).max(1) as usize;
        let refresh = {
            let (db, partners) = (db.clone(), Arc::new(partners));
            SingleFlight::new(move || {
                let (db, http, partners) = (db.clone(), http.clone(), partners.clone());
                async move { mirror::refresh(&db, &http, &partners).await }
            })
        };
        Arc::new(Self {
            db,
            refresh,
            turns: Arc::new(Semaphore::new(turns)),
        })
    }

    /// Brings the mirror up to date: a refresh that started after this call (shared with every
    /// caller that asked meanwhile).
    pub async fn refresh(&self) -> Result<Refreshed, RefreshError> {
        self.refresh
            .run()
            .await
            .unwrap_or_else(|Lost| Err(RefreshError::Store("the refresh ended early".into())))
    }

    /// Refreshes started so far in this process.
    pub fn refreshes(&self) -> u64 {
        self.refresh.runs()
    }

    /// Callers waiting for a refresh that has not started yet.
    pub fn waiting(&self) -> usize {
        self.refresh.queued()
    }

    /// The report as the mirror has it now (call [`Reconciler::refresh`] first), to stream.
    pub async fn report(&self) -> anyhow::Result<Report> {
        report::open(&self.db, None).await
    }

    async fn report_in_turn(&self) -> Result<Report, ApiError> {
        let permit = tokio::time::timeout(TURN_WAIT, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| {
                ApiError::unavailable(anyhow::anyhow!(
                    "no turn to stream a reconciliation report within {TURN_WAIT:?}"
                ))
            })?
            .map_err(|err| ApiError::internal(err.into()))?;
        report::open(&self.db, Some(permit))
            .await
            .map_err(ApiError::unavailable)
    }
}

/// Where the wallet's partners list what they saw, from its settings.
pub fn partners(app: &WalletState) -> anyhow::Result<Partners> {
    Ok(Partners {
        rgs_url: app.cfg.rgs_webhook_url.clone(),
        operator_url: format!("{}/v2/transactions", app.cfg.operator_url),
        page_size: app.hub.env().whole("RECONCILIATION_PAGE_SIZE", 2000)?.max(1) as usize,
    })
}

pub fn router(app: &WalletState) -> anyhow::Result<Router<WalletState>> {
    let reconciler = Reconciler::new(app.hub.db.clone(), app.hub.http.clone(), partners(app)?);
    Ok(Router::new().route(
        "/reconciliation_data",
        get(move |State(app): State<WalletState>, headers: HeaderMap| {
            let reconciler = reconciler.clone();
            async move { reconciliation(app, reconciler, headers).await }
        }),
    ))
}

async fn reconciliation(
    app: WalletState,
    reconciler: Arc<Reconciler>,
    headers: HeaderMap,
) -> Response {
    let span = crate::server_span!("GET", "/reconciliation_data");
    ingress::respond(span, Parent::Caller(&headers), async {
        ingress::bearer(&headers, &app.reconciliation_token, RECONCILIATION_TOKEN.name)?;
        reconciler.refresh().await.map_err(|err| match err {
            RefreshError::Partner(message) => {
                ApiError::bad_gateway(message.clone(), anyhow::anyhow!(message))
            }
            RefreshError::Store(message) => ApiError::unavailable(anyhow::anyhow!(message)),
        })?;
        let report = reconciler.report_in_turn().await?;
        Ok((
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"reconciliation.csv\""),
                ),
                (
                    header::HeaderName::from_static("x-mismatch-count"),
                    HeaderValue::from(report.mismatches),
                ),
            ],
            Body::from_stream(report.body),
        )
            .into_response())
    })
    .await
}
