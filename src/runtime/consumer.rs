//! How an integration declares a durable consumer, and what the hub hands it when it starts.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Pulling, Schedule, Spec, Stage};
use crate::config::{Config, Env, SecretVar};
use crate::idempotency::Idempotency;
use crate::nats::Bus;
use crate::nats::provision::ConsumerFile;

/// A durable consumer of an integration: its definition in `nats/consumers/`, the secrets it
/// needs, and how to build its stage.
pub struct Consumer {
    pub file: ConsumerFile,
    /// Checked, with those of every other part a process runs, before anything connects.
    pub secrets: &'static [&'static SecretVar],
    /// Builds the stage and how it runs (schedule, concurrency, breaker).
    pub start: fn(&Context) -> anyhow::Result<Worker>,
}

impl Consumer {
    pub fn durable(&self) -> &'static str {
        self.file.durable
    }
}

/// What a consumer's stage can reach: the connections every stage shares and the settings.
#[derive(Clone)]
pub struct Context {
    pub cfg: Arc<Config>,
    pub bus: Bus,
    pub db: PgPool,
    pub http: reqwest::Client,
    pub idempotency: Idempotency,
    /// The consumer being started.
    pub file: ConsumerFile,
}

impl Context {
    /// Where the integration reads its settings and secrets.
    pub fn env(&self) -> &Env {
        &self.cfg.env
    }

    /// How this consumer runs unless it says otherwise: `schedule`, the process's concurrency
    /// and a circuit breaker.
    pub fn spec(&self, schedule: Schedule) -> Spec {
        Spec {
            durable: self.file.durable,
            stream: self.file.stream,
            schedule,
            concurrency: self.cfg.consumer_concurrency,
            breaker: Some((self.cfg.breaker_failures, self.cfg.breaker_open)),
        }
    }
}

type Bind =
    Box<dyn FnOnce(Bus, CancellationToken) -> BoxFuture<'static, anyhow::Result<Pulling>> + Send>;

/// A stage with how it runs, ready to bind its durable.
pub struct Worker {
    bind: Bind,
}

impl Worker {
    pub fn new<S: Stage>(spec: Spec, stage: S) -> Self {
        let stage = Arc::new(stage);
        Self {
            bind: Box::new(move |bus, shutdown| Box::pin(super::start(bus, spec, stage, shutdown))),
        }
    }

    /// Binds the durable and starts pulling (see [`super::start`]).
    pub async fn start(self, bus: Bus, shutdown: CancellationToken) -> anyhow::Result<Pulling> {
        (self.bind)(bus, shutdown).await
    }
}
