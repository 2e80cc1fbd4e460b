//! ihub: an integration hub. A thin HTTP ingress authenticates and validates partner calls,
//! publishes one event to NATS JetStream and answers; durable consumers do the rest.

pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod http_client;
pub mod idempotency;
pub mod ingress;
pub mod mocks;
pub mod nats;
pub mod ratelimit;
pub mod runtime;
pub mod schemas;
pub mod shutdown;
pub mod signatures;
pub mod ssrf;
pub mod startup;
pub mod telemetry;

#[path = "../consumers/mod.rs"]
pub mod consumers;
