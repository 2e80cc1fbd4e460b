//! The durable-consumer runtime. Stages decide; the runtime acks.
//!
//! [`run`] binds a durable pull consumer (created by `ihub setup` from `nats/consumers/`) and
//! hands each message to a [`Stage`], at most `concurrency` at a time. Any number of processes
//! may bind the same durable: JetStream shares the messages between them. What the stage
//! returns decides the message's fate:
//!
//! * `Ok(())` → ack;
//! * [`Failure::Retry`] with attempts left → NAK with the delay the target's [`Schedule`] gives
//!   for this delivery count (with jitter, or the partner's `Retry-After` if longer);
//! * [`Failure::Permanent`], or a retry with no attempts left → [`Stage::dead_lettered`] moves
//!   the business record to its blocked state, the message is published to `dlq.<consumer>`
//!   with its origin and error in headers ([`dlq`]), then terminated.
//!
//! Long calls send in-progress acks so `ack_wait` does not expire under them. A [`Breaker`] per
//! target stops pulling while the partner keeps failing. On shutdown the runner stops pulling,
//! hands prefetched messages back (NAK), lets the messages in hand finish, and returns: nothing
//! is lost, and a process killed outright has its messages redelivered after `ack_wait`.

mod breaker;
pub mod dlq;
mod schedule;

pub use breaker::Breaker;
pub use schedule::{MAX_RETRY_AFTER, Schedule};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::nats::Bus;

/// Why a stage did not finish a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again later (5xx, 429, 408, timeouts, a database hiccup).
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed as it is (4xx, a malformed message).
    Permanent { error: String },
}

impl Failure {
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Failure::Retry {
            error: error.to_string(),
            retry_after: None,
        }
    }
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        Failure::Permanent {
            error: error.to_string(),
        }
    }
    pub fn error(&self) -> &str {
        match self {
            Failure::Retry { error, .. } | Failure::Permanent { error } => error,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.error())
    }
}

impl std::error::Error for Failure {}

/// Unexpected errors (database, NATS) are worth retrying.
impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::retry(format!("{err:#}"))
    }
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        Failure::retry(format!("database: {err}"))
    }
}

pub type StageResult = Result<(), Failure>;

/// One step of an integration: consumes a message, changes state, maybe publishes the next.
/// It never acks, sleeps or retries by itself.
pub trait Stage: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = StageResult> + Send;

    /// Called once before the message goes to the DLQ: record the blocked state.
    fn dead_lettered(
        &self,
        _delivery: &Delivery,
        _error: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// A message as a stage sees it.
pub struct Delivery {
    message: jetstream::Message,
    subject: String,
    /// 1 on the first delivery.
    pub delivered: u64,
    pub stream_seq: u64,
    pub stream: String,
}

impl Delivery {
    /// The subject without the deployment prefix, e.g. `out.operator.withdraw`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    pub fn headers(&self) -> Option<&async_nats::HeaderMap> {
        self.message.headers.as_ref()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()?.get(name).map(|v| v.as_str())
    }

    /// The payload as JSON; a payload that does not parse is permanent (it never will).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_slice(self.payload()).map_err(|err| {
            Failure::permanent(format!("payload on {} does not parse: {err}", self.subject))
        })
    }
}

/// How one durable consumer runs.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The durable's name, as in `nats/consumers/<STREAM>/<durable>.json`.
    pub durable: &'static str,
    pub stream: &'static str,
    pub schedule: Schedule,
    pub concurrency: usize,
    /// (failures in a row, open time)
    pub breaker: Option<(u32, Duration)>,
}

struct Runner<S> {
    bus: Bus,
    spec: Spec,
    stage: Arc<S>,
    breaker: Option<Breaker>,
    progress_every: Duration,
    /// The consumer's own `max_deliver`, when an operator set one.
    max_deliver: Option<u64>,
}

/// Runs `stage` on the durable `spec.durable` until `shutdown` is cancelled.
pub async fn run<S: Stage>(
    bus: Bus,
    spec: Spec,
    stage: Arc<S>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stream = bus.stream(spec.stream).await?;
    let mut consumer: PullConsumer = stream
        .get_consumer(spec.durable)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))
        .with_context(|| {
            format!(
                "consumer {} on {} not found: run `ihub setup` first",
                spec.durable,
                bus.names.stream(spec.stream)
            )
        })?;
    let info = consumer.info().await?.config.clone();
    let runner = Arc::new(Runner {
        breaker: spec.breaker.map(|(n, open)| Breaker::new(n, open)),
        progress_every: (info.ack_wait / 3).max(Duration::from_millis(50)),
        max_deliver: u64::try_from(info.max_deliver).ok().filter(|n| *n > 0),
        bus,
        spec,
        stage,
    });
    tracing::info!(
        consumer = runner.spec.durable,
        concurrency = runner.spec.concurrency,
        attempts = runner.spec.schedule.attempts(),
        "consumer running"
    );

    let permits = Arc::new(Semaphore::new(runner.spec.concurrency));
    let tasks = TaskTracker::new();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(runner.spec.concurrency)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;

    loop {
        if let Some(wait) = runner.breaker.as_ref().and_then(Breaker::open_remaining) {
            tracing::warn!(
                consumer = runner.spec.durable,
                ?wait,
                "circuit open: pausing"
            );
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit?,
        };
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                let runner = runner.clone();
                tasks.spawn(async move {
                    runner.process(message).await;
                    drop(permit);
                });
            }
            Some(Err(err)) => {
                tracing::warn!(consumer = runner.spec.durable, %err, "pull failed; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => {
                tracing::warn!(
                    consumer = runner.spec.durable,
                    "pull stream ended; rebinding"
                );
                consumer = stream
                    .get_consumer(runner.spec.durable)
                    .await
                    .map_err(|err| anyhow::anyhow!("{err}"))?;
                messages = consumer
                    .stream()
                    .max_messages_per_batch(runner.spec.concurrency)
                    .messages()
                    .await?;
            }
        }
    }

    // Hand prefetched messages back at once rather than after ack_wait. A message handed back
    // can come straight back to this pull while its request is still open: each is handed back
    // once, and for a bounded time, or shutdown would spin on it.
    let mut handed_back = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
        messages.next(),
    )
    .await
    {
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let _ = message.ack_with(AckKind::Nak(None)).await;
        if !handed_back.insert(seq) {
            break;
        }
    }
    let handed_back = handed_back.len();
    tasks.close();
    tasks.wait().await;
    let _ = runner.bus.client.flush().await;
    tracing::info!(
        consumer = runner.spec.durable,
        handed_back,
        "consumer stopped"
    );
    Ok(())
}

impl<S: Stage> Runner<S> {
    async fn process(&self, message: jetstream::Message) {
        let (delivered, stream_seq, stream) = match message.info() {
            Ok(info) => (
                info.delivered.max(1) as u64,
                info.stream_sequence,
                info.stream.to_string(),
            ),
            Err(err) => {
                tracing::error!(%err, "message without JetStream metadata; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let subject = self.bus.names.unprefixed(&message.subject).to_string();
        let span = tracing::info_span!(
            "consume",
            otel.name = format!("{} {}", self.spec.durable, subject),
            otel.kind = "consumer",
            consumer = self.spec.durable,
            subject = %subject,
            delivered,
            stream_seq,
        );
        crate::telemetry::continue_from_nats(&span, message.headers.as_ref());
        let delivery = Delivery {
            message,
            subject,
            delivered,
            stream_seq,
            stream,
        };
        self.decide(delivery).instrument(span).await;
    }

    fn attempts(&self) -> u64 {
        let planned = u64::from(self.spec.schedule.attempts());
        self.max_deliver.map_or(planned, |cap| planned.min(cap))
    }

    async fn decide(&self, delivery: Delivery) {
        if delivery.delivered > self.attempts() {
            // Delivered more often than it may be tried (a crash loop, a lowered limit).
            let error = format!("exhausted after {} deliveries", delivery.delivered - 1);
            return self.dead_letter(&delivery, &error).await;
        }
        if let Some(Err(wait)) = self.breaker.as_ref().map(Breaker::allow) {
            return self.nak(&delivery, wait).await;
        }

        let result = self.with_progress(&delivery).await;

        match result {
            Ok(()) => {
                self.breaker.as_ref().map(Breaker::succeeded);
                if let Err(err) = delivery.message.ack().await {
                    tracing::warn!(%err, "ack failed; the message will be redelivered");
                }
            }
            Err(Failure::Retry { error, retry_after }) => {
                self.breaker.as_ref().map(Breaker::failed);
                if delivery.delivered >= self.attempts() {
                    let error = format!(
                        "{error} (attempt {} of {})",
                        delivery.delivered,
                        self.attempts()
                    );
                    self.dead_letter(&delivery, &error).await;
                } else {
                    let delay = self
                        .spec
                        .schedule
                        .next_delay(delivery.delivered, retry_after);
                    tracing::warn!(
                        attempt = delivery.delivered,
                        of = self.attempts(),
                        retry_in_ms = delay.as_millis() as u64,
                        error,
                        "attempt failed; will retry"
                    );
                    self.nak(&delivery, delay).await;
                }
            }
            Err(Failure::Permanent { error }) => {
                // The partner answered: it is up, whatever it said.
                self.breaker.as_ref().map(Breaker::succeeded);
                self.dead_letter(&delivery, &error).await;
            }
        }
    }

    /// Runs the stage, telling JetStream it is still working every third of `ack_wait`.
    async fn with_progress(&self, delivery: &Delivery) -> StageResult {
        let work = self.stage.handle(delivery);
        tokio::pin!(work);
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.progress_every,
            self.progress_every,
        );
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = ticks.tick() => {
                    let _ = delivery.message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) {
        if let Err(err) = delivery.message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(%err, "nak failed; the message returns after ack_wait");
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str) {
        let result = async {
            self.stage
                .dead_lettered(delivery, error)
                .await
                .context("recording the blocked state")?;
            dlq::publish(&self.bus, self.spec.durable, delivery, error).await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::error!(
                    consumer = self.spec.durable,
                    error,
                    "dead-lettered: inspect with `ihub dlq list`, replay with `ihub dlq replay`"
                );
                if let Err(err) = delivery.message.ack_with(AckKind::Term).await {
                    tracing::warn!(%err, "term failed; the message may be dead-lettered twice");
                }
            }
            Err(err) => {
                // Never drop a message we could not park: try the whole thing again later.
                tracing::error!(
                    error = format!("{err:#}"),
                    "could not dead-letter; retrying"
                );
                self.nak(delivery, Duration::from_secs(5)).await;
            }
        }
    }
}
