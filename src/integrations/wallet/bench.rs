//! `ihub bench`: load against a running hub, next to the raw JetStream rate of the same server.
//!
//! 1. Raw baseline: plain JetStream publishes (256 bytes) with each ack awaited, at the chosen
//!    concurrency, to a scratch stream on the same server.
//! 2. Acceptance: signed debits as fast as `concurrency` callers can send them; accepted
//!    requests/s and the ingress's p50/p99. Meanwhile the consumers work flat out: what reaches
//!    the operator per second is the rate the whole hub sustains on this machine.
//! 3. End to end: debits at half that sustainable rate (open loop); p50/p99 from sending the
//!    request to the operator mock receiving the withdraw (read from its transaction list).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use uuid::Uuid;

use super::client::{self, Rgs};
pub use crate::bench::Phase;
use crate::bench::{
    print_results,
    Sent,
    Samples, Source, closed_loop, millis, ms, open_loop, raw_baseline, wait_for_consumers,
};
use super::config::WALLET_HMAC;
use crate::config::{Config, Secret};
use crate::nats::Bus;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The load to drive: `wallet`, signed debits timed to the operator mock;
    /// `reconciliation`, a report over a large mirror (needs only Postgres); `newstore`,
    /// signed `order.completed` webhooks timed to the Hail mock (`ihub bench` hands it to
    /// the NewStore integration); `casino`, signed debits answered at once by the wallet
    /// service, across 1,000 players and on one hot player; `max`, MAX's transaction reads,
    /// cached and past the cache to a 20 ms partner.
    #[arg(long, default_value = "wallet", value_parser = ["wallet", "reconciliation", "newstore", "casino", "max"])]
    pub scenario: String,
    /// Print the results as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// The hub's ingress (default: http://127.0.0.1:8000; `newstore`: HTTP_ADDR's).
    #[arg(long)]
    pub url: Option<String>,
    /// The operator mock the hub calls; end-to-end times are read from it.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub operator_url: String,
    /// Requests (and raw publishes) in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests/s for the end-to-end phase (default: half the rate the whole hub sustained in
    /// the accept phase; `newstore`: 500).
    #[arg(long)]
    pub e2e_rate: Option<f64>,
    /// Phases to run: raw, accept, e2e (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "raw,accept,e2e")]
    pub phases: Vec<Phase>,
    /// Signing secret; defaults to WALLET_HMAC_SECRET, else the demo secret of `ihub dev`.
    #[arg(long, env = "WALLET_HMAC_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[command(flatten)]
    pub reconciliation: super::reconciliation::bench::ReconciliationArgs,
}

impl Args {
    /// The options every scenario reads.
    pub fn load(&self) -> crate::bench::Load {
        crate::bench::Load {
            url: self.url.clone(),
            concurrency: self.concurrency,
            duration: self.duration,
            e2e_rate: self.e2e_rate,
            phases: self.phases.clone(),
            json: self.json,
        }
    }
}

struct Client {
    rgs: Rgs,
    run: String,
    counter: AtomicU64,
}



impl Source for Client {
    type Id = Option<Uuid>;
    const WHAT: &'static str = "requests";
    const SECRET_VAR: &'static str = WALLET_HMAC.name;

    /// One signed debit for a new player.
    async fn send(&self) -> anyhow::Result<Sent<Option<Uuid>>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let body = json!({"player_id": format!("bench-{}-{n}", self.run), "amount": 100, "currency": "EUR"});
        let sent_at_us = chrono::Utc::now().timestamp_micros();
        let started = Instant::now();
        let answer = self
            .rgs
            .post("debit", &format!("bench-{}-{n}", self.run), &body)
            .await?;
        Ok(Sent {
            id: answer.body["transaction_id"]
                .as_str()
                .and_then(|s| s.parse().ok()),
            sent_at_us,
            latency: started.elapsed(),
            status: answer.status,
        })
    }
}

pub async fn run(cfg: &Config, args: Args) -> anyhow::Result<()> {
    if args.scenario == "reconciliation" {
        return super::reconciliation::bench::run(cfg, &args.reconciliation, args.json).await;
    }
    crate::report::summary_on_stdout(args.json);
    let concurrency = args.concurrency.max(1);
    let duration = Duration::from_secs(args.duration.max(1));
    let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-bench").await?;
    let secret = args
        .secret
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| WALLET_HMAC.demo.to_string());
    let client = Arc::new(Client {
        rgs: Rgs::new(
            args.url.as_deref().unwrap_or("http://127.0.0.1:8000"),
            Secret::new(secret),
            concurrency,
            Duration::from_secs(10),
        )?,
        run: Uuid::new_v4().simple().to_string()[..8].to_string(),
        counter: AtomicU64::new(0),
    });
    client.rgs.check_health().await?;

    crate::say!(
        "ihub bench: concurrency {concurrency}, {} s per phase",
        duration.as_secs()
    );
    let run = |phase| args.phases.contains(&phase);
    let mut report = Vec::new();
    let mut summary = json!({
        "scenario": args.scenario,
        "concurrency": concurrency,
        "duration_secs": duration.as_secs(),
    });

    let raw_rate = if run(Phase::Raw) {
        crate::say!("[raw] JetStream: publish 256 B and await each ack, {concurrency} in flight");
        let rate = raw_baseline(&bus, concurrency, duration).await?;
        crate::say!("      {rate:.0} msg/s");
        report.push(format!("  raw JetStream publish+ack   {rate:>8.0} msg/s"));
        summary["raw"] = json!({"msgs_per_sec": rate.round()});
        Some(rate)
    } else {
        None
    };

    let sustainable = if run(Phase::Accept) {
        crate::say!("[accept] signed debits, {concurrency} in flight");
        let started_us = chrono::Utc::now().timestamp_micros();
        let (rate, _, mut latency) = closed_loop(&client, concurrency, duration).await?;
        let ended_us = chrono::Utc::now().timestamp_micros();
        let (p50, p99) = (latency.percentile(0.50), latency.percentile(0.99));
        crate::say!(
            "      {rate:.0} accepted/s, p50 {}, p99 {}",
            ms(p50),
            ms(p99)
        );
        let ratio = raw_rate.map_or(String::new(), |raw| {
            format!("   ratio {:.2} of raw", rate / raw.max(1.0))
        });
        report.push(format!(
            "  ingress acceptance          {rate:>8.0} req/s   p50 {}  p99 {}{ratio}",
            ms(p50),
            ms(p99)
        ));
        summary["accept"] = json!({
            "accepted_per_sec": rate.round(),
            "p50_ms": millis(p50),
            "p99_ms": millis(p99),
            "ratio_of_raw": raw_rate.map(|raw| (rate / raw.max(1.0) * 1000.0).round() / 1000.0),
        });
        // What the consumers finished meanwhile, all of the machine being busy: the rate the
        // whole hub sustains here.
        match booked_between(&client.rgs.http, &args.operator_url, started_us, ended_us).await {
            Ok(booked) => {
                let completed = booked as f64 / duration.as_secs_f64();
                crate::say!("      {completed:.0}/s reached the operator meanwhile");
                report.push(format!(
                    "  completed end to end        {completed:>8.0} req/s   (what the whole hub sustains on this machine)"
                ));
                summary["accept"]["completed_per_sec"] = json!(completed.round());
                Some(completed)
            }
            Err(err) => {
                crate::say!("      (no end-to-end count: {err:#})");
                None
            }
        }
    } else {
        None
    };

    if run(Phase::E2e) {
        wait_for_consumers(|| client::backlog(&bus)).await?;
        let Some(rate) = args.e2e_rate.or(sustainable.map(|r| r / 2.0)) else {
            bail!("the e2e phase needs --e2e-rate, or the accept phase to measure a rate");
        };
        let rate = rate.max(1.0);
        crate::say!("[e2e] debits at {rate:.0} requests/s, timed to the operator mock");
        let phase_start_us = chrono::Utc::now().timestamp_micros();
        let sent = open_loop(&client, rate, duration).await?;
        wait_for_consumers(|| client::backlog(&bus)).await?;
        let (mut e2e, missing) =
            end_to_end(&client.rgs.http, &args.operator_url, &sent, phase_start_us).await?;
        let mut ingress = Samples(sent.iter().map(|s| s.latency.as_micros() as u64).collect());
        report.push(format!(
            "  at {rate:.0} req/s{}:",
            if args.e2e_rate.is_none() {
                " (half of that)"
            } else {
                ""
            }
        ));
        report.push(format!(
            "    ingress                   p50 {}  p99 {}",
            ms(ingress.percentile(0.50)),
            ms(ingress.percentile(0.99))
        ));
        report.push(format!(
            "    end to end                p50 {}  p99 {}   ({} requests, {missing} not seen at the operator)",
            ms(e2e.percentile(0.50)),
            ms(e2e.percentile(0.99)),
            sent.len()
        ));
        summary["e2e"] = json!({
            "rate_per_sec": rate.round(),
            "requests": sent.len(),
            "missing": missing,
            "ingress_p50_ms": millis(ingress.percentile(0.50)),
            "ingress_p99_ms": millis(ingress.percentile(0.99)),
            "e2e_p50_ms": millis(e2e.percentile(0.50)),
            "e2e_p99_ms": millis(e2e.percentile(0.99)),
        });
    }

    print_results(
        &format!("concurrency {concurrency}"),
        duration,
        &report,
        args.json,
        &summary,
    );
    Ok(())
}

/// How many transactions the operator mock received in a time window.
async fn booked_between(
    http: &reqwest::Client,
    operator_url: &str,
    from_us: i64,
    to_us: i64,
) -> anyhow::Result<usize> {
    let booked = client::booked_since(http, operator_url, from_us).await?;
    Ok(booked.iter().filter(|b| b.received_at_us <= to_us).count())
}

async fn end_to_end(
    http: &reqwest::Client,
    operator_url: &str,
    sent: &[Sent<Option<Uuid>>],
    since_us: i64,
) -> anyhow::Result<(Samples, usize)> {
    let received: std::collections::HashMap<String, i64> =
        client::booked_since(http, operator_url, since_us)
            .await?
            .into_iter()
            .map(|t| (t.external_transaction_id, t.received_at_us))
            .collect();
    let mut samples = Samples::default();
    let mut missing = 0;
    for s in sent {
        match s
            .id
            .and_then(|id| received.get(&id.to_string()))
        {
            Some(at) => samples.0.push((at - s.sent_at_us).max(0) as u64),
            None => missing += 1,
        }
    }
    Ok((samples, missing))
}
