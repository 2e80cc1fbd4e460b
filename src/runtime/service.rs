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
