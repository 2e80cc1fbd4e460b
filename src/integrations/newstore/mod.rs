//! NewStore → Hail (seed 2): NewStore's order webhooks become eyos Hail transactions.
//!
//! NewStore → `POST /webhooks/newstore[/{tenant}]` → `in.newstore.event` → `stage-newstore`
//! (records it; per order, under its row lock: sale, void, return, or park until the sale is
//! delivered) → `out.hail.transaction` → `deliver-hail` (Hail; a delivered sale releases what
//! was parked for its order).

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod domain;
pub mod messages;
pub mod mocks;
mod routes;
pub mod signature;
pub mod simulate;
pub mod store;
pub mod subjects;
pub mod transform;

#[path = "../../../consumers/newstore/mod.rs"]
pub mod consumers;

use axum::Router;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ingress::{self, Ingress};
use crate::integration::Integration;
use crate::schemas::Event;

pub mod schemas {
    //! `schemas/newstore/`: what NewStore sends and Hail takes (in [`super::domain`]), and the
    //! events between the stages.
    pub use crate::integrations::newstore::domain::schemas::{
        ENVELOPE, HAIL_TRANSACTION, ORDER, RETURN,
    };
    crate::schema!(ACCEPTED, "newstore/events/accepted.json");
    crate::schema!(HAIL_COMMAND, "newstore/events/hail-command.json");
}

pub static INTEGRATION: Integration = Integration {
    name: "newstore",
    dev_defaults: &[("NEWSTORE_SIMULATE", "1")],
    ingress: Ingress {
        api: &api::API,
        secrets: &[
            &config::NEWSTORE_WEBHOOK,
            &config::HAIL_API_KEY,
            &config::ADMIN_TOKEN,
        ],
        routes: ingress_routes,
    },
    consumers: consumers::ALL,
    services: &[],
    schemas: &[
        &schemas::ENVELOPE,
        &schemas::ORDER,
        &schemas::RETURN,
        &schemas::HAIL_TRANSACTION,
        &schemas::ACCEPTED,
        &schemas::HAIL_COMMAND,
    ],
    events: &[
        Event {
            subject: subjects::EVENT,
            schema: &schemas::ACCEPTED,
        },
        Event {
            subject: subjects::HAIL_TRANSACTION,
            schema: &schemas::HAIL_COMMAND,
        },
    ],
    mocks: &[mocks::HAIL],
    seed: None,
};

fn ingress_routes(hub: &ingress::Context) -> BoxFuture<'_, anyhow::Result<Router>> {
    async move { Ok(routes::router().with_state(routes::NewStore::new(hub)?)) }.boxed()
}
