//! Assembling the hub: setup, the ingress, the consumers, the mocks. The CLI and the tests
//! build the same pieces; tests bind port 0 and read the port back.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumers::{self, Deps};
use crate::mocks::{
    self, operator::OperatorMock, ota::OtaMock, rgs::RgsMock, ticketing::TicketingMock,
};
use crate::nats::{Bus, provision};
use crate::{db, ingress};

pub type Tasks = JoinSet<anyhow::Result<()>>;

/// Creates the database if missing, migrates it, and applies `nats/`. Idempotent.
pub async fn setup(cfg: &Config, mut progress: impl FnMut(String)) -> anyhow::Result<()> {
    let shown = cfg.database_url_for_display();
    if db::create_database_if_missing(&cfg.database_url).await? {
        progress(format!("created database {shown}"));
    } else {
        progress(format!("database {shown} exists"));
    }
    let pool = db::connect(&cfg.database_url, 2).await?;
    db::migrate(&pool).await?;
    progress("migrations applied".into());
    if let Some(partners) = &cfg.wavegate.partners_json {
        let key = cfg.secret(crate::config::SecretVar::AppHmac)?;
        let seeded = db::wavegate::seed_partners(&pool, partners, &key).await?;
        progress(format!(
            "partners seeded from PARTNERS_JSON: {}",
            seeded.join(", ")
        ));
    }
    pool.close().await;

    let bus = Bus::connect(&cfg.nats_url, &cfg.nats_prefix, "ihub-setup").await?;
    let definitions = provision::definitions(&bus.names, cfg.ack_wait)?;
    provision::apply(&bus.js, &definitions, &mut progress).await?;
    bus.client.flush().await?;
    Ok(())
}

pub async fn connect(cfg: &Config, role: &str, pool_size: u32) -> anyhow::Result<(Bus, PgPool)> {
    let bus = Bus::connect(&cfg.nats_url, &cfg.nats_prefix, &format!("ihub-{role}")).await?;
    let db = db::connect(&cfg.database_url, pool_size).await?;
    Ok((bus, db))
}

/// Serves the ingress on `listener` until `shutdown`.
pub async fn ingress(
    cfg: &Config,
    bus: Bus,
    db: PgPool,
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<String> {
    let state = ingress::AppState::new(cfg, bus, db).await?;
    let url = mocks::url_of(&listener);
    tasks.spawn(mocks::serve(listener, ingress::router(state), shutdown));
    Ok(url)
}

/// Starts the named consumers (all when `only` is empty).
pub async fn consumers(
    cfg: &Arc<Config>,
    bus: Bus,
    db: PgPool,
    only: &[String],
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let names = consumers::select(only)?;
    let deps = Deps::new(bus, db, cfg.clone()).await?;
    consumers::spawn(&names, &deps, shutdown, tasks)
}

/// The partner mocks, running.
pub struct Mocks {
    pub operator: Arc<OperatorMock>,
    pub operator_url: String,
    pub rgs: Arc<RgsMock>,
    pub rgs_url: String,
    pub ticketing: Arc<TicketingMock>,
    pub ticketing_url: String,
    pub ota: Arc<OtaMock>,
    pub ota_url: String,
}

/// Where the partner mocks listen.
pub struct MockListeners {
    pub operator: TcpListener,
    pub rgs: TcpListener,
    pub ticketing: TcpListener,
    pub ota: TcpListener,
}

/// Starts every partner mock on its listener.
pub fn mocks(
    cfg: &Config,
    listeners: MockListeners,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<Mocks> {
    let operator_mock = OperatorMock::new(mocks::operator::Options {
        currencies: cfg.mocks.operator_currencies.clone(),
        initial_balance_minor: cfg.mocks.operator_initial_balance_minor,
        callback: Some((
            cfg.mocks.hub_callback_url.clone(),
            cfg.operator_webhook_secret()?,
        )),
    });
    let rgs_mock = RgsMock::new(cfg.wallet_hmac_secret.clone());
    let ticketing_mock = TicketingMock::new();
    let ota_mock = OtaMock::new(cfg.wavegate.callback_signing_secret.clone());
    let started = Mocks {
        operator_url: mocks::url_of(&listeners.operator),
        rgs_url: mocks::url_of(&listeners.rgs),
        ticketing_url: mocks::url_of(&listeners.ticketing),
        ota_url: mocks::url_of(&listeners.ota),
        operator: operator_mock.clone(),
        rgs: rgs_mock.clone(),
        ticketing: ticketing_mock.clone(),
        ota: ota_mock.clone(),
    };
    for (listener, router) in [
        (listeners.operator, operator_mock.router()),
        (listeners.rgs, rgs_mock.router()),
        (listeners.ticketing, ticketing_mock.router()),
        (listeners.ota, ota_mock.router()),
    ] {
        tasks.spawn(mocks::serve(listener, router, shutdown.clone()));
    }
    Ok(started)
}

/// Waits for every task; the first failure cancels the rest and is returned.
pub async fn supervise(mut tasks: Tasks, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(err) = result {
            if first_error.is_none() {
                tracing::error!(error = format!("{err:#}"), "a component failed; stopping");
                first_error = Some(err);
            }
            shutdown.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}
