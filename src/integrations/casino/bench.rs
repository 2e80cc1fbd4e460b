//! `ihub bench --scenario casino`: signed debits against a running hub (`ihub dev`), answered
//! at once by the wallet service.
//!
//! 1. Raw baselines at the same concurrency: plain JetStream publishes, each ack awaited
//!    (`raw_per_s`), and plain NATS request/reply to a responder (`raw_request_reply_per_s`,
//!    the floor of a call to the wallet service).
//! 2. Sustained (`--phases accept`): debits of 0.01 across 1,000 players as fast as
//!    `--concurrency` callers can send them: 200s per second (`sustained_per_s`); then the
//!    hot player: one wallet, 64 callers (`hot_player_per_s`, `hot_player_p99_ms`).
//! 3. At a fixed rate (`--phases e2e`, `--e2e-rate`, default 500/s, open loop): the debit's
//!    round trip, request to answer (`p50_ms_at_500`, `p99_ms_at_500`).
//!
//! The players (`bench-<run>-<n>`, 1,000,000.00 USD each) and a session each are written to
//! the hub's database (`DATABASE_URL`) first, as `ihub setup` seeds players; the ingress is
//! `--url`, else `http://HTTP_ADDR`; the secret is `CASINO_SECRET`, else the demo one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::config::CASINO_SECRET;
use super::signature::{CASINO_HEADER, sign};
use crate::bench::{
    Load as Args, Phase, Samples, Sent, Source, closed_loop, millis, ms, open_loop, print_results,
    raw_baseline, raw_request_reply, timed,
};
use crate::config::{Config, Secret};
use crate::nats::Bus;

const PLAYERS: usize = 1_000;
const HOT_CALLERS: usize = 64;
const DEFAULT_RATE: f64 = 500.0;

struct Debits {
    http: reqwest::Client,
    url: String,
    secret: Secret,
    run: String,
    /// (user id, session id) of each player the load spreads over.
    players: Vec<(String, String)>,
    counter: AtomicU64,
}

impl Source for Debits {
    type Id = ();
    const WHAT: &'static str = "debits";
    const SECRET_VAR: &'static str = CASINO_SECRET.name;
    const ACCEPTED: u16 = 200;

    async fn send(&self) -> anyhow::Result<Sent<()>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (user, session) = &self.players[n as usize % self.players.len()];
        let body = json!({
            "userId": user, "sessionId": session, "roundId": format!("r-{n}"), "gameId": 1,
            "externalTransactionId": format!("bench-{}-{n}", self.run),
            "amount": "0.01", "currency": "USD",
        })
        .to_string();
        let signature = sign(&self.secret, body.as_bytes());
        timed(
            self.http
                .post(&self.url)
                .header("content-type", "application/json")
                .header(CASINO_HEADER, signature)
                .body(body),
        )
        .await
    }
}

pub async fn run(cfg: &Config, args: &Args) -> anyhow::Result<()> {
    crate::report::summary_on_stdout(args.json);
    let (concurrency, duration, url) = (args.in_flight(), args.phase(), args.ingress(cfg));
    let secret = cfg
        .env
        .non_empty(CASINO_SECRET.name)
        .unwrap_or_else(|| CASINO_SECRET.demo.to_string());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(HOT_CALLERS.max(concurrency))
        .timeout(Duration::from_secs(10))
        .build()?;
    http.get(format!("{url}/health")).send().await.with_context(|| {
        format!("the hub at {url} does not answer: start it with `cargo run --release -- dev`")
    })?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    crate::say!("ihub bench --scenario casino: {PLAYERS} players and a hot one, seeding them");
    let db = crate::db::connect(cfg.database_url.expose(), 2).await?;
    let players = seed(&db, &run, PLAYERS).await?;
    let hot = seed(&db, &format!("{run}-hot"), 1).await?;
    db.close().await;
    let source = |players: Vec<(String, String)>, tag: &str| {
        Arc::new(Debits {
            http: http.clone(),
            url: format!("{url}/casino/debit"),
            secret: Secret::new(secret.clone()),
            run: format!("{run}-{tag}"),
            players,
            counter: AtomicU64::new(0),
        })
    };
    let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-bench").await?;

    crate::say!(
        "ihub bench --scenario casino: concurrency {concurrency}, {} s per phase",
        duration.as_secs()
    );
    let phase = |p| args.phases.contains(&p);
    let mut report = Vec::new();
    let mut summary = json!({
        "scenario": "casino", "concurrency": concurrency, "duration_secs": duration.as_secs(),
        "raw_per_s": null, "sustained_per_s": null, "p50_ms_at_500": null, "p99_ms_at_500": null,
        "hot_player_per_s": null, "hot_player_p99_ms": null,
    });
    if phase(Phase::Raw) {
        crate::say!("[raw] JetStream: publish 256 B and await each ack, {concurrency} in flight");
        let rate = raw_baseline(&bus, concurrency, duration).await?;
        report.push(format!("  raw JetStream publish+ack   {rate:>8.0} msg/s"));
        summary["raw_per_s"] = json!(rate.round());
        crate::say!("[raw] NATS request/reply: 256 B to a responder, {concurrency} in flight");
        let rate = raw_request_reply(&bus, concurrency, duration).await?;
        report.push(format!("  raw NATS request/reply      {rate:>8.0} /s"));
        summary["raw_request_reply_per_s"] = json!(rate.round());
    }
    if phase(Phase::Accept) {
        crate::say!("[sustained] debits across {PLAYERS} players, {concurrency} in flight");
        let (rate, _, mut latency) =
            closed_loop(&source(players.clone(), "s"), concurrency, duration).await?;
        let p99 = latency.percentile(0.99);
        report.push(format!(
            "  debits sustained            {rate:>8.0} /s   p50 {}  p99 {}",
            ms(latency.percentile(0.50)),
            ms(p99)
        ));
        summary["sustained_per_s"] = json!(rate.round());
        summary["sustained_p99_ms"] = json!(millis(p99));

        crate::say!("[hot player] debits on one wallet, {HOT_CALLERS} in flight");
        let (rate, _, mut latency) =
            closed_loop(&source(hot.clone(), "h"), HOT_CALLERS, duration).await?;
        let p99 = latency.percentile(0.99);
        report.push(format!(
            "  hot player (1 wallet)       {rate:>8.0} /s   p50 {}  p99 {}",
            ms(latency.percentile(0.50)),
            ms(p99)
        ));
        summary["hot_player_per_s"] = json!(rate.round());
        summary["hot_player_p99_ms"] = json!(millis(p99));
    }
    if phase(Phase::E2e) {
        let rate = args.e2e_rate.unwrap_or(DEFAULT_RATE).max(1.0);
        crate::say!("[rate] debits at {rate:.0}/s across {PLAYERS} players");
        let sent = open_loop(&source(players.clone(), "r"), rate, duration).await?;
        let mut latency = Samples(sent.iter().map(|s| s.latency.as_micros() as u64).collect());
        let expected = (rate * duration.as_secs_f64()).round() as usize;
        let (p50, p99) = (latency.percentile(0.50), latency.percentile(0.99));
        report.push(format!(
            "  at {rate:.0} debits/s             p50 {}  p99 {}   ({} of {expected} answered 200)",
            ms(p50),
            ms(p99),
            sent.len()
        ));
        summary["rate"] = json!(rate.round());
        summary["p50_ms_at_500"] = json!(millis(p50));
        summary["p99_ms_at_500"] = json!(millis(p99));
        summary["answered_at_rate"] = json!(sent.len());
    }
    print_results(
        &format!("casino, concurrency {concurrency}"),
        duration,
        &report,
        args.json,
        &summary,
    );
    Ok(())
}

/// `count` players `bench-<tag>-<n>` with 1,000,000.00 USD and a session each.
async fn seed(db: &sqlx::PgPool, tag: &str, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let players: Vec<serde_json::Value> = (0..count)
        .map(|n| json!({"userId": format!("bench-{tag}-{n}"), "balances": {"USD": "1000000.00"}}))
        .collect();
    super::store::seed_players(db, &serde_json::to_string(&players)?)
        .await
        .context("could not seed the bench's players: is DATABASE_URL the hub's database?")?;
    let users: Vec<String> = (0..count).map(|n| format!("bench-{tag}-{n}")).collect();
    let sessions: Vec<String> = users.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect();
    sqlx::query(
        "INSERT INTO casino_sessions (session_id, user_id, game_id, currency)
         SELECT s, u, '1', 'USD' FROM unnest($1::text[], $2::text[]) AS t(s, u)",
    )
    .bind(&sessions)
    .bind(&users)
    .execute(db)
    .await?;
    Ok(users.into_iter().zip(sessions).collect())
}
