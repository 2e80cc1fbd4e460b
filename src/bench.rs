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
    let payload = Bytes::from(vec![b'x'; 256]);
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (js, subject, payload, published) = (
            bus.js.clone(),
            subject.clone(),
            payload.clone(),
            published.clone(),
        );
        workers.spawn(async move {
            while Instant::now() < deadline {
                js.publish(subject.clone(), payload.clone()).await?.await?;
                published.fetch_add(1, Ordering::Relaxed);
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
    let _ = bus.js.delete_stream(&name).await;
    result?;
    Ok(published.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}
