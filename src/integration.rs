//! What an integration is to the hub: one `static` [`Integration`] that supplies everything the
//! integration owns. The registry (`integrations::ALL`) lists them; nothing in the core names
//! one.
//!
//! Its parts are started separately (`ihub ingress`, `ihub consume`, `ihub mocks`) or together
//! (`ihub dev`), each reading its own settings and secrets from the environment.

use futures::future::BoxFuture;
use sqlx::PgPool;

use crate::config::{Env, SecretVar};
use crate::ingress::Ingress;
use crate::mocks::Mock;
use crate::runtime::Consumer;
use crate::runtime::service::Service;
use crate::schemas::{Event, Schema};

pub struct Integration {
    /// What `--integrations` calls it; also the `<integration>` in its subjects `in.<name>.…`.
    pub name: &'static str,
    /// Other variables `ihub dev` sets unless the environment does (demo partners, relaxed
    /// callback rules for the local mocks).
    pub dev_defaults: &'static [(&'static str, &'static str)],
    pub ingress: Ingress,
    /// Its durable consumers, in pipeline order.
    pub consumers: &'static [Consumer],
    /// What it serves request/reply from the consumer processes.
    pub services: &'static [Service],
    /// Every schema it accepts or publishes (all of `schemas/<name>/`).
    pub schemas: &'static [&'static Schema],
    /// The schema of the events on each subject it publishes to a stream.
    pub events: &'static [Event],
    /// Its partners, simulated.
    pub mocks: &'static [Mock],
    /// Seed data `ihub setup` applies (demo partners), when the environment asks for it.
    pub seed: Option<Seed>,
}

impl Integration {
    /// Every secret its parts need (`ihub dev` fills those the environment leaves unset with
    /// their demo values), each once.
    pub fn secrets(&self) -> Vec<&'static SecretVar> {
        let mut secrets: Vec<&'static SecretVar> = Vec::new();
        let parts = self
            .ingress
            .secrets
            .iter()
            .chain(self.consumers.iter().flat_map(|c| c.secrets))
            .chain(self.services.iter().flat_map(|s| s.secrets))
            .chain(self.mocks.iter().flat_map(|m| m.secrets));
        for secret in parts {
            if !secrets.contains(secret) {
                secrets.push(secret);
            }
        }
        secrets
    }
}

/// Applies seed data when the environment asks for it; returns a line for setup's progress.
pub type Seed = for<'a> fn(&'a Env, &'a PgPool) -> BoxFuture<'a, anyhow::Result<Option<String>>>;
