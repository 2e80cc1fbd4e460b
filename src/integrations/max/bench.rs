//! `ihub bench --scenario max`: MAX's reads against a running hub (`ihub dev`).
//!
//! 1. Raw baseline (`--phases raw`): plain NATS request/reply at the same concurrency, the
//!    floor of a read that misses the cache (`raw_request_reply_per_s`).
//! 2. Cached reads (`--phases accept`): `GET /max/transactions/TXN-1..20`, warmed once, as
//!    fast as `--concurrency` callers can send them: served from the KV cache
//!    (`cached_per_s`, `cached_p50_ms`, `cached_p99_ms`).
//! 3. Uncached reads against a 20 ms partner (`--phases e2e`, `--e2e-rate`, default 200/s,
//!    open loop): the transaction status mock is told to answer 20 ms late
//!    (`POST {MAX_TRANSACTIONS_URL}/_mock/faults`, reset after), and every read skips the
//!    cache (`Cache-Control: no-cache`): ingress → service → adapter → partner and back
//!    (`uncached_p50_ms`, `uncached_p99_ms`).
//!
//! The token is `MAX_API_TOKEN`, else the demo one; the ingress is `--url`, else
//! `http://HTTP_ADDR`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::config::MAX_API_TOKEN;
use crate::bench::{
    Load as Args, Phase, Samples, Sent, Source, closed_loop, millis, ms, open_loop, print_results,
    raw_request_reply, timed,
};
use crate::config::Config;
use crate::nats::Bus;

const TRANSACTIONS: u64 = 20;
const DEFAULT_RATE: f64 = 200.0;
/// How late the transaction status mock answers in the uncached phase.
const PARTNER_LATENCY_MS: u64 = 20;

struct Reads {
    http: reqwest::Client,
    url: String,
    token: String,
    /// Skip the cache (`Cache-Control: no-cache`).
    fresh: bool,
    counter: AtomicU64,
}

impl Source for Reads {
    type Id = ();
    const WHAT: &'static str = "reads";
    const SECRET_VAR: &'static str = MAX_API_TOKEN.name;
    const ACCEPTED: u16 = 200;

    async fn send(&self) -> anyhow::Result<Sent<()>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % TRANSACTIONS + 1;
        let mut request = self
            .http
            .get(format!("{}/max/transactions/TXN-{n}", self.url))
            .bearer_auth(&self.token);
        if self.fresh {
            request = request.header("cache-control", "no-cache");
        }
        timed(request).await
    }
}

pub async fn run(cfg: &Config, args: &Args) -> anyhow::Result<()> {
    crate::report::summary_on_stdout(args.json);
    let (concurrency, duration, url) = (args.in_flight(), args.phase(), args.ingress(cfg));
    let token = cfg
        .env
        .non_empty(MAX_API_TOKEN.name)
        .unwrap_or_else(|| MAX_API_TOKEN.demo.to_string());
    let partner = cfg
        .env
        .text("MAX_TRANSACTIONS_URL", "http://127.0.0.1:8008")
        .trim_end_matches('/')
        .to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()?;
    http.get(format!("{url}/health")).send().await.with_context(|| {
        format!("the hub at {url} does not answer: start it with `cargo run --release -- dev`")
    })?;
    let source = |fresh: bool| {
        Arc::new(Reads {
            http: http.clone(),
            url: url.clone(),
            token: token.clone(),
            fresh,
            counter: AtomicU64::new(0),
        })
    };
    crate::say!(
        "ihub bench --scenario max: concurrency {concurrency}, {} s per phase",
        duration.as_secs()
    );
    let phase = |p| args.phases.contains(&p);
    let mut report = Vec::new();
    let mut summary = json!({
        "scenario": "max", "concurrency": concurrency, "duration_secs": duration.as_secs(),
        "raw_request_reply_per_s": null, "cached_per_s": null, "cached_p99_ms": null,
        "uncached_p99_ms": null, "partner_latency_ms": PARTNER_LATENCY_MS,
    });
    if phase(Phase::Raw) {
        let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-bench").await?;
        crate::say!("[raw] NATS request/reply: 256 B to a responder, {concurrency} in flight");
        let rate = raw_request_reply(&bus, concurrency, duration).await?;
        report.push(format!("  raw NATS request/reply      {rate:>8.0} /s"));
        summary["raw_request_reply_per_s"] = json!(rate.round());
    }
    if phase(Phase::Accept) {
        crate::say!("[cached] warming TXN-1..{TRANSACTIONS}, then reading them, {concurrency} in flight");
        let warm = source(false);
        for _ in 0..TRANSACTIONS {
            let sent = warm.send().await?;
            if sent.status != 200 {
                anyhow::bail!(
                    "GET /max/transactions answered {}: is {} the hub's, and the adapters running?",
                    sent.status,
                    MAX_API_TOKEN.name
                );
            }
        }
        let (rate, _, mut latency) = closed_loop(&source(false), concurrency, duration).await?;
        let (p50, p99) = (latency.percentile(0.50), latency.percentile(0.99));
        report.push(format!(
            "  cached reads                {rate:>8.0} /s   p50 {}  p99 {}",
            ms(p50),
            ms(p99)
        ));
        summary["cached_per_s"] = json!(rate.round());
        summary["cached_p50_ms"] = json!(millis(p50));
        summary["cached_p99_ms"] = json!(millis(p99));
    }
    if phase(Phase::E2e) {
        let rate = args.e2e_rate.unwrap_or(DEFAULT_RATE).max(1.0);
        let faults = format!("{partner}/_mock/faults");
        http.post(&faults)
            .json(&json!({"latency_ms": PARTNER_LATENCY_MS}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("could not slow the transaction status mock at {faults}: is MAX_TRANSACTIONS_URL the mock's?"))?;
        crate::say!("[uncached] reads at {rate:.0}/s past the cache, the partner answering {PARTNER_LATENCY_MS} ms late");
        let sent = open_loop(&source(true), rate, duration).await;
        let reset = http.delete(&faults).send().await;
        let sent = sent?;
        reset.context("could not reset the transaction status mock's faults")?;
        let mut latency = Samples(sent.iter().map(|s| s.latency.as_micros() as u64).collect());
        let expected = (rate * duration.as_secs_f64()).round() as usize;
        let (p50, p99) = (latency.percentile(0.50), latency.percentile(0.99));
        report.push(format!(
            "  uncached at {rate:.0}/s (20 ms partner)  p50 {}  p99 {}   ({} of {expected} answered 200)",
            ms(p50),
            ms(p99),
            sent.len()
        ));
        summary["uncached_rate"] = json!(rate.round());
        summary["uncached_p50_ms"] = json!(millis(p50));
        summary["uncached_p99_ms"] = json!(millis(p99));
        summary["answered_at_rate"] = json!(sent.len());
    }
    print_results(
        &format!("max, concurrency {concurrency}"),
        duration,
        &report,
        args.json,
        &summary,
    );
    Ok(())
}
