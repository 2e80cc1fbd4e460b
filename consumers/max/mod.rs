//! MAX's consumer-process side: one durable consumer and one request/reply service, both
//! running operations through the shared [`Adapters`].
//!
//! | part | subjects | does |
//! | --- | --- | --- |
//! | durable `operate-max` | `in.max.write` | runs a write through its adapter, records it in `max_operations`, tells the waiting ingress (`max.outcome.<id>`); a failed write is dead-lettered and the supervisor told |
//! | durable `operate-max` | `in.max.transaction_updated` | invalidates the transaction's cache entries, pushes `transaction.updated` to the agents of the conversations about it (`max.push.<agent>`) |
//! | service `ihub-max` | `svc.max.read`, `svc.max.conversation` (queue group `q`) | runs a read the cache missed and caches its answer; registers a conversation |
//!
//! [`Adapters`]: crate::integrations::max::adapter::Adapters

mod operate;
mod service;

use crate::integrations::max::config::ADAPTER_SECRETS;
use crate::runtime::service::Service;
use crate::runtime::{Consumer, Schedule, Worker};

pub const ALL: &[Consumer] = &[Consumer {
    file: crate::consumer_file!("INBOUND", "operate-max"),
    secrets: ADAPTER_SECRETS,
    // The adapters keep their own breakers and retry table: the runtime retries only what the
    // hub itself could not do (NATS or Postgres down).
    start: |ctx| Ok(Worker::new(ctx.spec(Schedule::STAGE).without_breaker(), operate::Operate::new(ctx)?)),
}];

pub const SERVICE: Service = Service {
    name: crate::integrations::max::subjects::SERVICE,
    secrets: ADAPTER_SECRETS,
    start: service::start,
};
