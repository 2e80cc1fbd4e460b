//! A whole hub per test: real NATS and Postgres, a fresh database and subject prefix, partner
//! mocks on port 0, retry schedules in milliseconds.

#![allow(dead_code)]

pub mod process;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ihub::config::{Config, Secret};
use ihub::mocks::operator::OperatorMock;
use ihub::mocks::ota::OtaMock;
use ihub::mocks::rgs::RgsMock;
use ihub::mocks::ticketing::TicketingMock;
use ihub::nats::{Bus, provision};
use ihub::signatures::TimestampedHmac;
use ihub::startup::{self, Tasks};
use serde_json::Value;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-wallet-secret";
pub const RECONCILIATION_TOKEN: &str = "test-reconciliation-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const CALLBACK_SECRET: &str = "test-callback-signing-secret";
/// The WaveGate partners every test hub knows: `acme` may call from anywhere, `globex` only
/// from 10.0.0.0/8 (so from this machine only through a trusted proxy).
pub const PARTNERS: &[(&str, &str)] = &[("acme", "acme-token-1"), ("globex", "globex-token-1")];

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

/// How a test hub differs from the default.
#[derive(Default)]
pub struct Options {
    /// Run no consumers in this process (tests that run `ihub consume` processes).
    pub no_consumers: bool,
    /// Run no ingress in this process (tests that run `ihub ingress` processes).
    pub no_ingress: bool,
    /// Environment overrides.
    pub env: Vec<(&'static str, String)>,
}

pub struct Hub {
    pub cfg: Arc<Config>,
    pub vars: HashMap<String, String>,
    pub url: String,
    pub http: reqwest::Client,
    pub operator: Arc<OperatorMock>,
    pub rgs: Arc<RgsMock>,
    pub ticketing: Arc<TicketingMock>,
    pub ota: Arc<OtaMock>,
    /// `http://127.0.0.1:<port>` of the OTA partner mock (callbacks go to `/callbacks/...`).
    pub ota_url: String,
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
    pub async fn start() -> Hub {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Hub {
        init_logs();
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let prefix = format!("t{id}");
        let database_url = format!("postgres://postgres@127.0.0.1:5432/ihub_t{id}");

        let ingress_listener = listener().await;
        let operator_listener = listener().await;
        let rgs_listener = listener().await;
        let ticketing_listener = listener().await;
        let ota_listener = listener().await;
        let ingress_url = ihub::mocks::url_of(&ingress_listener);
        let operator_url = ihub::mocks::url_of(&operator_listener);
        let rgs_url = ihub::mocks::url_of(&rgs_listener);
        let ticketing_url = ihub::mocks::url_of(&ticketing_listener);
        let partners = serde_json::json!([
            {"id": PARTNERS[0].0, "name": "Acme Travel", "token": PARTNERS[0].1,
             "allowlist_cidrs": ["0.0.0.0/0", "::/0"]},
            {"id": PARTNERS[1].0, "name": "Globex Tours", "token": PARTNERS[1].1,
             "allowlist_cidrs": ["10.0.0.0/8"]},
        ]);

        let mut vars: HashMap<String, String> = [
            ("NATS_URL", nats_url()),
            ("NATS_PREFIX", prefix.clone()),
            ("DATABASE_URL", database_url.clone()),
            ("WALLET_HMAC_SECRET", SECRET.into()),
            ("RECONCILIATION_TOKEN", RECONCILIATION_TOKEN.into()),
            ("OPERATOR_URL", operator_url),
            ("RGS_WEBHOOK_URL", format!("{rgs_url}/webhooks")),
            (
                "HUB_CALLBACK_URL",
                format!("{ingress_url}/webhooks/incoming"),
            ),
            ("HTTP_TIMEOUT_MS", "2000".into()),
            ("ACK_WAIT_MS", "4000".into()),
            ("OPERATOR_RETRY_BASE_MS", "20".into()),
            ("OPERATOR_RETRY_MAX_MS", "100".into()),
            ("OPERATOR_RETRY_ATTEMPTS", "5".into()),
            ("RGS_RETRY_BASE_MS", "20".into()),
            ("RGS_RETRY_MAX_MS", "100".into()),
            ("RGS_RETRY_ATTEMPTS", "4".into()),
            ("BREAKER_FAILURES", "1000".into()),
            ("CONSUMER_CONCURRENCY", "16".into()),
            ("PARTNERS_JSON", partners.to_string()),
            ("APP_HMAC_SECRET", "test-app-hmac-secret".into()),
            ("ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("CALLBACK_SIGNING_SECRET", CALLBACK_SECRET.into()),
            ("TICKETING_URL", format!("{ticketing_url}/orders")),
            ("ALLOW_PRIVATE_CALLBACKS", "1".into()),
            ("REQUIRE_HTTPS_CALLBACKS", "0".into()),
            ("ALLOWED_CALLBACK_PORTS", "*".into()),
            ("WAVEGATE_RETRY_OFFSETS_MS", "0,20,50,90,140".into()),
            ("RATE_LIMIT_CAPACITY", "1000".into()),
            ("RATE_LIMIT_PER_SEC", "1000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (key, value) in options.env {
            vars.insert(key.to_string(), value);
        }
        let cfg = Config::from_lookup(|name| vars.get(name).cloned()).expect("test config");
        let cleanup = Cleanup {
            nats_url: cfg.nats_url.clone(),
            prefix: prefix.clone(),
            database_url: database_url.clone(),
        };
        startup::setup(&cfg, |_| {}).await.expect("setup");
        let cfg = Arc::new(cfg);

        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new();
        let (bus, db) = startup::connect(&cfg, "test", 8).await.expect("connect");
        let listeners = startup::MockListeners {
            operator: operator_listener,
            rgs: rgs_listener,
            ticketing: ticketing_listener,
            ota: ota_listener,
        };
        let mocks = startup::mocks(&cfg, listeners, &shutdown, &mut tasks).expect("mocks");
        if !options.no_consumers {
            startup::consumers(&cfg, bus.clone(), db.clone(), &[], &shutdown, &mut tasks)
                .await
                .expect("consumers");
        }
        let url = if options.no_ingress {
            String::new()
        } else {
            startup::ingress(
                &cfg,
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
            operator: mocks.operator,
            rgs: mocks.rgs,
            ticketing: mocks.ticketing,
            ota: mocks.ota,
            ota_url: mocks.ota_url,
            db,
            bus,
            shutdown,
            tasks: Some(tasks),
            cleanup,
        }
    }

    pub fn signer(&self) -> TimestampedHmac {
        TimestampedHmac::new(Secret::new(SECRET), Duration::from_secs(300))
    }

    /// POSTs `body` signed now, with an Idempotency-Key when given, plus `extra` headers.
    pub async fn post_signed(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        for (name, value) in self.signer().headers_for(body) {
            request = request.header(name, value);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the ingress answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A debit or credit that waits for its outcome.
    pub async fn transact(&self, kind: &str, key: &str, body: &Value) -> (u16, Value) {
        self.post_signed(
            &format!("/wallet/{kind}"),
            Some(key),
            body,
            &[("prefer", "wait=10")],
        )
        .await
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
                let schema = ihub::schemas::for_subject(&subject)
                    .unwrap_or_else(|| panic!("no schema for {subject}"));
                if let Err(errors) = schema.check(&payload) {
                    panic!("{subject} breaks {}: {errors:?}\n{payload}", schema.name);
                }
                seen.push(subject);
            }
        }
        seen
    }

    pub async fn transaction_status(&self, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM wallet_transactions WHERE id::text = $1")
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .expect("query")
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

/// Deletes the test's streams and database, even when the test panicked.
struct Cleanup {
    nats_url: String,
    prefix: String,
    database_url: String,
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
                let _ = ihub::db::drop_database(&database_url).await;
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

pub fn debit_body(player: &str, amount: i64, currency: &str) -> Value {
    serde_json::json!({"player_id": player, "amount": amount, "currency": currency})
}
