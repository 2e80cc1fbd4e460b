//! The wallet hub (seed 1): an RGS debits and credits player wallets held by an operator.
//!
//! RGS → `POST /wallet/{debit,credit}` → `in.wallet.*` → `stage-wallet` → `out.operator.*` →
//! `deliver-operator` (operator wallet) → `out.rgs.webhook` → `deliver-rgs` (RGS webhook).
//! The operator's callbacks come in on `POST /webhooks/incoming`; `GET /reconciliation_data`
//! compares what both partners say.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod domain;
pub mod mocks;
pub mod reconciliation;
mod routes;
pub mod store;
pub mod subjects;

#[path = "../../../consumers/wallet/mod.rs"]
pub mod consumers;

use axum::Router;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ingress::{self, Ingress};
use crate::integration::Integration;
use crate::schemas::Event;

pub mod schemas {
    //! `schemas/wallet/`.
    crate::schema!(WALLET_REQUEST, "wallet/wallet-request.json");
    crate::schema!(OPERATOR_CALLBACK, "wallet/operator-callback.json");
    crate::schema!(WALLET_REQUESTED, "wallet/events/wallet-requested.json");
    crate::schema!(OPERATOR_COMMAND, "wallet/events/operator-command.json");
    crate::schema!(RGS_WEBHOOK, "wallet/events/rgs-webhook.json");
}

pub static INTEGRATION: Integration = Integration {
    name: "wallet",
    dev_defaults: &[],
    ingress: Ingress {
        api: &api::API,
        secrets: &[&config::WALLET_HMAC, &config::RECONCILIATION_TOKEN],
        routes: ingress_routes,
    },
    consumers: consumers::ALL,
    services: &[],
    schemas: &[
        &schemas::WALLET_REQUEST,
        &schemas::OPERATOR_CALLBACK,
        &schemas::WALLET_REQUESTED,
        &schemas::OPERATOR_COMMAND,
        &schemas::RGS_WEBHOOK,
    ],
    events: &[
        Event {
            subject: subjects::DEBIT_REQUESTED,
            schema: &schemas::WALLET_REQUESTED,
        },
        Event {
            subject: subjects::CREDIT_REQUESTED,
            schema: &schemas::WALLET_REQUESTED,
        },
        Event {
            subject: subjects::OPERATOR_CALLBACK,
            schema: &schemas::OPERATOR_CALLBACK,
        },
        Event {
            subject: subjects::WITHDRAW,
            schema: &schemas::OPERATOR_COMMAND,
        },
        Event {
            subject: subjects::DEPOSIT,
            schema: &schemas::OPERATOR_COMMAND,
        },
        Event {
            subject: subjects::RGS_WEBHOOK,
            schema: &schemas::RGS_WEBHOOK,
        },
    ],
    mocks: &[mocks::OPERATOR, mocks::RGS],
    seed: None,
};

fn ingress_routes(hub: &ingress::Context) -> BoxFuture<'_, anyhow::Result<Router>> {
    async move {
        let wallet = routes::Wallet::new(hub)?;
        Ok(routes::router()
            .merge(reconciliation::router(&wallet)?)
            .with_state(wallet))
    }
    .boxed()
}
