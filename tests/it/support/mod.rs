//! A hub per test: real NATS and Postgres, a fresh database and subject prefix, the partner
//! mocks of the integrations it runs on port 0 and wired to it, retry schedules in
//! milliseconds. It knows no integration: each test module brings its integration's settings
//! ([`Options::new`]) and its own helpers.

#![allow(dead_code)]

pub mod cluster;
pub mod outage;
pub mod process;
pub mod test_stream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ihub::config::{Config, Env};
use ihub::mocks::{Mocked, Running};
use ihub::nats::{Bus, provision};
use ihub::startup::{self, Tasks};
use serde_json::Value;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Tracing as the hub runs it (trace context flows), logs to the captured test output.
pub fn init_logs() {
    static TELEMETRY: std::sync::OnceLock<ihub::telemetry::Telemetry> = std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| {
        ihub::telemetry::init("ihub-test", None, ihub::telemetry::Logs::TestCapture)
            .expect("telemetry")
    });
}

/// The NATS server under test: `NATS_URL` when set (to run the suite against another server
/// version), else the local default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Keeps one stream on the shared server for good. NATS 2.9 removes the account's store
/// directory when its last stream is deleted, and a stream created at that moment fails with
/// "could not create storage directory" (10049): with tests deleting their streams in
/// parallel, that happens.
async fn keep_jetstream_store(url: &str) {
    let Ok(bus) = Bus::connect(url, "", "ihub-test-anchor").await else {
        return;
    };
    let _ = bus
        .js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "IHUB_TEST_ANCHOR".into(),
            subjects: vec!["ihub-test-anchor".into()],
            max_messages: 1,
            ..Default::default()
        })
        .await;
}

/// A fresh name for a test's prefix and database.
pub fn unique(letter: char) -> String {
    format!(
        "{letter}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// What a test hub runs, and how it differs from the default.
#[derive(Default)]
pub struct Options {
    /// The integrations it runs (their routes, consumers and mocks).
    pub integrations: Vec<&'static str>,
    /// Run no consumers in this process (tests that run `ihub consume` processes).
    pub no_consumers: bool,
    /// Run no ingress in this process (tests that run `ihub ingress` processes).
    pub no_ingress: bool,
    /// Environment: the integration's test settings, and a test's overrides after them.
    pub env: Vec<(&'static str, String)>,
    /// Where the hub reaches Postgres, when not directly (a test's cuttable proxy).
    pub database_addr: Option<String>,
}

impl Options {
    pub fn new(integration: &'static str, env: &[(&'static str, &str)]) -> Self {
        Options {
            integrations: vec![integration],
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ..Options::default()
        }
    }

    /// This, with `overrides` winning over the integration's settings.
    pub fn with(mut self, overrides: Vec<(&'static str, String)>) -> Self {
        self.env.extend(overrides);
        self
    }
}

pub struct Hub {
    pub cfg: Arc<Config>,
    pub vars: HashMap<String, String>,
    /// The ingress (empty with `no_ingress`).
    pub url: String,
    pub http: reqwest::Client,
    pub mocks: Vec<Running>,
    pub db: PgPool,
    pub bus: Bus,
    pub shutdown: CancellationToken,
    tasks: Option<Tasks>,
    cleanup: Cleanup,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port")
}

impl Hub {
    pub async fn start(options: Options) -> Hub {
        init_logs();
        let integrations = ihub::integrations::select(
            &options
                .integrations
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("the test names known integrations");
        let prefix = unique('t');
        let database_addr = options
            .database_addr
            .clone()
            .unwrap_or_else(|| "127.0.0.1:5432".into());
        let database_url = format!("postgres://postgres@{database_addr}/ihub_{prefix}");

        let ingress_listener = listener().await;
        let (mocks, _) = startup::mocks_of(&integrations);
        let mut bound = Vec::new();
        for mock in mocks {
            bound.push((mock, listener().await));
        }
        let wires = startup::wiring(&bound, &ihub::server::url_of(&ingress_listener));

        let mut vars: HashMap<String, String> = [
            ("NATS_URL", nats_url()),
            ("NATS_PREFIX", prefix.clone()),
            ("DATABASE_URL", database_url.clone()),
            ("HTTP_TIMEOUT_MS", "2000".into()),
            ("ACK_WAIT_MS", "4000".into()),
            ("BREAKER_FAILURES", "1000".into()),
            ("CONSUMER_CONCURRENCY", "16".into()),
        ]
        .into_iter()
        .chain(wires)
        .chain(options.env)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        vars.retain(|_, v| !v.is_empty());
        let cfg = Config::load(Env::from_pairs(vars.clone())).expect("test config");
        let cleanup = Cleanup {
            nats_url: cfg.nats_url.expose().to_string(),
            prefix: prefix.clone(),
            database_url: database_url.clone(),
        };
        keep_jetstream_store(&nats_url()).await;
        startup::setup(&cfg, |_| {}).await.expect("setup");
        let cfg = Arc::new(cfg);

        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new();
        let (bus, db) = startup::connect(&cfg, "test", 8).await.expect("connect");
        let mocks = startup::mocks(&cfg.env, bound, &shutdown, &mut tasks).expect("mocks");
        if !options.no_consumers {
            let consumers = ihub::integrations::consumers(&integrations, &[]).expect("consumers");
            startup::consumers(
                &cfg,
                &consumers,
                bus.clone(),
                db.clone(),
                &shutdown,
                &mut tasks,
            )
            .await
            .expect("consumers");
            let services = ihub::integrations::services(&integrations, &[]);
            startup::services(
                &cfg,
                &services,
                bus.clone(),
                db.clone(),
                &shutdown,
                &mut tasks,
            )
            .await
            .expect("services");
        }
        let url = if options.no_ingress {
            String::new()
        } else {
            startup::ingress(
                &cfg,
                &integrations,
                bus.clone(),
                db.clone(),
                ingress_listener,
                shutdown.clone(),
                &mut tasks,
            )
            .await
            .expect("ingress")
        };

        Hub {
            cfg,
            vars,
            url,
            http: reqwest::Client::new(),
            mocks,
            db,
            bus,
            shutdown,
            tasks: Some(tasks),
            cleanup,
        }
    }

    /// [`Hub::env`] with `HTTP_ADDR` where this hub's ingress listens, as `ihub dev` binds it
    /// (what `ihub bench` reads to find the hub).
    pub fn env_as_dev(&self) -> Vec<(String, String)> {
        let mut env = self.env();
        env.push((
            "HTTP_ADDR".into(),
            self.url.trim_start_matches("http://").to_string(),
        ));
        env
    }

    /// `GET path` on the ingress with `Authorization: Bearer <token>`: status and JSON body.
    pub async fn get_with_bearer(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the ingress answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The running mock of type `T`.
    pub fn mock<T: Send + Sync + 'static>(&self) -> Mocked<T> {
        self.mocks
            .iter()
            .find_map(Running::typed::<T>)
            .unwrap_or_else(|| panic!("no {} runs", std::any::type_name::<T>()))
    }

    pub async fn messages_in(&self, stream: &str) -> u64 {
        let name = match stream {
            "KV_idempotency" => format!("KV_{}", self.bus.names.kv_bucket("idempotency")),
            other => self.bus.names.stream(other),
        };
        self.bus
            .js
            .get_stream(&name)
            .await
            .expect("stream")
            .get_info()
            .await
            .expect("stream info")
            .state
            .messages
    }

    /// Every message of a stream, as (unprefixed subject, payload, headers).
    pub async fn stream_messages(
        &self,
        stream: &str,
    ) -> Vec<(String, Value, async_nats::HeaderMap)> {
        let stream = self.bus.stream(stream).await.expect("stream");
        let state = stream.get_info().await.expect("info").state;
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                let subject = self.bus.names.unprefixed(&message.subject).to_string();
                let payload = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
                out.push((subject, payload, message.headers));
            }
        }
        out
    }

    /// Checks every event on INBOUND and OUTBOUND against the schema of its subject; returns
    /// the subjects, in stream order.
    pub async fn assert_events_match_schemas(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for stream in ["INBOUND", "OUTBOUND"] {
            for (subject, payload, _) in self.stream_messages(stream).await {
                let schema = ihub::integrations::schema_for(&subject)
                    .unwrap_or_else(|| panic!("no schema for {subject}"));
                if let Err(errors) = schema.check(&payload) {
                    panic!("{subject} breaks {}: {errors:?}\n{payload}", schema.name);
                }
                seen.push(subject);
            }
        }
        seen
    }

    /// (attempt, status code) of every call to `target` about `subject_id`, in order.
    pub async fn attempts(&self, target: &str, subject_id: &str) -> Vec<(i32, Option<i32>)> {
        sqlx::query_as(
            "SELECT attempt, status_code FROM delivery_attempts
             WHERE target = $1 AND subject_id = $2 ORDER BY id",
        )
        .bind(target)
        .bind(subject_id)
        .fetch_all(&self.db)
        .await
        .expect("query")
    }

    /// Whether durable `durable` of `stream` has nothing pending and nothing in hand: no
    /// message of it can be delivered again.
    pub async fn is_idle(&self, stream: &str, durable: &str) -> bool {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = self
            .bus
            .stream(stream)
            .await
            .expect("stream")
            .get_consumer(durable)
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("consumer info");
        info.num_pending == 0 && info.num_ack_pending == 0
    }

    /// Environment for an `ihub` subprocess working on this hub.
    pub fn env(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(tasks) = self.tasks.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                startup::supervise(tasks, self.shutdown.clone()),
            )
            .await;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Deletes a test's streams and database, even when the test panicked.
pub struct Cleanup {
    pub nats_url: String,
    pub prefix: String,
    pub database_url: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let nats_url = self.nats_url.clone();
        let prefix = self.prefix.clone();
        let database_url = self.database_url.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                if let Ok(bus) = Bus::connect(&nats_url, &prefix, "ihub-test-cleanup").await {
                    let _ = provision::delete_all(&bus.js, &bus.names).await;
                }
                if !database_url.is_empty() {
                    let _ = ihub::db::drop_database(&database_url).await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
