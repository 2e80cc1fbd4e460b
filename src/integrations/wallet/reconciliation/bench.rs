//! `ihub bench --scenario reconciliation`: a report over a large mirror, in this process, with
//! its time and peak memory. Needs Postgres only (`DATABASE_URL`'s server; the bench works in
//! a scratch database it drops at the end) and no running hub.
//!
//! 1. Generate `--transactions` rows straight into the mirror (one `INSERT … SELECT`; about
//!    1 % of them differ), as a long-running hub would have it.
//! 2. Start both partner mocks on loopback, each listing `--increment` new entries, and run one
//!    refresh: the incremental read of what is new.
//! 3. Stream the report (what `GET /reconciliation_data` sends) into a counter, timing the
//!    first byte and the whole, with the process's peak RSS (`VmHWM`) reset before it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Reconciler;
use super::mirror::Partners;
use crate::config::Config;
use crate::integrations::wallet::mocks::operator::{self, OperatorMock, Transaction};
use crate::integrations::wallet::mocks::rgs::RgsMock;
use crate::integrations::wallet::mocks::{OPERATOR, RGS};

#[derive(clap::Args, Debug)]
pub struct ReconciliationArgs {
    /// With `--scenario reconciliation`: rows of the mirror the report reads.
    #[arg(long, default_value_t = 1_000_000)]
    pub transactions: u64,
    /// With `--scenario reconciliation`: new entries each partner lists, read by one
    /// incremental refresh before the report.
    #[arg(long, default_value_t = 10_000)]
    pub increment: u64,
}


/// The process's peak resident set (`VmHWM`) and current one (`VmRSS`), in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Starts the peak over from the current resident set (Linux: `5` to `clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

pub async fn run(cfg: &Config, args: &ReconciliationArgs, json: bool) -> anyhow::Result<()> {
    crate::report::summary_on_stdout(json);
    let mut url = reqwest::Url::parse(cfg.database_url.expose())
        .context("DATABASE_URL is not a URL")?;
    let name = format!("ihub_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    url.set_path(&format!("/{name}"));
    let url = url.to_string();
    crate::db::create_database_if_missing(&url).await?;
    let outcome = bench(&url, args).await;
    let dropped = crate::db::drop_database(&url).await;
    let summary = outcome?;
    dropped.with_context(|| format!("could not drop the scratch database {name}"))?;
    if json {
        println!("{summary}");
    }
    Ok(())
}

async fn bench(url: &str, args: &ReconciliationArgs) -> anyhow::Result<serde_json::Value> {
    let db = crate::db::connect(url, 4).await?;
    crate::db::migrate(&db).await?;
    let n = args.transactions as i64;

    crate::say!("[generate] {n} rows into the mirror");
    let started = Instant::now();
    // Every 100th differs in amount, every 1000th (+1) is missing at the operator.
    sqlx::query(
        "INSERT INTO wallet_reconciliation
             (transaction_id, rgs_kind, rgs_status, rgs_amount_minor, rgs_currency,
              operator_transaction_id, operator_operation, operator_amount_minor,
              operator_currency, result)
         SELECT format('tx-%s', lpad(i::text, 10, '0')), 'debit', 'completed', 100 + i % 1000,
                'EUR',
                CASE WHEN i % 1000 = 1 THEN NULL ELSE format('op_%s', i) END,
                CASE WHEN i % 1000 = 1 THEN NULL ELSE 'withdraw' END,
                CASE WHEN i % 1000 = 1 THEN NULL
                     ELSE 100 + i % 1000 + CASE WHEN i % 100 = 0 THEN 1 ELSE 0 END END,
                CASE WHEN i % 1000 = 1 THEN NULL ELSE 'EUR' END,
                CASE WHEN i % 1000 = 1 THEN 'missing_at_operator'
                     WHEN i % 100 = 0 THEN 'amount_mismatch' ELSE 'match' END
         FROM generate_series(1, $1::int8) AS i",
    )
    .bind(n)
    .execute(&db)
    .await?;
    sqlx::query("VACUUM ANALYZE wallet_reconciliation")
        .execute(&db)
        .await?;
    let generated = started.elapsed();
    crate::say!("      {:.1} s", generated.as_secs_f64());

    // The partners, each listing `increment` transactions the mirror has not seen.
    let shutdown = CancellationToken::new();
    let operator_mock = OperatorMock::new(operator::Options {
        currencies: vec!["EUR".into()],
        initial_balance_minor: 0,
        callback: None,
    });
    let rgs_mock = RgsMock::new(None);
    let new_ids = (n + 1..=n + args.increment as i64).map(|i| format!("tx-{i:010}"));
    let now = chrono::Utc::now();
    operator_mock.seed(new_ids.clone().map(|id| Transaction {
        transaction_id: format!("op_{id}"),
        external_transaction_id: id,
        player_id: "bench".into(),
        operation: "withdraw".into(),
        amount: "2.50".into(),
        currency: "EUR".into(),
        balance_after: "0.00".into(),
        created_at: now,
        received_at_us: now.timestamp_micros(),
        traceparent: None,
    }));
    rgs_mock.seed(new_ids.map(|id| {
        json!({"transaction_id": id, "type": "debit", "status": "completed", "amount": 250,
               "currency": "EUR"})
    }));
    let mut urls = Vec::new();
    for (mock, routes) in [
        (&OPERATOR, operator_mock.routes()),
        (&RGS, rgs_mock.routes()),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (running, server) = crate::mocks::start(mock, listener, routes, shutdown.clone());
        tokio::spawn(server);
        urls.push(running.url);
    }
    let reconciler = Reconciler::new(
        db.clone(),
        crate::http_client::client(Duration::from_secs(10)),
        Partners {
            operator_url: format!("{}/v2/transactions", urls[0]),
            rgs_url: format!("{}/webhooks", urls[1]),
            page_size: 2000,
        },
    );

    crate::say!(
        "[refresh] {} new entries at each partner",
        args.increment
    );
    let started = Instant::now();
    let refreshed = reconciler
        .refresh()
        .await
        .map_err(|err| anyhow::anyhow!("refresh failed: {err:?}"))?;
    let refresh_time = started.elapsed();
    shutdown.cancel();
    crate::say!(
        "      {} ms, {} + {} entries in {} + {} requests",
        millis(refresh_time),
        refreshed.rgs_entries,
        refreshed.operator_entries,
        refreshed.rgs_requests,
        refreshed.operator_requests
    );

    crate::say!("[report] stream it");
    let (peak_before, rss_before) = memory_kib();
    let peak_reset = reset_peak();
    let started = Instant::now();
    let report = reconciler.report().await?;
    let mut body = report.body;
    let (mut bytes, mut lines, mut first_byte) = (0u64, 0u64, None);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let report_time = started.elapsed();
    let (peak_after, rss_after) = memory_kib();
    let rows = lines.saturating_sub(1);
    let expected_rows = (n + args.increment as i64) as u64;
    if rows != expected_rows {
        bail!("the report has {rows} rows, not {expected_rows}");
    }
    let rate = rows as f64 / report_time.as_secs_f64().max(1e-9);
    crate::say!(
        "      {rows} rows, {:.1} MB, {} mismatches: first byte {} ms, all {:.2} s ({rate:.0} rows/s)",
        bytes as f64 / 1e6,
        report.mismatches,
        millis(first_byte.unwrap_or_default()),
        report_time.as_secs_f64()
    );
    crate::say!(
        "      peak RSS {} MiB while streaming (before: {} MiB resident, {} MiB peak{})",
        mib(peak_after),
        mib(rss_before),
        mib(peak_before),
        if peak_reset { ", reset" } else { ", not resettable" }
    );
    let _ = rss_after;
    Ok(json!({
        "scenario": "reconciliation",
        "transactions": n,
        "increment": args.increment,
        "generate_secs": (generated.as_secs_f64() * 10.0).round() / 10.0,
        "refresh": {
            "ms": millis(refresh_time),
            "rgs_entries": refreshed.rgs_entries,
            "operator_entries": refreshed.operator_entries,
            "requests": refreshed.rgs_requests + refreshed.operator_requests,
        },
        "report": {
            "rows": rows,
            "bytes": bytes,
            "mismatches": report.mismatches,
            "first_byte_ms": millis(first_byte.unwrap_or_default()),
            "total_secs": (report_time.as_secs_f64() * 100.0).round() / 100.0,
            "rows_per_sec": rate.round(),
        },
        "memory": {
            "peak_rss_mib_report": mib(peak_after),
            "peak_rss_mib_reset": peak_reset,
            "rss_mib_before_report": mib(rss_before),
            "peak_rss_mib_before_report": mib(peak_before),
        },
    }))
}
