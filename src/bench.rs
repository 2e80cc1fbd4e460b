//! What every `ihub bench` scenario shares: its phases, latency samples, and the raw JetStream
//! baseline it compares the hub with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::stream;
use bytes::Bytes;
use uuid::Uuid;

use crate::nats::Bus;

/// What a load scenario is asked to do (`ihub bench`'s options it reads).
#[derive(Clone, Debug)]
pub struct Load {
    /// The hub's ingress, when not where its settings say.
    pub url: Option<String>,
    /// Requests (and raw publishes) in flight at once.
    pub concurrency: usize,
    /// Seconds per phase.
    pub duration: u64,
    /// Requests/s for the end-to-end phase, when given.
    pub e2e_rate: Option<f64>,
    pub phases: Vec<Phase>,
    /// One JSON object on stdout, progress on stderr.
    pub json: bool,
}

impl Load {
    /// Requests in flight at once (at least one).
    pub fn in_flight(&self) -> usize {
        self.concurrency.max(1)
    }

    /// How long each phase runs (at least a second).
    pub fn phase(&self) -> Duration {
        Duration::from_secs(self.duration.max(1))
    }

    /// The hub's ingress: `--url`, else where `HTTP_ADDR` says `ihub dev` listens.
    pub fn ingress(&self, cfg: &crate::config::Config) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", cfg.http_addr),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Plain JetStream publishes, each ack awaited.
    Raw,
    /// Signed requests as fast as the callers can send them.
    Accept,
    /// Requests at a fixed rate, timed to the partner mock.
    E2e,
}

/// Latencies in microseconds.
#[derive(Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((p * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        Duration::from_micros(self.0[rank - 1])
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Plain JetStream publishes of 256 bytes, each ack awaited, `concurrency` in flight, to a
/// scratch stream (deleted after): messages/s.
pub async fn raw_baseline(
    bus: &Bus,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let id = Uuid::new_v4().simple().to_string()[..8].to_string();
    let name = bus.names.stream(&format!("BENCH_RAW_{id}"));
    let subject = bus.names.subject(&format!("bench.raw.{id}"));
    bus.js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("could not create the scratch stream")?;
    let js = bus.js.clone();
    let result = as_fast_as_possible(concurrency, duration, move |payload| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.publish(subject, payload).await?.await?;
            anyhow::Ok(())
        }
    })
    .await;
    let _ = bus.js.delete_stream(&name).await;
    result
}

/// Runs `op` on a 256-byte payload in `concurrency` loops for `duration`: completions/s.
async fn as_fast_as_possible<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<f64>
where
    F: Fn(Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let payload = Bytes::from(vec![b'x'; 256]);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (op, payload, done) = (op.clone(), payload.clone(), done.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                op(payload.clone()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    let result = workers
        .join_all()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>();
    let elapsed = started.elapsed();
    result?;
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// Plain NATS request/reply of 256 bytes to a responder in this process (a queue subscription
/// on a scratch subject), `concurrency` in flight: round trips/s. The floor of a service call.
pub async fn raw_request_reply(
    bus: &Bus,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    use futures::StreamExt as _;
    let subject = bus.names.subject(&format!(
        "bench.reply.{}",
        &Uuid::new_v4().simple().to_string()[..8]
    ));
    let mut requests = bus
        .client
        .queue_subscribe(subject.clone(), "q".into())
        .await?;
    let client = bus.client.clone();
    let responder = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = client.publish(reply, request.payload).await;
            }
        }
    });
    bus.client.flush().await?;
    let client = bus.client.clone();
    let result = as_fast_as_possible(concurrency, duration, move |payload| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            client.request(subject, payload).await?;
            anyhow::Ok(())
        }
    })
    .await;
    responder.abort();
    result
}

/// One request a load source sent: what it was about, when it left (unix µs), its answer's
/// status and how long that took.
pub struct Sent<Id> {
    pub id: Id,
    pub sent_at_us: i64,
    pub latency: Duration,
    pub status: u16,
}

/// Sends `request`, timed until its whole answer is read.
pub async fn timed(request: reqwest::RequestBuilder) -> anyhow::Result<Sent<()>> {
    let sent_at_us = chrono::Utc::now().timestamp_micros();
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(Sent {
        id: (),
        sent_at_us,
        latency: started.elapsed(),
        status,
    })
}

/// What a scenario sends: each call sends one request.
pub trait Source: Send + Sync + 'static {
    /// What each request is about (a transaction id, an order id).
    type Id: Send + 'static;
    /// What it sends, for messages ("requests", "events").
    const WHAT: &'static str;
    /// The secret that must be the hub's for anything to be accepted.
    const SECRET_VAR: &'static str;
    /// The status of an accepted request (202 for what goes on through a stream, 200 for an
    /// answer given at once).
    const ACCEPTED: u16 = 202;

    fn send(&self) -> impl std::future::Future<Output = anyhow::Result<Sent<Self::Id>>> + Send;
}

/// Sends as fast as `concurrency` callers can for `duration`, showing the rate each second:
/// (accepted/s, accepted, latencies of the accepted).
pub async fn closed_loop<S: Source>(
    source: &Arc<S>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(f64, u64, Samples)> {
    use tokio::sync::Mutex;
    let latencies = Arc::new(Mutex::new(Samples::default()));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(Mutex::new((0u64, None::<String>)));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (source, latencies, accepted, refused) = (
            source.clone(),
            latencies.clone(),
            accepted.clone(),
            refused.clone(),
        );
        workers.spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                let why = match source.send().await {
                    Ok(sent) if sent.status == S::ACCEPTED => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        mine.push(sent.latency.as_micros() as u64);
                        continue;
                    }
                    Ok(sent) => format!("HTTP {}", sent.status),
                    Err(err) => format!("{err:#}"),
                };
                let mut r = refused.lock().await;
                r.0 += 1;
                r.1.get_or_insert(why);
            }
            latencies.lock().await.0.extend(mine);
        });
    }
    let progress = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = accepted.load(Ordering::Relaxed);
                crate::say!(
                    "      {:>3} s  {:>7} accepted/s",
                    started.elapsed().as_secs(),
                    now - last
                );
                last = now;
            }
        })
    };
    workers.join_all().await;
    progress.abort();
    let elapsed = started.elapsed();
    let (refused_count, first_refusal) = refused.lock().await.clone();
    if refused_count > 0 {
        crate::say!(
            "      {refused_count} {} not accepted (first: {})",
            S::WHAT,
            first_refusal.unwrap_or_default()
        );
    }
    let accepted = accepted.load(Ordering::Relaxed);
    if accepted == 0 {
        anyhow::bail!(
            "the hub accepted no {}; is {} the hub's?",
            S::WHAT,
            S::SECRET_VAR
        );
    }
    let samples = std::mem::take(&mut *latencies.lock().await);
    Ok((accepted as f64 / elapsed.as_secs_f64(), accepted, samples))
}

/// Sends at `rate` per second for `duration`, open loop (at most 1024 in flight): what was
/// accepted.
pub async fn open_loop<S: Source>(
    source: &Arc<S>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Vec<Sent<S::Id>>> {
    use tokio::sync::{Mutex, Semaphore};
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let in_flight = Arc::new(Semaphore::new(1024));
    let sent = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (source, sent) = (source.clone(), sent.clone());
        tasks.spawn(async move {
            if let Ok(s) = source.send().await
                && s.status == S::ACCEPTED
            {
                sent.lock().await.push(s);
            }
            drop(permit);
        });
    }
    tasks.join_all().await;
    Ok(std::mem::take(&mut *sent.lock().await))
}

/// Waits until `backlog` is zero, showing it each second; gives up after 5 minutes.
pub async fn wait_for_consumers<F, Fut>(backlog: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let give_up = Instant::now() + Duration::from_secs(300);
    let mut shown = Instant::now();
    loop {
        let backlog = backlog().await?;
        if backlog == 0 {
            return Ok(());
        }
        if Instant::now() > give_up {
            anyhow::bail!(
                "the consumers still have {backlog} messages after 5 minutes; are they running?"
            );
        }
        if shown.elapsed() >= Duration::from_secs(1) {
            crate::say!("      waiting for the consumers: {backlog} messages pending");
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The human report (stdout, or stderr under `--json`), then the one JSON summary on stdout.
pub fn print_results(
    title: &str,
    duration: Duration,
    report: &[String],
    json: bool,
    summary: &serde_json::Value,
) {
    crate::say!("\nresults ({title}, {} s per phase)", duration.as_secs());
    for line in report {
        crate::say!("{line}");
    }
    if json {
        println!("{summary}");
    }
}
