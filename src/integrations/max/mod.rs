//! MAX adapters (seed 5): MAX, a support platform whose agents work conversations, calls the
//! hub; the hub calls three outside systems through adapters that share authentication,
//! retries, a circuit breaker per adapter, a cache, secrets and an audit log.
//!
//! MAX → `/max/*` (bearer `MAX_API_TOKEN`, [`routes`]) → reads: the `cache` KV bucket, else
//! the `ihub-max` service; writes: `in.max.write` → `operate-max` → [`adapter::Adapters`] →
//! ticketing (API key), transaction status (OAuth2), sales (OAuth2 + `X-HMAC-Signature`).
//! The transaction webhook invalidates the cache and pushes `transaction.updated` to the
//! agents' WebSockets.

pub mod api;
pub mod adapter;
pub mod bench;
pub mod cache;
pub mod config;
pub mod keys;
pub mod messages;
pub mod mocks;
pub mod oauth;
pub mod operations;
pub mod retry;
mod routes;
pub mod store;
pub mod subjects;
pub mod supervisor;

#[path = "../../../consumers/max/mod.rs"]
pub mod consumers;

pub use routes::{CONVERSATION_HEADER, SIGNATURE_HEADER};

pub mod schemas {
    //! `schemas/max/`: what MAX sends.
    crate::schema!(TICKET, "max/ticket.json");
    crate::schema!(COMMENT, "max/comment.json");
    crate::schema!(DRAFT, "max/draft.json");
    crate::schema!(CONVERSATION, "max/conversation.json");
    crate::schema!(TRANSACTION_UPDATED, "max/transaction_updated.json");
}

use axum::Router;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ingress::{self, Ingress};
use crate::integration::Integration;
use crate::schemas::Event;

pub static INTEGRATION: Integration = Integration {
    name: "max",
    dev_defaults: &[],
    ingress: Ingress {
        api: &api::API,
        secrets: &[&config::MAX_API_TOKEN, &config::MAX_WEBHOOK_SECRET],
        routes: ingress_routes,
    },
    consumers: consumers::ALL,
    services: &[consumers::SERVICE],
    schemas: &[
        &schemas::TICKET,
        &schemas::COMMENT,
        &schemas::DRAFT,
        &schemas::CONVERSATION,
        &schemas::TRANSACTION_UPDATED,
    ],
    events: &[Event {
        subject: subjects::TRANSACTION_UPDATED,
        schema: &schemas::TRANSACTION_UPDATED,
    }],
    mocks: &[
        mocks::TICKETING,
        mocks::TRANSACTIONS,
        mocks::SALES,
        mocks::SUPERVISOR,
    ],
    seed: None,
};

fn ingress_routes(hub: &ingress::Context) -> BoxFuture<'_, anyhow::Result<Router>> {
    async move { Ok(routes::router().with_state(routes::Max::new(hub).await?)) }.boxed()
}
