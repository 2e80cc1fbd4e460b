//! MAX's consumer-process side: one durable consumer and one request/reply service, both
//! running operations through the shared [`Adapters`].
//!
//! | part | subjects | does |
//! | --- | --- | --- |
//! | durable `operate-max` | `in.max.write` | runs a write through its adapter (one call per delivery, redelivered on MAX's retry table), records it in `max_operations`, tells the waiting ingress (`max.outcome.<id>`); a failed write is dead-lettered and the supervisor told |
//! | durable `operate-max` | `in.max.transaction_updated` | invalidates the transaction's cache entries, pushes `transaction.updated` to the agents of the conversations about it (`max.push.<agent>`) |
//! | service `ihub-max` | `svc.max.read`, `svc.max.conversation` (queue group `q`) | runs a read the cache missed and caches its answer; registers a conversation |
//!
//! [`Adapters`]: crate::integrations::max::adapter::Adapters

mod operate;
mod service;

use crate::integrations::max::config::{ADAPTER_SECRETS, AdapterConfig};
use crate::integrations::max::retry;
use crate::runtime::service::Service;
use crate::runtime::{Consumer, Worker};

pub const ALL: &[Consumer] = &[Consumer {
    file: crate::consumer_file!("INBOUND", "operate-max"),
    secrets: ADAPTER_SECRETS,
    // The runtime redelivers a write on MAX's retry table; the breaker is the adapter's, shared
    // by every process, so the runtime's own per-process one is off.
    start: |ctx| {
        let cfg = AdapterConfig::from_env(ctx.env())?;
        let spec = ctx.spec(retry::schedule(cfg.retry_base)).without_breaker();
        Ok(Worker::new(spec, operate::Operate::new(ctx, cfg)))
    },
}];

pub const SERVICE: Service = Service {
    name: crate::integrations::max::subjects::SERVICE,
    secrets: ADAPTER_SECRETS,
    start: service::start,
};
