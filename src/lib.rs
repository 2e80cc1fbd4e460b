//! ihub: an integration hub. A thin HTTP ingress authenticates and validates partner calls,
//! publishes one event to NATS JetStream and answers; durable consumers do the rest.
//!
//! The core (everything but `integrations`, `cli`, `chaos` and `startup`) knows no integration by name;
//! each integration is a folder under `integrations/` (its consumers mounted from
//! `consumers/<name>/`) listed once in [`integrations::ALL`].

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod db;
pub mod http_client;
pub mod idempotency;
pub mod ingress;
pub mod integration;
pub mod integrations;
pub mod metrics;
pub mod mocks;
pub mod money;
pub mod nats;
pub mod openapi;
pub mod ratelimit;
pub mod report;
pub mod runtime;
pub mod schemas;
pub mod server;
pub mod shutdown;
pub mod signatures;
pub mod ssrf;
pub mod startup;
pub mod status;
pub mod telemetry;
pub mod tls;
