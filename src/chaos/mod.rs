//! `ihub chaos`: the resilience runs, as a command anyone can rerun. Each scenario starts a hub
//! of its own on loopback ([`rig`]), drives signed wallet requests through it at a steady rate
//! ([`load`]), breaks one thing a third of the way in and repairs it after `--down-secs`, waits
//! until the pipeline has drained, and counts against the operator mock's bookings:
//!
//! * **accepted**: requests the hub answered 2xx (the RGS retries 5xx, 429 and timeouts with
//!   the same Idempotency-Key until it gets an answer);
//! * **lost**: accepted, but not `completed` in Postgres or not booked at the operator at the
//!   end;
//! * **duplicated**: requests the operator booked more than once;
//! * the 5xx answers and failed requests, and the window from the first to the last of them;
//! * the time from the repair (or the end of the load, when later) until everything accepted is
//!   completed and booked and the consumers have nothing left.

mod load;
pub mod rig;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{Env, Secret};
use crate::integrations::wallet::client::{self, Rgs};
use load::{Plan, Tally};
use rig::{Database, Rig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The scenario to run, or `all` of them in turn.
    #[arg(long, value_enum, default_value_t = Choice::All)]
    pub scenario: Choice,
    /// Print one JSON object with every figure on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Requests per scenario.
    #[arg(long, default_value_t = 1500)]
    pub requests: u64,
    /// Requests sent per second; the load runs across the fault.
    #[arg(long, default_value_t = 150.0)]
    pub rate: f64,
    /// Requests in flight at most (callers retrying count).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long the fault lasts, in seconds [default: kill-consumer 5, nats-down 5,
    /// nats-down-long 20, postgres-down 10, partner-down 30].
    #[arg(long)]
    pub down_secs: Option<f64>,
    /// Stop waiting for the pipeline to drain after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub drain_timeout_secs: u64,
    /// The nats-server binary [default: nats-server on PATH, else /usr/sbin/nats-server].
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// The directory of initdb and pg_ctl, for postgres-down [default: the newest
    /// /usr/lib/postgresql/*/bin].
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
    /// Keep the processes' logs (their directory is printed) instead of deleting them.
    #[arg(long)]
    pub keep_logs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    All,
    /// kill -9 of one of the two consumer processes; a new one starts after --down-secs.
    KillConsumer,
    /// NATS killed (kill -9) and restarted on the same store 5 s later.
    NatsDown,
    /// The same, 20 s down.
    NatsDownLong,
    /// Postgres stopped (a private server, fast shutdown) and started again.
    PostgresDown,
    /// The operator answers every call 503 (its mock's fault plan), then recovers.
    PartnerDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    KillConsumer,
    NatsDown,
    NatsDownLong,
    PostgresDown,
    PartnerDown,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::KillConsumer,
        Scenario::NatsDown,
        Scenario::NatsDownLong,
        Scenario::PostgresDown,
        Scenario::PartnerDown,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::KillConsumer => "kill-consumer",
            Scenario::NatsDown => "nats-down",
            Scenario::NatsDownLong => "nats-down-long",
            Scenario::PostgresDown => "postgres-down",
            Scenario::PartnerDown => "partner-down",
        }
    }

    fn default_down(self) -> f64 {
        match self {
            Scenario::KillConsumer | Scenario::NatsDown => 5.0,
            Scenario::NatsDownLong => 20.0,
            Scenario::PostgresDown => 10.0,
            Scenario::PartnerDown => 30.0,
        }
    }

    fn fault(self) -> &'static str {
        match self {
            Scenario::KillConsumer => {
                "kill -9 of one of the two consumer processes, a new one started after the outage"
            }
            Scenario::NatsDown | Scenario::NatsDownLong => {
                "nats-server killed (kill -9), restarted on the same store after the outage"
            }
            Scenario::PostgresDown => "Postgres stopped (pg_ctl stop -m fast), started again",
            Scenario::PartnerDown => "the operator answers every call 503, then recovers",
        }
    }
}

impl Choice {
    fn scenarios(self) -> Vec<Scenario> {
        match self {
            Choice::All => Scenario::ALL.to_vec(),
            Choice::KillConsumer => vec![Scenario::KillConsumer],
            Choice::NatsDown => vec![Scenario::NatsDown],
            Choice::NatsDownLong => vec![Scenario::NatsDownLong],
            Choice::PostgresDown => vec![Scenario::PostgresDown],
            Choice::PartnerDown => vec![Scenario::PartnerDown],
        }
    }
}

/// The operator mock answers this late throughout, as a real wallet does, so that calls are in
/// hand when something breaks.
const OPERATOR_LATENCY_MS: u64 = 100;
/// The RGS's timeout per request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where progress and the human report go: stdout, or stderr under `--json` (stdout is then the
/// summary alone).
#[derive(Clone, Copy)]
pub struct Out {
    json: bool,
}

impl Out {
    pub fn progress(&self, line: impl std::fmt::Display) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// What the tools and the machine give, checked before any scenario starts.
struct Tools {
    nats_server: PathBuf,
    pg_bin: Option<PathBuf>,
    /// The Postgres server of DATABASE_URL, where scenarios other than postgres-down keep
    /// their database.
    shared_postgres: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let out = Out { json: args.json };
    if args.requests == 0 || !args.rate.is_finite() || args.rate <= 0.0 || args.concurrency == 0 {
        bail!("--requests, --rate and --concurrency must be positive");
    }
    if args.down_secs.is_some_and(|d| !d.is_finite() || d < 0.0) {
        bail!("--down-secs must be zero or more");
    }
    let scenarios = args.scenario.scenarios();
    let tools = Tools {
        nats_server: rig::Nats::find(args.nats_server.as_deref())?,
        pg_bin: if scenarios.contains(&Scenario::PostgresDown) {
            Some(rig::Postgres::find(args.pg_bin.as_deref())?)
        } else {
            None
        },
        shared_postgres: Env::process().text("DATABASE_URL", "postgres://postgres@127.0.0.1:5432"),
    };
    let interrupted = crate::shutdown::on_signal();
    let results = tokio::select! {
        results = run_all(&args, &scenarios, &tools, out) => results?,
        // Dropping the running scenario stops its processes and deletes its files.
        _ = interrupted.cancelled() => bail!(
            "interrupted: the scenario's processes are stopped and its database and files deleted"
        ),
    };

    let total = |field: &str| {
        results
            .iter()
            .map(|r| r[field].as_u64().unwrap_or_default())
            .sum::<u64>()
    };
    let (lost, duplicated) = (total("lost"), total("duplicated"));
    let summary = json!({
        "requests_per_scenario": args.requests,
        "rate_per_sec": args.rate,
        "accepted": total("accepted"),
        "lost": lost,
        "duplicated": duplicated,
        "scenarios": results,
    });
    report(out, &results);
    if args.json {
        println!("{summary}");
    }
    if lost > 0 || duplicated > 0 {
        bail!(
            "{lost} accepted request(s) lost and {duplicated} booked twice: rerun the scenario \
             with --keep-logs and read the consumers' logs for those transactions"
        );
    }
    Ok(())
}

async fn run_all(
    args: &Args,
    scenarios: &[Scenario],
    tools: &Tools,
    out: Out,
) -> anyhow::Result<Vec<Value>> {
    let mut results = Vec::new();
    for scenario in scenarios {
        let result = run_scenario(*scenario, args, tools, out)
            .await
            .with_context(|| format!("scenario {}", scenario.name()))?;
        results.push(result);
    }
    Ok(results)
}

/// When the fault began and ended, from the start of the load.
struct FaultTimes {
    at: Duration,
    restored: Duration,
}

async fn run_scenario(
    scenario: Scenario,
    args: &Args,
    tools: &Tools,
    out: Out,
) -> anyhow::Result<Value> {
    let down = Duration::from_secs_f64(args.down_secs.unwrap_or(scenario.default_down()));
    out.progress(format!(
        "[{}] {} ({:.1} s); {} requests at {}/s",
        scenario.name(),
        scenario.fault(),
        down.as_secs_f64(),
        args.requests,
        args.rate
    ));
    let database = match (&tools.pg_bin, scenario) {
        (Some(bin), Scenario::PostgresDown) => Database::Private(bin.clone()),
        _ => Database::Shared(tools.shared_postgres.clone()),
    };
    let mut rig = Rig::start(&tools.nats_server, database, out).await?;
    let result = exercise(scenario, down, args, &mut rig, out).await;
    if args.keep_logs {
        out.progress(format!("  logs kept in {}", rig.keep_logs().display()));
    }
    result
}

async fn exercise(
    scenario: Scenario,
    down: Duration,
    args: &Args,
    rig: &mut Rig,
    out: Out,
) -> anyhow::Result<Value> {
    rig.operator_latency(OPERATOR_LATENCY_MS).await?;
    let rgs = Arc::new(Rgs::new(
        &rig.ingress_url,
        Secret::new(rig.secret.clone()),
        args.concurrency,
        CLIENT_TIMEOUT,
    )?);
    let plan = Arc::new(Plan {
        requests: args.requests,
        rate: args.rate,
        concurrency: args.concurrency,
        run: Uuid::new_v4().simple().to_string()[..8].to_string(),
    });
    let start = Instant::now();
    let trigger = start + plan.due(args.requests / 3);
    let (tally, fault) = tokio::join!(
        load::drive(rgs, plan, start, out),
        break_and_repair(scenario, rig, trigger, down, start, out),
    );
    let fault = fault?;
    out.progress(format!(
        "  load done in {:.1} s: {} accepted, {} 5xx, {} failed requests; waiting for the pipeline to drain",
        tally.elapsed.as_secs_f64(),
        tally.accepted.len(),
        tally.http_5xx,
        tally.errors
    ));
    let drain_from = start + tally.elapsed.max(fault.restored);
    let count = settle(
        rig,
        &tally,
        drain_from,
        Duration::from_secs(args.drain_timeout_secs),
        out,
    )
    .await?;
    Ok(summary(scenario, down, args, &tally, &fault, &count))
}

/// Waits until `trigger`, breaks what `scenario` breaks, and repairs it `down` later.
async fn break_and_repair(
    scenario: Scenario,
    rig: &mut Rig,
    trigger: Instant,
    down: Duration,
    start: Instant,
    out: Out,
) -> anyhow::Result<FaultTimes> {
    tokio::time::sleep_until(trigger).await;
    let at = start.elapsed();
    out.progress(format!(
        "  {:>5.1} s  fault: {}",
        at.as_secs_f64(),
        scenario.fault()
    ));
    match scenario {
        Scenario::KillConsumer => rig.kill_consumer(),
        Scenario::NatsDown | Scenario::NatsDownLong => rig.nats.kill(),
        Scenario::PostgresDown => {
            let postgres = rig.postgres.as_mut().context("no private Postgres runs")?;
            tokio::task::block_in_place(|| postgres.stop("fast"))?;
        }
        Scenario::PartnerDown => {
            rig.operator_faults(json!({"down": true, "status": 503}))
                .await?;
        }
    }
    tokio::time::sleep(down).await;
    let restored = start.elapsed();
    match scenario {
        Scenario::KillConsumer => rig.start_consumer().await?,
        Scenario::NatsDown | Scenario::NatsDownLong => rig.nats.restart().await?,
        Scenario::PostgresDown => {
            let postgres = rig.postgres.as_mut().context("no private Postgres runs")?;
            tokio::task::block_in_place(|| postgres.start())?;
        }
        Scenario::PartnerDown => rig.operator_latency(OPERATOR_LATENCY_MS).await?,
    }
    out.progress(format!(
        "  {:>5.1} s  repaired ({:.1} s to bring it back)",
        start.elapsed().as_secs_f64(),
        (start.elapsed() - restored).as_secs_f64()
    ));
    Ok(FaultTimes { at, restored })
}

/// The end state, against what the RGS was answered.
struct Count {
    /// Accepted and both completed and booked.
    done: usize,
    /// Why the others are not: their status, or `completed, not booked`.
    lost_by: BTreeMap<String, u64>,
    /// Requests (players) the operator booked more than once.
    duplicated: u64,
    bookings: usize,
    /// Messages the wallet consumers still had.
    backlog: u64,
    drained: bool,
    drain: Duration,
    operator_calls: u64,
}

impl Count {
    fn lost(&self) -> u64 {
        self.lost_by.values().sum()
    }
}

/// Polls until everything accepted is completed and booked and the consumers are idle, or
/// `timeout` after `from`; the last look is the count.
async fn settle(
    rig: &Rig,
    tally: &Tally,
    from: Instant,
    timeout: Duration,
    out: Out,
) -> anyhow::Result<Count> {
    let deadline = Instant::now().max(from) + timeout;
    let mut last_said = Instant::now();
    let mut last: Option<Count> = None;
    let mut last_error = None;
    loop {
        match look(rig, tally).await {
            Ok(mut count) => {
                count.drain = from.elapsed();
                count.drained = count.lost() == 0 && count.backlog == 0;
                let finished = count.drained || Instant::now() > deadline;
                if finished || last_said.elapsed() >= Duration::from_secs(2) {
                    out.progress(format!(
                        "    draining: {}/{} completed and booked, {} messages in the consumers",
                        count.done,
                        tally.accepted.len(),
                        count.backlog
                    ));
                    last_said = Instant::now();
                }
                last = Some(count);
                if finished {
                    break;
                }
            }
            Err(err) => {
                if last_said.elapsed() >= Duration::from_secs(2) {
                    out.progress(format!("    draining: cannot count yet ({err:#})"));
                    last_said = Instant::now();
                }
                last_error = Some(err);
                if Instant::now() > deadline {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut count = match (last, last_error) {
        (Some(count), _) => count,
        (None, Some(err)) => return Err(err.context("could not count the outcome")),
        (None, None) => bail!("could not count the outcome"),
    };
    if !count.drained {
        out.progress(format!(
            "  not drained after {} s: counting what is there (raise --drain-timeout-secs to wait longer)",
            timeout.as_secs()
        ));
    }
    count.operator_calls = rig.operator_calls().await.unwrap_or_default();
    Ok(count)
}

async fn look(rig: &Rig, tally: &Tally) -> anyhow::Result<Count> {
    let db = rig.db.as_ref().context("no database connection")?;
    let statuses: HashMap<String, String> =
        sqlx::query_as("SELECT id::text, status FROM wallet_transactions")
            .fetch_all(db)
            .await
            .context("could not read wallet_transactions")?
            .into_iter()
            .collect();
    let mut booked: HashMap<String, Vec<String>> = HashMap::new();
    let bookings = client::booked_since(&rig.http, &rig.operator_url, 0).await?;
    for booking in &bookings {
        booked
            .entry(booking.player_id.clone())
            .or_default()
            .push(booking.external_transaction_id.clone());
    }
    let bus = rig.bus.as_ref().context("no NATS connection")?;
    let backlog = client::backlog(bus).await?;
    let mut count = Count {
        done: 0,
        lost_by: BTreeMap::new(),
        duplicated: booked.values().filter(|ids| ids.len() > 1).count() as u64,
        bookings: bookings.len(),
        backlog,
        drained: false,
        drain: Duration::ZERO,
        operator_calls: 0,
    };
    for accepted in &tally.accepted {
        let status = statuses.get(&accepted.transaction_id).map(String::as_str);
        let is_booked = booked
            .get(&accepted.player_id)
            .is_some_and(|ids| ids.contains(&accepted.transaction_id));
        let why = match (status, is_booked) {
            (Some("completed"), true) => {
                count.done += 1;
                continue;
            }
            (Some("completed"), false) => "completed, not booked".to_string(),
            (Some(status), _) => status.to_string(),
            (None, _) => "not in the database".to_string(),
        };
        *count.lost_by.entry(why).or_default() += 1;
    }
    Ok(count)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn summary(
    scenario: Scenario,
    down: Duration,
    args: &Args,
    tally: &Tally,
    fault: &FaultTimes,
    count: &Count,
) -> Value {
    let window = match (tally.first_bad, tally.last_bad) {
        (Some(first), Some(last)) => json!({
            "from_secs": secs(first),
            "to_secs": secs(last),
            "secs": secs(last - first),
        }),
        _ => Value::Null,
    };
    let max_accept = tally
        .accepted
        .iter()
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    json!({
        "scenario": scenario.name(),
        "fault": scenario.fault(),
        "down_secs": secs(down),
        "requests": args.requests,
        "accepted": tally.accepted.len(),
        "lost": count.lost(),
        "lost_by": count.lost_by,
        "duplicated": count.duplicated,
        "refused": tally.refused,
        "first_refusal": tally.first_refusal,
        "unanswered": tally.unanswered,
        "http_5xx": tally.http_5xx,
        "failed_requests": tally.errors,
        "first_failure": tally.first_error,
        "unavailable_window": window,
        "fault_at_secs": secs(fault.at),
        "repaired_at_secs": secs(fault.restored),
        "load_secs": secs(tally.elapsed),
        "max_accept_secs": secs(max_accept),
        "drained": count.drained,
        "drain_secs": secs(count.drain),
        "operator_calls": count.operator_calls,
        "operator_bookings": count.bookings,
    })
}

fn report(out: Out, results: &[Value]) {
    out.progress(String::new());
    out.progress(format!(
        "{:<15} {:>6} {:>8} {:>5} {:>5} {:>6} {:>7} {:>19} {:>8} {:>11}",
        "scenario",
        "down",
        "accepted",
        "lost",
        "dup",
        "5xx",
        "failed",
        "5xx window",
        "drain",
        "max accept"
    ));
    for r in results {
        let window = if r["unavailable_window"].is_null() {
            "-".to_string()
        } else {
            format!(
                "{} s ({}–{})",
                r["unavailable_window"]["secs"],
                r["unavailable_window"]["from_secs"],
                r["unavailable_window"]["to_secs"]
            )
        };
        let drain = if r["drained"].as_bool() == Some(true) {
            format!("{} s", r["drain_secs"])
        } else {
            format!(">{} s", r["drain_secs"])
        };
        let cell = |field: &str| match &r[field] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        out.progress(format!(
            "{:<15} {:>4} s {:>8} {:>5} {:>5} {:>6} {:>7} {:>19} {:>8} {:>9} s",
            cell("scenario"),
            cell("down_secs"),
            cell("accepted"),
            cell("lost"),
            cell("duplicated"),
            cell("http_5xx"),
            cell("failed_requests"),
            window,
            drain,
            cell("max_accept_secs"),
        ));
        for (why, n) in r["lost_by"].as_object().into_iter().flatten() {
            out.progress(format!("    lost: {n} {why}"));
        }
        if r["refused"].as_u64().unwrap_or_default() > 0 {
            out.progress(format!(
                "    refused: {} (first: {})",
                r["refused"], r["first_refusal"]
            ));
        }
        if r["unanswered"].as_u64().unwrap_or_default() > 0 {
            out.progress(format!("    never answered 2xx: {}", r["unanswered"]));
        }
    }
    out.progress(
        "(5xx window: from the sending of the first request answered 5xx or failed to the end of \
         the last, seconds from the start of the load; drain: from the repair, or the end of the load when later, until everything \
         accepted is completed and booked)",
    );
}
