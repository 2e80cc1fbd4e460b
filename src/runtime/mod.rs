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
//!   with its origin and error in headers ([`dlq`]), then terminated;
//! * [`Failure::Outage`] (Postgres or NATS unreachable: the hub's own dependency, not the
//!   message nor the partner) → the runner holds the message, keeping it alive with
//!   in-progress acks, and runs the stage again with a short backoff until it gets through.
//!   An outage costs no attempt and never counts against the partner's breaker; with every
//!   permit held, the consumer stops pulling until the dependency is back.
//! * [`Failure::Park`] (this message waits until its key is ready) → the message goes to the
//!   `PARKED` stream for (consumer, key), [`Stage::parked`] checks the key again, and the
//!   original is acked; [`park::release`] later runs the key's parked messages again, in the
//!   order they were parked ([`park`]: the rule that closes the race). A park spends no
//!   attempt and tells the breaker nothing; messages of other keys never wait.
//!
//! Long calls send in-progress acks so `ack_wait` does not expire under them. A [`Breaker`] per
//! target stops pulling while the partner keeps failing; it counts only the partner's failures. On shutdown the runner stops pulling,
//! hands prefetched messages back (NAK), lets the messages in hand finish, and returns: nothing
//! is lost, and a process killed outright has its messages redelivered after `ack_wait`.

mod breaker;
mod consumer;
pub mod dlq;
pub mod group_commit;
pub mod park;
mod schedule;
pub mod service;
pub mod shared_breaker;

pub use breaker::Breaker;
pub use consumer::{Consumer, Context, Worker};
pub use park::Readiness;
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

use crate::http_client::{Response, Verdict};
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
    /// The hub's own dependency (Postgres, NATS) is unreachable: try again shortly, as often
    /// as it takes, without spending an attempt or blaming the partner.
    Outage { error: String },
    /// Not yet: the message waits in `PARKED` until `key` is released ([`park`]). Not a
    /// failure: no attempt is spent, the breaker is not told.
    Park { key: String, reason: String },
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
    pub fn outage(error: impl std::fmt::Display) -> Self {
        Failure::Outage {
            error: error.to_string(),
        }
    }
    /// Park the message until `key` is released (see [`park`]).
    pub fn park(key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Failure::Park {
            key: key.into(),
            reason: reason.to_string(),
        }
    }
    pub fn error(&self) -> &str {
        match self {
            Failure::Retry { error, .. }
            | Failure::Permanent { error }
            | Failure::Outage { error } => error,
            Failure::Park { reason, .. } => reason,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.error())
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// What a partner's answer other than success means: a permanent refusal, or a retry
    /// (with the partner's `Retry-After`).
    pub fn of_response(response: &Response) -> Self {
        match response.verdict() {
            Verdict::Permanent => Failure::permanent(response.describe()),
            _ => Failure::Retry {
                error: response.describe(),
                retry_after: response.retry_after(),
            },
        }
    }
}

/// A database error is an outage or permanent by its kind (see `From<sqlx::Error>`); NATS not
/// storing or answering in time ([`crate::nats::Unavailable`]) is an outage; anything else
/// unexpected is worth retrying.
impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        let text = format!("{err:#}");
        match err.downcast_ref::<sqlx::Error>() {
            Some(db) if crate::db::is_transient(db) => Failure::outage(text),
            Some(_) => Failure::permanent(text),
            None if err.downcast_ref::<crate::nats::Unavailable>().is_some() => {
                Failure::outage(text)
            }
            None => Failure::retry(text),
        }
    }
}

/// A connection, timeout or serialization failure is an outage of the database, tried again
/// shortly; a constraint violation or data the database refuses is permanent at once.
impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_transient(&err) {
            Failure::outage(format!("database: {err}"))
        } else {
            Failure::permanent(format!("database: {err}"))
        }
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

    /// Called once a message this stage parked ([`Failure::Park`]) is stored in `PARKED`,
    /// before the original is acked: record the parked state, and check the key's readiness
    /// again. [`Readiness::Ready`] (it became ready meanwhile) has the runtime release the key
    /// at once; see [`park`] for why this closes the race with a release. An error holds the
    /// message and parks it again later (stored once).
    fn parked(
        &self,
        _delivery: &Delivery,
        _key: &str,
        _reason: &str,
    ) -> impl Future<Output = anyhow::Result<Readiness>> + Send {
        async { Ok(Readiness::Waiting) }
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

    /// Its headers to carry on a copy stored elsewhere (the DLQ, `PARKED`): the original ones
    /// but `Nats-Msg-Id`, plus where it came from (`Ihub-Original-*`), so that it can go back.
    pub(crate) fn carried_headers(&self, bus: &Bus) -> async_nats::HeaderMap {
        use crate::nats::headers;
        let mut carried = async_nats::HeaderMap::new();
        let mut original_msg_id = None;
        for (name, values) in self.headers().into_iter().flat_map(|h| h.iter()) {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(async_nats::header::NATS_MESSAGE_ID.as_ref()) {
                original_msg_id = values.first().map(|v| v.as_str().to_string());
                continue;
            }
            for value in values {
                carried.append(name, value.as_str());
            }
        }
        carried.insert(
            headers::ORIGINAL_SUBJECT,
            bus.names.subject(self.subject()).as_str(),
        );
        carried.insert(headers::ORIGINAL_STREAM, self.stream.as_str());
        carried.insert(headers::ORIGINAL_SEQ, self.stream_seq.to_string().as_str());
        if let Some(id) = original_msg_id {
            carried.insert(headers::ORIGINAL_MSG_ID, id.as_str());
        }
        carried
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

impl Spec {
    /// Without a circuit breaker: for stages (a database hiccup is not a partner that keeps
    /// failing) and for targets that are many partners at once.
    pub fn without_breaker(self) -> Self {
        Self {
            breaker: None,
            ..self
        }
    }

    pub fn with_concurrency(self, concurrency: usize) -> Self {
        Self {
            concurrency: concurrency.max(1),
            ..self
        }
    }
}

struct Runner<S> {
    /// Where this process reports its breaker's changes (`ihub status` reads them).
    breaker_report: Option<(async_nats::jetstream::kv::Store, String)>,
    bus: Bus,
    spec: Spec,
    stage: Arc<S>,
    breaker: Option<Breaker>,
    progress_every: Duration,
    /// The consumer's own `max_deliver`, when an operator set one.
    max_deliver: Option<u64>,
    shutdown: CancellationToken,
}

/// A consumer bound to its durable and pulling: await it to run until shutdown.
pub struct Pulling(futures::future::BoxFuture<'static, anyhow::Result<()>>);

impl std::future::IntoFuture for Pulling {
    type Output = anyhow::Result<()>;
    type IntoFuture = futures::future::BoxFuture<'static, anyhow::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

/// Runs `stage` on the durable `spec.durable` until `shutdown` is cancelled.
pub async fn run<S: Stage>(
    bus: Bus,
    spec: Spec,
    stage: Arc<S>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(bus, spec, stage, shutdown).await?.await
}

/// Binds the durable `spec.durable` and starts pulling; resolves once messages can flow (or
/// with why they cannot: no such consumer, NATS gone). The returned [`Pulling`] hands each
/// message to `stage` until `shutdown` is cancelled.
pub async fn start<S: Stage>(
    bus: Bus,
    spec: Spec,
    stage: Arc<S>,
    shutdown: CancellationToken,
) -> anyhow::Result<Pulling> {
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
    let breaker_report = match spec.breaker {
        Some(_) => bus
            .kv(shared_breaker::SharedBreaker::BUCKET)
            .await
            .ok()
            .map(|kv| (kv, shared_breaker::reported_key(spec.durable))),
        None => None,
    };
    let runner = Arc::new(Runner {
        breaker_report,
        breaker: spec.breaker.map(|(n, open)| Breaker::new(n, open)),
        progress_every: (info.ack_wait / 3).max(Duration::from_millis(50)),
        max_deliver: u64::try_from(info.max_deliver).ok().filter(|n| *n > 0),
        bus,
        spec,
        stage,
        shutdown: shutdown.clone(),
    });
    let messages = pull_messages(&consumer, runner.spec.concurrency).await?;
    tracing::info!(
        consumer = runner.spec.durable,
        concurrency = runner.spec.concurrency,
        attempts = runner.spec.schedule.attempts(),
        "consumer running"
    );
    Ok(Pulling(Box::pin(runner.pull(stream, messages, shutdown))))
}

/// The server sends an idle heartbeat this often while a pull request waits; two missed mean
/// the request is gone (its server died, or the consumer's leader moved to another node of a
/// cluster) and the runtime pulls again: consumers resume within twice this after a failover.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// The pull of a consumer process: at most `concurrency` messages per request, with idle
/// heartbeats, so that a request lost with the server holding it is noticed.
async fn pull_messages(
    consumer: &PullConsumer,
    concurrency: usize,
) -> anyhow::Result<jetstream::consumer::pull::Stream> {
    Ok(consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .heartbeat(PULL_HEARTBEAT)
        .expires(Duration::from_secs(30))
        .messages()
        .await?)
}

/// What becomes of a message once its stage has run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Ack,
    /// Redeliver after this long.
    Retry(Duration),
    /// Park it in the DLQ with this reason.
    DeadLetter(String),
    /// Park it in `PARKED` until `key` is released.
    Park {
        key: String,
        reason: String,
    },
}

/// The runtime's rule: success acks; a retry with attempts left waits the schedule's delay
/// (or the partner's `Retry-After`); a permanent failure, or a retry on the last attempt,
/// dead-letters.
fn fate(result: &StageResult, delivered: u64, attempts: u64, schedule: &Schedule) -> Fate {
    match result {
        Ok(()) => Fate::Ack,
        Err(Failure::Park { key, reason }) => Fate::Park {
            key: key.clone(),
            reason: reason.clone(),
        },
        Err(Failure::Permanent { error }) => Fate::DeadLetter(error.clone()),
        Err(Failure::Retry { error, .. }) if delivered >= attempts => {
            Fate::DeadLetter(format!("{error} (attempt {delivered} of {attempts})"))
        }
        Err(Failure::Retry { retry_after, .. }) => {
            Fate::Retry(schedule.next_delay(delivered, *retry_after))
        }
        // Only when shutting down while held: another process, or this one restarted, goes on.
        Err(Failure::Outage { .. }) => Fate::Retry(OUTAGE_BACKOFF_MAX),
    }
}

/// The longest pause between two tries of a message held through an outage.
const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl<S: Stage> Runner<S> {
    /// Pulls until `shutdown`, at most `concurrency` messages in hand; then hands prefetched
    /// messages back and lets those in hand finish.
    async fn pull(
        self: Arc<Self>,
        stream: jetstream::stream::Stream,
        mut messages: jetstream::consumer::pull::Stream,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(self.spec.concurrency));
        let tasks = TaskTracker::new();
        loop {
            if let Some(wait) = self.breaker.as_ref().and_then(Breaker::open_remaining) {
                tracing::warn!(consumer = self.spec.durable, ?wait, "circuit open: pausing");
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
                    let runner = self.clone();
                    tasks.spawn(async move {
                        runner.process(message).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    tracing::warn!(consumer = self.spec.durable, %err, "pull failed; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // The server holding our pull request went (in a cluster, the consumer's
                    // leader moved): pull anew instead of waiting for the request to expire.
                    if err.kind() == jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat
                    {
                        match self.pull_again(&stream, &shutdown).await? {
                            Some(fresh) => messages = fresh,
                            None => break,
                        }
                    }
                }
                None => {
                    tracing::warn!(consumer = self.spec.durable, "pull stream ended; rebinding");
                    match self.pull_again(&stream, &shutdown).await? {
                        Some(fresh) => messages = fresh,
                        None => break,
                    }
                }
            }
        }

        // Hand prefetched messages back at once rather than after ack_wait. A message handed
        // back can come straight back to this pull while its request is still open: each is
        // handed back once, and for a bounded time, or shutdown would spin on it.
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
        let _ = self.bus.client.flush().await;
        tracing::info!(
            consumer = self.spec.durable,
            handed_back,
            "consumer stopped"
        );
        Ok(())
    }

    /// Binds the durable again and pulls, retrying while JetStream cannot answer (a consumer
    /// without a leader during an election); an error when the consumer is gone, None once
    /// `shutdown` is cancelled.
    async fn pull_again(
        &self,
        stream: &jetstream::stream::Stream,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<jetstream::consumer::pull::Stream>> {
        use jetstream::context::ConsumerInfoErrorKind as Kind;
        loop {
            // Bounded: a consumer without a leader may leave the request unanswered.
            let info = tokio::time::timeout(
                Duration::from_secs(2),
                stream.consumer_info(self.spec.durable),
            )
            .await
            .unwrap_or_else(|_| Err(Kind::TimedOut.into()));
            match info {
                Err(err) if matches!(err.kind(), Kind::NotFound | Kind::StreamNotFound) => {
                    anyhow::bail!("consumer {} is gone: {err}", self.spec.durable)
                }
                Err(err) => {
                    tracing::warn!(consumer = self.spec.durable, %err, "cannot pull yet; retrying")
                }
                Ok(_) => {
                    let pulled = async {
                        let consumer: PullConsumer = stream
                            .get_consumer(self.spec.durable)
                            .await
                            .map_err(|err| anyhow::anyhow!("{err}"))?;
                        pull_messages(&consumer, self.spec.concurrency).await
                    };
                    match pulled.await {
                        Ok(messages) => return Ok(Some(messages)),
                        Err(err) => tracing::warn!(
                            consumer = self.spec.durable,
                            %err,
                            "cannot pull yet; retrying"
                        ),
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

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
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.consumer.group.name = self.spec.durable,
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
        let _in_flight = crate::metrics::InFlight::new(self.spec.durable);
        if delivery.delivered > self.attempts() {
            // Delivered more often than it may be tried (a crash loop, a lowered limit).
            let error = format!("exhausted after {} deliveries", delivery.delivered - 1);
            return self.dead_letter(&delivery, &error).await;
        }
        if let Some(Err(wait)) = self.breaker.as_ref().map(Breaker::allow) {
            return self.nak(&delivery, wait).await;
        }

        let started = std::time::Instant::now();
        let before = self.breaker.as_ref().map(Breaker::state);
        let result = self.through_outages(&delivery).await;
        if let Some(breaker) = &self.breaker {
            match &result {
                Err(Failure::Retry { .. }) => breaker.failed(),
                // Our own outage says nothing about the partner, nor does a park (the partner
                // was not called): a probe that ended so leaves room for the next one.
                Err(Failure::Outage { .. } | Failure::Park { .. }) => breaker.no_verdict(),
                // A permanent answer means the partner is up, whatever it said.
                _ => breaker.succeeded(),
            }
            let now = breaker.state();
            crate::metrics::target_breaker(self.spec.durable, now.gauge());
            if before != Some(now)
                && let Some((kv, key)) = &self.breaker_report
            {
                shared_breaker::report(kv, key, now).await;
            }
        }
        let fate = fate(
            &result,
            delivery.delivered,
            self.attempts(),
            &self.spec.schedule,
        );
        let outcome = match &fate {
            Fate::Ack => "ack",
            Fate::Retry(_) => "retry",
            Fate::DeadLetter(_) => "dead_letter",
            Fate::Park { .. } => "park",
        };
        crate::metrics::consumed(self.spec.durable, outcome, started.elapsed().as_secs_f64());
        match fate {
            Fate::Ack => match delivery.message.ack().await {
                Ok(()) => crate::metrics::acked(self.spec.durable),
                Err(err) => tracing::warn!(%err, "ack failed; the message will be redelivered"),
            },
            Fate::Retry(delay) => {
                tracing::warn!(
                    attempt = delivery.delivered,
                    of = self.attempts(),
                    retry_in_ms = delay.as_millis() as u64,
                    error = result.as_ref().err().map(Failure::error),
                    "attempt failed; will retry"
                );
                self.nak(&delivery, delay).await;
            }
            Fate::DeadLetter(error) => self.dead_letter(&delivery, &error).await,
            Fate::Park { key, reason } => self.park(&delivery, &key, &reason).await,
        }
    }

    /// Runs the stage; while it fails with an outage, holds the message (in-progress acks keep
    /// it ours) and runs it again after a backoff growing to [`OUTAGE_BACKOFF_MAX`], until it
    /// gets through or the process shuts down.
    async fn through_outages(&self, delivery: &Delivery) -> StageResult {
        let mut backoff = Duration::from_millis(100);
        let mut tries = 0u32;
        loop {
            let result = self.with_progress(delivery).await;
            let Err(Failure::Outage { error }) = &result else {
                if tries > 0 {
                    tracing::info!(tries, "dependency back: the held message went through");
                }
                return result;
            };
            tries += 1;
            if tries == 1 || tries.is_power_of_two() {
                tracing::warn!(
                    consumer = self.spec.durable,
                    tries,
                    error,
                    "a dependency of the hub is down: holding the message and trying again"
                );
            }
            let _ = delivery.message.ack_with(AckKind::Progress).await;
            let pause = backoff.min(self.progress_every);
            tokio::select! {
                _ = self.shutdown.cancelled() => return result,
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(OUTAGE_BACKOFF_MAX);
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
        match delivery.message.ack_with(AckKind::Nak(Some(delay))).await {
            Ok(()) => crate::metrics::naked(self.spec.durable, delay),
            Err(err) => tracing::warn!(%err, "nak failed; the message returns after ack_wait"),
        }
    }

    /// Stores the message in `PARKED`, lets the stage record it and check the key again
    /// (releasing the key if it is ready by now), then acks the original. Through an outage of
    /// NATS or Postgres it holds the message and tries again, as [`Self::through_outages`] does.
    async fn park(&self, delivery: &Delivery, key: &str, reason: &str) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = async {
                let seq = park::publish(&self.bus, self.spec.durable, delivery, key, reason)
                    .await
                    .context("parking")?;
                let readiness = self
                    .stage
                    .parked(delivery, key, reason)
                    .await
                    .context("recording the parked state")?;
                let released = match readiness {
                    Readiness::Waiting => None,
                    Readiness::Ready => Some(
                        park::release(&self.bus, self.spec.durable, key)
                            .await
                            .context("releasing a key that became ready while parking")?,
                    ),
                };
                anyhow::Ok((seq, released))
            }
            .await;
            let failure = match result {
                Ok((seq, released)) => {
                    tracing::info!(
                        consumer = self.spec.durable,
                        key,
                        reason,
                        parked_seq = seq,
                        released,
                        "parked until its key is released"
                    );
                    if let Err(err) = delivery.message.ack().await {
                        tracing::warn!(%err, "ack failed; the message will be parked again (once)");
                    }
                    return;
                }
                Err(err) => Failure::from(err),
            };
            let outage = matches!(failure, Failure::Outage { .. });
            if outage && !self.shutdown.is_cancelled() {
                tracing::warn!(
                    consumer = self.spec.durable,
                    key,
                    error = failure.error(),
                    "could not park yet: holding the message and trying again"
                );
                let _ = delivery.message.ack_with(AckKind::Progress).await;
                tokio::select! {
                    _ = self.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(backoff.min(self.progress_every)) => {}
                }
                backoff = (backoff * 2).min(OUTAGE_BACKOFF_MAX);
                continue;
            }
            if outage {
                // Shutting down: another process, or this one restarted, parks it.
                return self.nak(delivery, OUTAGE_BACKOFF_MAX).await;
            }
            tracing::error!(
                consumer = self.spec.durable,
                key,
                error = failure.error(),
                "could not park; retrying"
            );
            return self.nak(delivery, Duration::from_secs(5)).await;
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
                crate::metrics::dead_lettered(self.spec.durable);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule = Schedule::Exponential {
        base: Duration::from_millis(100),
        max: Duration::from_millis(100),
        attempts: 3,
    };

    #[test]
    fn success_acks_and_a_permanent_failure_dead_letters_at_once() {
        assert_eq!(fate(&Ok(()), 1, 3, &SCHEDULE), Fate::Ack);
        assert_eq!(
            fate(&Err(Failure::permanent("HTTP 400: no")), 1, 3, &SCHEDULE),
            Fate::DeadLetter("HTTP 400: no".into())
        );
    }

    #[test]
    fn a_retry_waits_the_schedule_until_the_last_attempt() {
        let Fate::Retry(delay) = fate(&Err(Failure::retry("HTTP 503")), 2, 3, &SCHEDULE) else {
            panic!("retried");
        };
        assert!(delay >= Duration::from_millis(100) && delay < Duration::from_millis(120));
        let asked = Failure::Retry {
            error: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(9)),
        };
        assert_eq!(
            fate(&Err(asked), 1, 3, &SCHEDULE),
            Fate::Retry(Duration::from_secs(9))
        );
        assert_eq!(
            fate(&Err(Failure::retry("HTTP 503")), 3, 3, &SCHEDULE),
            Fate::DeadLetter("HTTP 503 (attempt 3 of 3)".into())
        );
    }

    #[test]
    fn an_outage_held_through_shutdown_comes_back_soon_and_never_dead_letters() {
        let down = Err(Failure::outage("database: pool timed out"));
        assert_eq!(
            fate(&down, 3, 3, &SCHEDULE),
            Fate::Retry(OUTAGE_BACKOFF_MAX)
        );
    }

    #[test]
    fn a_park_parks_even_on_the_last_attempt() {
        let park = Err(Failure::park("ord-1", "waiting for the sale"));
        let parked = Fate::Park {
            key: "ord-1".into(),
            reason: "waiting for the sale".into(),
        };
        assert_eq!(fate(&park, 1, 3, &SCHEDULE), parked);
        assert_eq!(fate(&park, 3, 3, &SCHEDULE), parked);
    }

    #[test]
    fn database_errors_are_classified() {
        assert!(matches!(
            Failure::from(sqlx::Error::PoolTimedOut),
            Failure::Outage { .. }
        ));
        assert!(matches!(
            Failure::from(sqlx::Error::RowNotFound),
            Failure::Permanent { .. }
        ));
        let wrapped = anyhow::Error::from(sqlx::Error::RowNotFound).context("reading the order");
        assert!(matches!(Failure::from(wrapped), Failure::Permanent { .. }));
        let unknown = anyhow::anyhow!("something unexpected");
        assert!(matches!(Failure::from(unknown), Failure::Retry { .. }));
        let nats = anyhow::Error::new(crate::nats::Unavailable("no ack".into())).context("x");
        assert!(matches!(Failure::from(nats), Failure::Outage { .. }));
        let db_down = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("recording");
        assert!(matches!(Failure::from(db_down), Failure::Outage { .. }));
    }

    #[test]
    fn a_partner_answer_becomes_the_failure_it_means() {
        let refused = Response::not_sent("timed out".into());
        assert_eq!(Failure::of_response(&refused), Failure::retry("timed out"));
        let mut rejected = Response::not_sent(String::new());
        rejected.error = None;
        rejected.status = Some(404);
        assert_eq!(
            Failure::of_response(&rejected),
            Failure::permanent("HTTP 404: ")
        );
    }
}
