//! Request/reply services: what must answer its caller at once (a wallet debit the game
//! provider waits for) rather than be redelivered later. An integration declares a
//! [`Service`]; every `consume` process (and `ihub dev`) serves it as a NATS service
//! (`async-nats`'s `service`: endpoints in the queue group `q`, visible to `nats micro ls`),
//! so requests are spread over the processes and a dead one takes no new work. The ingress
//! sends a request and waits, bounded, for the reply; it still writes nothing but NATS.
//!
//! A request that a process dies with is lost with its reply: the caller sees a timeout and
//! retries. Services keep their own idempotency (the wallet's `externalTransactionId`), so a
//! retry answers what the first run committed, or runs it if nothing was committed.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Env, SecretVar};
use crate::nats::Bus;

/// A service an integration serves from the consumer processes.
pub struct Service {
    /// Its NATS service name (`nats micro info <name>`), and what `ihub consume --only` calls
    /// it.
    pub name: &'static str,
    /// Checked, with those of every other part a process runs, before anything connects.
    pub secrets: &'static [&'static SecretVar],
    /// Subscribes its endpoints (and starts any work beside them); resolves once requests can
    /// be served, to the future that serves them until `shutdown`.
    pub start: fn(Context, CancellationToken) -> BoxFuture<'static, anyhow::Result<Serving>>,
}

/// A started service, serving until its shutdown token is cancelled.
pub type Serving = BoxFuture<'static, anyhow::Result<()>>;

/// What a service can reach.
#[derive(Clone)]
pub struct Context {
    pub cfg: Arc<Config>,
    pub bus: Bus,
    pub db: PgPool,
    pub http: reqwest::Client,
}

impl Context {
    pub fn env(&self) -> &Env {
        &self.cfg.env
    }
}

/// A started NATS service and its endpoints, each tagged with what it asks (`K`).
pub struct Endpoints<K> {
    service: async_nats::service::Service,
    endpoints: Vec<(K, async_nats::service::endpoint::Endpoint)>,
}

impl<K: Copy + Send + 'static> Endpoints<K> {
    /// Starts service `name` with an endpoint per `(kind, subject)` (subjects before the
    /// deployment's prefix), in the queue group `q`, and waits until NATS has them.
    pub async fn start(
        ctx: &Context,
        name: &str,
        description: &str,
        subjects: &[(K, &str)],
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use async_nats::service::ServiceExt;
        let service = ctx
            .bus
            .client
            .service_builder()
            .description(description)
            .start(name, "1.0.0")
            .await
            .map_err(|err| anyhow::anyhow!("could not start the NATS service {name}: {err}"))?;
        let mut endpoints = Vec::new();
        for (kind, subject) in subjects {
            let endpoint = service
                .endpoint(ctx.bus.names.subject(subject))
                .await
                .map_err(|err| anyhow::anyhow!("could not serve {subject}: {err}"))?;
            endpoints.push((*kind, endpoint));
        }
        ctx.bus
            .client
            .flush()
            .await
            .context("NATS did not take the subscriptions")?;
        Ok(Self { service, endpoints })
    }

    /// Answers requests with `answer` until `shutdown`, at most `in_flight` at once over all
    /// endpoints; then stops the service (requests in hand finish first).
    pub async fn serve<F, Fut>(self, in_flight: usize, shutdown: CancellationToken, answer: F)
    where
        F: Fn(K, async_nats::service::Request) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use futures::StreamExt;
        let limit = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (kind, mut endpoint) in self.endpoints {
            let (limit, shutdown, answer) = (limit.clone(), shutdown.clone(), answer.clone());
            tasks.spawn(async move {
                loop {
                    let request = tokio::select! {
                        request = endpoint.next() => request,
                        () = shutdown.cancelled() => None,
                    };
                    let Some(request) = request else { break };
                    let Ok(permit) = limit.clone().acquire_owned().await else {
                        break;
                    };
                    let answering = answer(kind, request);
                    tokio::spawn(async move {
                        answering.await;
                        drop(permit);
                    });
                }
                let _ = endpoint.stop().await;
            });
        }
        tasks.join_all().await;
        let _ = self.service.stop().await;
    }
}
