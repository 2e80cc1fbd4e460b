//! `ihub bench --scenario newstore`: NewStore webhooks against a running hub (`ihub dev`),
//! timed to the Hail mock.
//!
//! 1. Raw baseline: the wallet benchmark's plain JetStream publishes (each ack awaited) at the
//!    same concurrency, on the same server.
//! 2. Acceptance: signed `order.completed` events (a new order each, unique per run) as fast as
//!    `--concurrency` callers can send them for `--duration` s: 202s per second.
//! 3. Delivery: the Hail transactions (`<order id>-sale`) of those events that reached the Hail
//!    mock during and after the accept phase, until the consumers have drained:
//!    `delivered_per_s` = delivered / (last arrival − first send).
//! 4. End to end: events at a fixed rate (`--e2e-rate`, default 500/s, open loop); p50/p99 from
//!    sending the webhook (unix µs) to the mock's `received_at_us` for its sale.
//!
//! The ingress is `--url`, else `http://HTTP_ADDR`; the mock is `http://HAIL_MOCK_ADDR` (as
//! `ihub dev` binds them, defaults 127.0.0.1:8000 and :8005); the secret is
//! `NEWSTORE_WEBHOOK_SECRET`, else the demo one of `ihub dev`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::json;

use super::client::Sender;
use super::config::NEWSTORE_WEBHOOK;
use super::domain::EventKind;
use super::mocks::HAIL;
use super::simulate;
use crate::config::{Config, Secret};
use crate::bench::{
    print_results,
    Sent,
    Load as Args, Phase, Samples, Source, closed_loop, millis, ms, open_loop, raw_baseline,
    wait_for_consumers,
};
use crate::nats::Bus;

/// The end-to-end rate when `--e2e-rate` is not given.
const DEFAULT_E2E_RATE: f64 = 500.0;

struct Load {
    sender: Sender,
    /// Order ids are `bench-<run>-<n>`.
    run: String,
    counter: AtomicU64,
}



impl Source for Load {
    type Id = String;
    const WHAT: &'static str = "events";
    const SECRET_VAR: &'static str = NEWSTORE_WEBHOOK.name;

    /// Sends one signed `order.completed` for a new order.
    async fn send(&self) -> anyhow::Result<Sent<String>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let order_id = format!("bench-{}-{n}", self.run);
        let event = simulate::event_at(EventKind::OrderCompleted, &order_id, n, chrono::Utc::now());
        let sent_at_us = chrono::Utc::now().timestamp_micros();
        let started = Instant::now();
        let (status, _) = self.sender.send(&event).await?;
        Ok(Sent {
            id: order_id,
            sent_at_us,
            latency: started.elapsed(),
            status,
        })
    }
}

impl Load {
    fn ours(&self, idempotency_key: &str) -> bool {
        idempotency_key
            .strip_prefix("bench-")
            .and_then(|rest| rest.strip_prefix(self.run.as_str()))
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

pub async fn run(cfg: &Config, args: &Args) -> anyhow::Result<()> {
    crate::report::summary_on_stdout(args.json);
    let (concurrency, duration, url) = (args.in_flight(), args.phase(), args.ingress(cfg));
    let hail_url = format!(
        "http://{}",
        cfg.env.addr(HAIL.addr_var, HAIL.default_addr)?
    );
    let secret = cfg
        .env
        .non_empty(NEWSTORE_WEBHOOK.name)
        .unwrap_or_else(|| NEWSTORE_WEBHOOK.demo.to_string());
    let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-bench").await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(64))
        .timeout(Duration::from_secs(10))
        .build()?;
    let load = Arc::new(Load {
        sender: Sender {
            http: http.clone(),
            url: format!("{url}/webhooks/newstore"),
            secret: Secret::new(secret),
        },
        run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        counter: AtomicU64::new(0),
    });
    http.get(format!("{url}/health"))
        .send()
        .await
        .with_context(|| {
            format!("the hub at {url} does not answer: start it with `cargo run --release -- dev`")
        })?;
    arrivals(&http, &hail_url, i64::MAX)
        .await
        .with_context(|| format!("the Hail mock at {hail_url} does not answer (HAIL_MOCK_ADDR)"))?;

    crate::say!(
        "ihub bench --scenario newstore: concurrency {concurrency}, {} s per phase",
        duration.as_secs()
    );
    let run = |phase| args.phases.contains(&phase);
    let mut report = Vec::new();
    let mut summary = json!({
        "scenario": "newstore",
        "concurrency": concurrency,
        "duration_secs": duration.as_secs(),
        "raw_per_s": null,
        "accepted_per_s": null,
        "delivered_per_s": null,
        "e2e_rate": null,
        "e2e_p50_ms": null,
        "e2e_p99_ms": null,
    });

    let raw_rate = if run(Phase::Raw) {
        crate::say!("[raw] JetStream: publish 256 B and await each ack, {concurrency} in flight");
        let rate = raw_baseline(&bus, concurrency, duration).await?;
        crate::say!("      {rate:.0} msg/s");
        report.push(format!("  raw JetStream publish+ack   {rate:>8.0} msg/s"));
        summary["raw_per_s"] = json!(rate.round());
        Some(rate)
    } else {
        None
    };

    if run(Phase::Accept) {
        wait_for_consumers(|| backlog(&bus)).await?;
        crate::say!("[accept] signed order.completed events, {concurrency} in flight");
        let first_send_us = chrono::Utc::now().timestamp_micros();
        let (rate, accepted, mut latency) = closed_loop(&load, concurrency, duration).await?;
        let (p50, p99) = (latency.percentile(0.50), latency.percentile(0.99));
        crate::say!(
            "      {rate:.0} accepted/s, p50 {}, p99 {}",
            ms(p50),
            ms(p99)
        );
        let ratio = raw_rate.map(|raw| rate / raw.max(1.0));
        report.push(format!(
            "  ingress acceptance          {rate:>8.0} events/s   p50 {}  p99 {}{}",
            ms(p50),
            ms(p99),
            ratio.map_or(String::new(), |r| format!("   ratio {r:.3} of raw"))
        ));
        summary["accepted_per_s"] = json!(rate.round());
        summary["accepted"] = json!(accepted);
        summary["accept_p50_ms"] = json!(millis(p50));
        summary["accept_p99_ms"] = json!(millis(p99));
        summary["accept_ratio_of_raw"] = json!(ratio.map(|r| (r * 1000.0).round() / 1000.0));

        crate::say!("[deliver] until the consumers have drained");
        wait_for_consumers(|| backlog(&bus)).await?;
        let arrived: Vec<Arrival> = arrivals(&http, &hail_url, first_send_us - 1)
            .await?
            .into_iter()
            .filter(|a| load.ours(&a.idempotency_key))
            .collect();
        let delivered = arrived.len();
        let last_us = arrived.iter().map(|a| a.received_at_us).max();
        let delivered_rate = match last_us {
            Some(last) if last > first_send_us => {
                delivered as f64 / ((last - first_send_us) as f64 / 1e6)
            }
            _ => 0.0,
        };
        crate::say!(
            "      {delivered} of {accepted} delivered to Hail, {delivered_rate:.0}/s from the first send to the last arrival"
        );
        report.push(format!(
            "  delivered to Hail           {delivered_rate:>8.0} events/s   ({delivered} of {accepted} accepted; what the whole hub sustains)"
        ));
        summary["delivered_per_s"] = json!(delivered_rate.round());
        summary["delivered"] = json!(delivered);
    }

    if run(Phase::E2e) {
        wait_for_consumers(|| backlog(&bus)).await?;
        let rate = args.e2e_rate.unwrap_or(DEFAULT_E2E_RATE).max(1.0);
        crate::say!("[e2e] order.completed at {rate:.0} events/s, timed to the Hail mock");
        let phase_start_us = chrono::Utc::now().timestamp_micros();
        let sent = open_loop(&load, rate, duration).await?;
        wait_for_consumers(|| backlog(&bus)).await?;
        let received: HashMap<String, i64> = arrivals(&http, &hail_url, phase_start_us - 1)
            .await?
            .into_iter()
            .map(|a| (a.idempotency_key, a.received_at_us))
            .collect();
        let mut e2e = Samples::default();
        let mut missing = 0;
        for s in &sent {
            match received.get(&format!("{}-sale", s.id)) {
                Some(at) => e2e.0.push((at - s.sent_at_us).max(0) as u64),
                None => missing += 1,
            }
        }
        let mut ingress = Samples(sent.iter().map(|s| s.latency.as_micros() as u64).collect());
        let (p50, p99) = (e2e.percentile(0.50), e2e.percentile(0.99));
        crate::say!(
            "      end to end p50 {}, p99 {} ({} events, {missing} not seen at Hail)",
            ms(p50),
            ms(p99),
            sent.len()
        );
        report.push(format!("  at {rate:.0} events/s:"));
        report.push(format!(
            "    ingress                   p50 {}  p99 {}",
            ms(ingress.percentile(0.50)),
            ms(ingress.percentile(0.99))
        ));
        report.push(format!(
            "    webhook → Hail received   p50 {}  p99 {}   ({} events, {missing} not seen at Hail)",
            ms(p50),
            ms(p99),
            sent.len()
        ));
        summary["e2e_rate"] = json!(rate.round());
        summary["e2e_events"] = json!(sent.len());
        summary["e2e_missing"] = json!(missing);
        summary["e2e_p50_ms"] = json!(millis(p50));
        summary["e2e_p99_ms"] = json!(millis(p99));
        summary["e2e_ingress_p50_ms"] = json!(millis(ingress.percentile(0.50)));
        summary["e2e_ingress_p99_ms"] = json!(millis(ingress.percentile(0.99)));
    }

    print_results(
        &format!("newstore, concurrency {concurrency}"),
        duration,
        &report,
        args.json,
        &summary,
    );
    Ok(())
}

/// Messages the NewStore consumers have not finished (pending or in hand).
async fn backlog(bus: &Bus) -> anyhow::Result<u64> {
    let mut backlog = 0;
    for (stream_name, durable) in [("INBOUND", "stage-newstore"), ("OUTBOUND", "deliver-hail")] {
        let stream = bus.stream(stream_name).await?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(durable)
            .await
            .map_err(|err| anyhow::anyhow!("consumer {durable}: {err}"))?;
        let info = consumer.info().await?;
        backlog += info.num_pending + info.num_ack_pending as u64;
    }
    Ok(backlog)
}

/// One transaction at the Hail mock, without its body.
#[derive(Deserialize)]
struct Arrival {
    idempotency_key: String,
    received_at_us: i64,
}

#[derive(Deserialize)]
struct Listing {
    transactions: Vec<Arrival>,
}

/// The transactions the Hail mock received after `after_us` (unix µs).
async fn arrivals(
    http: &reqwest::Client,
    hail_url: &str,
    after_us: i64,
) -> anyhow::Result<Vec<Arrival>> {
    let response = http
        .get(format!(
            "{hail_url}/_mock/transactions?received_after_us={after_us}"
        ))
        .send()
        .await?
        .error_for_status()?;
    let listing: Listing = response
        .json()
        .await
        .context("the Hail mock's /_mock/transactions")?;
    Ok(listing.transactions)
}
