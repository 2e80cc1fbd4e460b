//! Integration tests against real NATS (JetStream) and Postgres; partners are the mocks.

mod support;

mod architecture;
mod chaos;
mod parts;
mod processes;
mod runtime;
mod wallet;
mod wavegate;
