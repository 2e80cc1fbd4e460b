//! MAX adapters (seed 5), in progress: MAX, a support platform, will call the hub; the hub
//! calls three outside systems through adapters that share retry, circuit breaker, cache,
//! secrets and audit. So far: the partners' mocks (ticketing, transaction status, sales,
//! supervisor);
//! the hub's routes and adapters come next, and until then the integration serves no route.

pub mod config;
pub mod mocks;
pub mod oauth;
pub mod retry;
pub mod supervisor;

pub mod schemas {
    //! `schemas/max/`: what MAX sends.
    crate::schema!(TICKET, "max/ticket.json");
}

use axum::Router;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ingress::{self, Ingress};
use crate::integration::Integration;

pub static INTEGRATION: Integration = Integration {
    name: "max",
    dev_defaults: &[],
    ingress: Ingress {
        secrets: &[],
        routes: ingress_routes,
    },
    consumers: &[],
    services: &[],
    schemas: &[&schemas::TICKET],
    events: &[],
    mocks: &[
        mocks::TICKETING,
        mocks::TRANSACTIONS,
        mocks::SALES,
        mocks::SUPERVISOR,
    ],
    seed: None,
};

/// None yet (the MAX API comes with the adapters).
fn ingress_routes(_hub: &ingress::Context) -> BoxFuture<'_, anyhow::Result<Router>> {
    async move { Ok(Router::new()) }.boxed()
}
