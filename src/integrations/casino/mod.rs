//! Casino ↔ game provider (seed 4): a seamless wallet the provider calls while a player plays.
//!
//! The provider → `POST /casino/{getBalance,debit,credit,rollback}` (signed
//! `x-casino-signature`) → a NATS request to the wallet service (`svc.casino.*`, served by
//! every consumer process) → one Postgres transaction under the wallet's row lock (balance,
//! ledger entry, outbox row, the answer kept by `externalTransactionId`) → the reply → the
//! answer. The outbox relay publishes each ledger entry to `ledger.casino.<kind>`.
//! The casino's front end → `POST /casino/launchGame`, `/casino/simulateRound` (bearer
//! `CASINO_API_TOKEN`) → the service → the provider (`x-provider-signature`).

pub mod api;
pub mod bench;
pub mod config;
pub mod domain;
pub mod mocks;
pub mod reply;
mod routes;
pub mod signature;
pub mod store;
pub mod subjects;

#[path = "../../../consumers/casino/mod.rs"]
pub mod consumers;

pub mod schemas {
    //! `schemas/casino/`: what the provider and the front end send.
    crate::schema!(BALANCE, "casino/balance.json");
    crate::schema!(TRANSACTION, "casino/transaction.json");
    crate::schema!(ROLLBACK, "casino/rollback.json");
    crate::schema!(LAUNCH, "casino/launch.json");
}

use axum::Router;
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgPool;

use crate::config::Env;
use crate::ingress::{self, Ingress};
use crate::integration::Integration;

/// The demo players `ihub dev` seeds (`CASINO_PLAYERS_JSON` unless the environment sets it).
pub const DEMO_PLAYERS: &str = r#"[{"userId":"1","balances":{"USD":"1000.00","EUR":"1000.00"}},{"userId":"2","balances":{"USD":"1000.00","EUR":"1000.00"}},{"userId":"3","balances":{"USD":"1000.00","EUR":"1000.00"}}]"#;

pub static INTEGRATION: Integration = Integration {
    name: "casino",
    dev_defaults: &[("CASINO_PLAYERS_JSON", DEMO_PLAYERS)],
    ingress: Ingress {
        api: &api::API,
        secrets: &[
            &config::CASINO_SECRET,
            &config::CASINO_API_TOKEN,
            &config::ADMIN_TOKEN,
        ],
        routes: ingress_routes,
    },
    consumers: &[],
    services: &[consumers::service::WALLET],
    schemas: &[
        &schemas::BALANCE,
        &schemas::TRANSACTION,
        &schemas::ROLLBACK,
        &schemas::LAUNCH,
    ],
    events: &[],
    mocks: &[mocks::PROVIDER],
    seed: Some(seed),
};

fn ingress_routes(hub: &ingress::Context) -> BoxFuture<'_, anyhow::Result<Router>> {
    async move { Ok(routes::router().with_state(routes::Casino::new(hub)?)) }.boxed()
}

/// `CASINO_PLAYERS_JSON`: players (and balances) added at `ihub setup`.
fn seed<'a>(env: &'a Env, db: &'a PgPool) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
    async move {
        let Some(players) = env.non_empty("CASINO_PLAYERS_JSON") else {
            return Ok(None);
        };
        let created = store::seed_players(db, &players).await?;
        Ok(Some(if created.is_empty() {
            "casino players from CASINO_PLAYERS_JSON: all present".to_string()
        } else {
            format!("casino players seeded: {}", created.join(", "))
        }))
    }
    .boxed()
}
