//! WaveGate (seed 3): OTA partners post orders; the hub sends each to the ticketing system
//! and, once ticketed, calls the partner's `callback_url` with the tickets.
//!
//! Partner → `POST /orders` → `in.wavegate.order_accepted` → `stage-wavegate` →
//! `out.ticketing.order` → `deliver-ticketing` (ticketing system) → `out.ota.callback` →
//! `deliver-ota-callback` (the partner's `callback_url`). Refused calls go to
//! `in.wavegate.auth_refused`; partners read their orders back with `GET /orders`.

pub mod api;
mod auth;
pub mod config;
pub mod domain;
pub mod mocks;
mod orders;
mod queries;
mod state;
pub mod store;
pub mod subjects;

#[path = "../../../consumers/wavegate/mod.rs"]
pub mod consumers;

use axum::Router;
use axum::routing::get;
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgPool;

use crate::config::Env;
use crate::ingress::{self, Ingress};
use crate::integration::Integration;
use crate::schemas::Event;

pub mod schemas {
    //! `schemas/wavegate/`.
    crate::schema!(ORDER_REQUEST, "wavegate/order-request.json");
    crate::schema!(ORDER_ACCEPTED, "wavegate/events/order-accepted.json");
    crate::schema!(AUTH_REFUSED, "wavegate/events/auth-refused.json");
    crate::schema!(TICKETING_COMMAND, "wavegate/events/ticketing-command.json");
    crate::schema!(OTA_CALLBACK_COMMAND, "wavegate/events/ota-callback-command.json");
}

pub static INTEGRATION: Integration = Integration {
    name: "wavegate",
    // The demo partner, signed callbacks, and callbacks to the local OTA mock over plain HTTP.
    dev_defaults: &[
        (
            "PARTNERS_JSON",
            r#"[{"id":"demo","name":"Demo Partner","token":"demotoken","allowlist_cidrs":["0.0.0.0/0","::/0"]}]"#,
        ),
        (config::CALLBACK_SIGNING_SECRET, "dev-callback-secret"),
        ("ALLOW_PRIVATE_CALLBACKS", "loopback"),
        ("REQUIRE_HTTPS_CALLBACKS", "0"),
        ("ALLOWED_CALLBACK_PORTS", "*"),
    ],
    ingress: Ingress {
        api: &api::API,
        secrets: &[&config::APP_HMAC, &config::ADMIN_TOKEN],
        routes: ingress_routes,
    },
    consumers: consumers::ALL,
    services: &[],
    schemas: &[
        &schemas::ORDER_REQUEST,
        &schemas::ORDER_ACCEPTED,
        &schemas::AUTH_REFUSED,
        &schemas::TICKETING_COMMAND,
        &schemas::OTA_CALLBACK_COMMAND,
    ],
    events: &[
        Event {
            subject: subjects::ORDER_ACCEPTED,
            schema: &schemas::ORDER_ACCEPTED,
        },
        Event {
            subject: subjects::AUTH_REFUSED,
            schema: &schemas::AUTH_REFUSED,
        },
        Event {
            subject: subjects::TICKETING_ORDER,
            schema: &schemas::TICKETING_COMMAND,
        },
        Event {
            subject: subjects::OTA_CALLBACK,
            schema: &schemas::OTA_CALLBACK_COMMAND,
        },
    ],
    mocks: &[mocks::TICKETING, mocks::OTA],
    seed: Some(seed),
};

fn ingress_routes(hub: &ingress::Context) -> BoxFuture<'_, anyhow::Result<Router>> {
    async move {
        let state = state::WaveGate::new(hub).await?;
        Ok(Router::new()
            .route("/orders", get(queries::list).post(orders::create))
            .route("/orders/{id}", get(queries::show))
            .route("/admin/orders", get(queries::admin_list))
            .with_state(state))
    }
    .boxed()
}

/// Partners from `PARTNERS_JSON`, when it is set (production never gets the demo partner).
fn seed<'a>(env: &'a Env, db: &'a PgPool) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
    async move {
        let Some(partners) = env.non_empty("PARTNERS_JSON") else {
            return Ok(None);
        };
        let key = env.secret(&config::APP_HMAC)?;
        let seeded = store::seed_partners(db, &partners, &key).await?;
        Ok(Some(format!(
            "partners seeded from PARTNERS_JSON: {}",
            seeded.join(", ")
        )))
    }
    .boxed()
}
