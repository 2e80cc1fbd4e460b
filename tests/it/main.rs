//! Integration tests against real NATS (JetStream) and Postgres; partners are the mocks.

mod support;

mod architecture;
mod bench_casino;
mod bench_max;
mod bench_newstore;
mod casino;
mod chaos;
mod cluster;
mod compose;
mod contract;
mod hardening;
mod max;
mod max_adapters;
mod newstore;
mod operating;
mod parking;
mod parts;
mod processes;
mod reconciliation;
mod runtime;
mod storm;
mod wallet;
mod wavegate;
