//! Every part of every integration (its routes, each consumer and service, its mocks) starts with exactly the
//! secrets it declares: a process asks only for the secrets of what it runs, and names each one
//! it misses.

use std::sync::Arc;

use ihub::config::{Config, Env, SecretVar};
use ihub::integration::Integration;
use ihub::integrations::ALL;
use ihub::startup::{self, Tasks};
use tokio_util::sync::CancellationToken;

use crate::support::{Hub, Options};

/// Both integrations' test settings; their parts are started one by one below.
fn hub_options() -> Options {
    let mut env = crate::wallet::options().env;
    env.extend(crate::wavegate::options().env);
    env.extend(crate::newstore::options().env);
    env.extend(crate::casino::options("[]").env);
    env.extend(crate::max::options().env);
    Options {
        integrations: Vec::new(),
        no_consumers: true,
        no_ingress: true,
        env,
        ..Options::default()
    }
}

/// The hub's settings without any secret but `keep`.
fn config_with(hub: &Hub, keep: &[&SecretVar]) -> Arc<Config> {
    let secrets: Vec<&str> = ALL
        .iter()
        .flat_map(|i| i.secrets())
        .map(|s| s.name)
        .chain(["OPERATOR_WEBHOOK_SECRET", "CALLBACK_SIGNING_SECRET"])
        .collect();
    let vars = hub
        .vars
        .iter()
        .filter(|(name, _)| !secrets.contains(&name.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(
            keep.iter()
                .map(|s| (s.name.to_string(), "s3cret".to_string())),
        );
    Arc::new(Config::load(Env::from_pairs(vars)).expect("config"))
}

/// Starts one part with the settings of `cfg`.
async fn start(
    hub: &Hub,
    cfg: &Arc<Config>,
    integration: &'static Integration,
    part: &Part,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    match part {
        Part::Ingress => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            startup::ingress(
                cfg,
                &[integration],
                hub.bus.clone(),
                hub.db.clone(),
                listener,
                shutdown.clone(),
                tasks,
            )
            .await
            .map(|_| ())
        }
        Part::Consumer(index) => {
            let consumer = &integration.consumers[*index];
            startup::consumers(
                cfg,
                &[consumer],
                hub.bus.clone(),
                hub.db.clone(),
                shutdown,
                tasks,
            )
            .await
        }
        Part::Service(index) => {
            let service = &integration.services[*index];
            startup::services(
                cfg,
                &[service],
                hub.bus.clone(),
                hub.db.clone(),
                shutdown,
                tasks,
            )
            .await
        }
        Part::Mocks => {
            let (mocks, _) = startup::mocks_of(&[integration]);
            let mut bound = Vec::new();
            for mock in mocks {
                bound.push((mock, tokio::net::TcpListener::bind("127.0.0.1:0").await?));
            }
            startup::mocks(&cfg.env, bound, shutdown, tasks).map(|_| ())
        }
    }
}

enum Part {
    Ingress,
    Consumer(usize),
    Service(usize),
    Mocks,
}

#[tokio::test]
async fn every_part_starts_with_exactly_the_secrets_it_declares() {
    let hub = Hub::start(hub_options()).await;
    let shutdown = CancellationToken::new();
    let mut tasks = Tasks::new();
    for integration in ALL {
        let mut parts = vec![(
            "routes".to_string(),
            Part::Ingress,
            integration.ingress.secrets.to_vec(),
        )];
        for (index, consumer) in integration.consumers.iter().enumerate() {
            parts.push((
                consumer.durable().to_string(),
                Part::Consumer(index),
                consumer.secrets.to_vec(),
            ));
        }
        for (index, service) in integration.services.iter().enumerate() {
            parts.push((
                service.name.to_string(),
                Part::Service(index),
                service.secrets.to_vec(),
            ));
        }
        parts.push((
            "mocks".into(),
            Part::Mocks,
            startup::mocks_of(&[integration]).1,
        ));
        for (name, part, declared) in parts {
            let what = format!("{}'s {name}", integration.name);
            let cfg = config_with(&hub, &declared);
            start(&hub, &cfg, integration, &part, &mut tasks, &shutdown)
                .await
                .unwrap_or_else(|err| panic!("{what} with {declared:?}: {err:#}"));
            for missing in &declared {
                let fewer: Vec<&SecretVar> =
                    declared.iter().copied().filter(|s| s != missing).collect();
                let cfg = config_with(&hub, &fewer);
                let err = start(&hub, &cfg, integration, &part, &mut tasks, &shutdown)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{what} started without {}", missing.name));
                let err = format!("{err:#}");
                assert!(err.contains(missing.name), "{what}: {err}");
            }
        }
    }
    shutdown.cancel();
    startup::supervise(tasks, shutdown).await.expect("stopped");
    hub.stop().await;
}
