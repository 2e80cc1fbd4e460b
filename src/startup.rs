//! Assembling the hub from the registry: setup, the ingress, the consumers, the mocks. The CLI
//! and the tests build the same pieces; tests bind port 0 and read the port back.

use std::future::IntoFuture;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Env, SecretVar};
use crate::idempotency::Idempotency;
use crate::integration::Integration;
use crate::mocks::{self, Mock};
use crate::nats::{Bus, provision};
use crate::runtime::service::{self, Service};
use crate::runtime::{self, Consumer};
use crate::{db, http_client, ingress, integrations, server};

pub type Tasks = JoinSet<anyhow::Result<()>>;

/// Creates the database if missing, migrates it, applies every integration's seed data (when
/// the environment asks for it) and the definitions in `nats/`. Idempotent.
pub async fn setup(cfg: &Config, mut progress: impl FnMut(String)) -> anyhow::Result<()> {
    let url = &cfg.database_url;
    if db::create_database_if_missing(url.expose()).await? {
        progress(format!("created database {url}"));
    } else {
        progress(format!("database {url} exists"));
    }
    let pool = db::connect(url.expose(), 2).await?;
    db::migrate(&pool).await?;
    progress("migrations applied".into());
    for integration in integrations::ALL {
        if let Some(seed) = integration.seed
            && let Some(line) = seed(&cfg.env, &pool)
                .await
                .with_context(|| format!("seeding {}", integration.name))?
        {
            progress(line);
        }
    }
    pool.close().await;

    let bus = Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-setup").await?;
    let definitions =
        provision::definitions(&bus.names, cfg.ack_wait, &integrations::consumer_files())?
            .with_replicas(cfg.nats_replicas);
    provision::apply(&bus.js, &definitions, &mut progress).await?;
    bus.client.flush().await?;
    Ok(())
}

pub async fn connect(cfg: &Config, role: &str, pool_size: u32) -> anyhow::Result<(Bus, PgPool)> {
    let bus = Bus::connect(
        cfg.nats_url.expose(),
        &cfg.nats_prefix,
        &format!("ihub-{role}"),
    )
    .await?
    .with_publish_timeout(cfg.publish_timeout);
    let db = db::connect(cfg.database_url.expose(), pool_size).await?;
    Ok((bus, db))
}

/// The secrets the routes of `integrations` need.
pub fn ingress_secrets(integrations: &[&'static Integration]) -> Vec<&'static SecretVar> {
    integrations
        .iter()
        .flat_map(|i| i.ingress.secrets.iter().copied())
        .collect()
}

/// The secrets `consumers` need.
pub fn consumer_secrets(consumers: &[&'static Consumer]) -> Vec<&'static SecretVar> {
    consumers
        .iter()
        .flat_map(|c| c.secrets.iter().copied())
        .collect()
}

/// The mocks of `integrations`, and the secrets they need.
pub fn mocks_of(
    integrations: &[&'static Integration],
) -> (Vec<&'static Mock>, Vec<&'static SecretVar>) {
    let mocks: Vec<&'static Mock> = integrations.iter().flat_map(|i| i.mocks.iter()).collect();
    let secrets = mocks
        .iter()
        .flat_map(|m| m.secrets.iter().copied())
        .collect();
    (mocks, secrets)
}

/// Serves the routes of `integrations` on `listener` until `shutdown`; returns its URL.
pub async fn ingress(
    cfg: &Arc<Config>,
    integrations: &[&'static Integration],
    bus: Bus,
    db: PgPool,
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<String> {
    let ctx = ingress::Context {
        idempotency: Idempotency::new(bus.kv("idempotency").await?),
        http: http_client::client(cfg.http_timeout),
        cfg: cfg.clone(),
        bus,
        db,
    };
    let mut routes = Vec::new();
    for integration in integrations {
        let built = (integration.ingress.routes)(&ctx)
            .await
            .with_context(|| format!("could not start {}'s routes", integration.name))?;
        routes.push(built);
    }
    let url = server::url_of(&listener);
    let every = cfg.env.millis("METRICS_SAMPLE_MS", 15_000)?;
    tasks.spawn(crate::status::sample_metrics(
        ctx.bus.clone(),
        every,
        shutdown.clone(),
    ));
    tasks.spawn(server::serve(
        listener,
        ingress::router(&ctx, routes, contract(integrations)),
        shutdown,
    ));
    Ok(url)
}

/// The OpenAPI document of the ingress serving `integrations`.
pub fn contract(integrations: &[&'static Integration]) -> serde_json::Value {
    let apis: Vec<(&str, &crate::openapi::Api)> = integrations
        .iter()
        .map(|i| (i.name, i.ingress.api))
        .collect();
    crate::openapi::document(&apis)
}

/// Starts `consumers`: each has bound its durable and is pulling when this returns.
pub async fn consumers(
    cfg: &Arc<Config>,
    consumers: &[&'static Consumer],
    bus: Bus,
    db: PgPool,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let Some(first) = consumers.first() else {
        return Ok(());
    };
    let base = runtime::Context {
        idempotency: Idempotency::new(bus.kv("idempotency").await?),
        http: http_client::client(cfg.http_timeout),
        cfg: cfg.clone(),
        bus,
        db,
        file: first.file,
    };
    for consumer in consumers {
        let ctx = runtime::Context {
            file: consumer.file,
            ..base.clone()
        };
        let worker = (consumer.start)(&ctx)
            .with_context(|| format!("could not start consumer {}", consumer.durable()))?;
        let pulling = worker.start(ctx.bus.clone(), shutdown.clone()).await?;
        tasks.spawn(pulling.into_future());
    }
    Ok(())
}

/// Starts `services`: each can serve requests when this returns.
pub async fn services(
    cfg: &Arc<Config>,
    services: &[&'static Service],
    bus: Bus,
    db: PgPool,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let ctx = service::Context {
        http: http_client::client(cfg.http_timeout),
        cfg: cfg.clone(),
        bus,
        db,
    };
    for service in services {
        let serving = (service.start)(ctx.clone(), shutdown.clone())
            .await
            .with_context(|| format!("could not start service {}", service.name))?;
        tasks.spawn(serving);
    }
    Ok(())
}

/// The secrets `services` need.
pub fn service_secrets(services: &[&'static Service]) -> Vec<&'static SecretVar> {
    services
        .iter()
        .flat_map(|s| s.secrets.iter().copied())
        .collect()
}

/// Binds each mock at its address (`<MOCK>_ADDR`, else its default).
pub async fn bind_mocks(
    env: &Env,
    mocks: &[&'static Mock],
) -> anyhow::Result<Vec<(&'static Mock, TcpListener)>> {
    let mut bound = Vec::new();
    for mock in mocks {
        let addr = env.addr(mock.addr_var, mock.default_addr)?;
        let what = format!("the {}", mock.name);
        bound.push((*mock, server::bind(addr, &what, mock.addr_var).await?));
    }
    Ok(bound)
}

/// The variables that point the hub at `mocks` and the mocks at the ingress on `ingress_url`,
/// when they run in one process.
pub fn wiring(
    mocks: &[(&'static Mock, TcpListener)],
    ingress_url: &str,
) -> Vec<(&'static str, String)> {
    let urls: Vec<(&Mock, String)> = mocks
        .iter()
        .map(|(mock, listener)| (*mock, server::url_of(listener)))
        .collect();
    mocks::wiring(urls.iter().map(|(m, url)| (*m, url.as_str())), ingress_url)
}

/// Starts each mock on its listener with the settings of `env`.
pub fn mocks(
    env: &Env,
    mocks: Vec<(&'static Mock, TcpListener)>,
    shutdown: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<Vec<mocks::Running>> {
    let mut running = Vec::new();
    for (mock, listener) in mocks {
        let routes =
            (mock.start)(env).with_context(|| format!("could not start the {}", mock.name))?;
        let (started, server) = mocks::start(mock, listener, routes, shutdown.clone());
        tasks.spawn(server);
        running.push(started);
    }
    Ok(running)
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
