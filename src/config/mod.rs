//! Settings from environment variables, with defaults that run on one machine. [`Config`] holds
//! the core's own (NATS, Postgres, HTTP, telemetry, consumer defaults); each integration reads
//! its own section, secrets included, from the same [`Env`] when one of its parts starts.

mod env;
mod secret;

pub use env::{Env, parse_net};
pub use secret::{Secret, SecretVar, ServiceUrl, mask_password};

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where every setting comes from; the integrations read their sections from it.
    pub env: Env,
    /// One NATS server, or a comma-separated list of the servers of a cluster.
    pub nats_url: ServiceUrl,
    /// Replicas of every stream and KV bucket `ihub setup` creates or updates (1 to 5; 3 on a
    /// 3-node cluster).
    pub nats_replicas: usize,
    /// Prefix for every stream, subject and bucket name; empty in production, unique per test.
    pub nats_prefix: String,
    pub database_url: ServiceUrl,
    pub http_addr: SocketAddr,
    pub otlp_endpoint: Option<String>,
    /// OTEL_SERVICE_NAME; unset, each command names itself `ihub-<command>`.
    pub service_name: Option<String>,
    /// The timeout of every partner call.
    pub http_timeout: Duration,
    /// Overrides the `ack_wait` of the consumer definitions in `nats/` when set.
    pub ack_wait: Option<Duration>,
    /// Messages in flight per consumer per process, unless the consumer says otherwise.
    pub consumer_concurrency: usize,
    /// Circuit breaker of a delivery target: failures in a row, then open for this long.
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    /// The longest `Prefer: wait=N` the ingress honours.
    pub max_wait: Duration,
    /// How long a publish (or idempotency claim) may wait for NATS before the ingress answers
    /// 503 with `Retry-After` and a stage holds its message.
    pub publish_timeout: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Env::process())
    }

    pub fn load(env: Env) -> anyhow::Result<Self> {
        let http_timeout = env.millis("HTTP_TIMEOUT_MS", 10_000)?;
        let ack_wait = env.optional_millis("ACK_WAIT_MS")?;
        if let Some(ack_wait) = ack_wait
            && ack_wait <= http_timeout
        {
            bail!(
                "ACK_WAIT_MS ({}) must be longer than HTTP_TIMEOUT_MS ({}), or a slow partner call \
                 would be redelivered while it is still running",
                ack_wait.as_millis(),
                http_timeout.as_millis()
            );
        }
        let nats_prefix = env.text("NATS_PREFIX", "");
        if !nats_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("NATS_PREFIX={nats_prefix:?} may hold only letters, digits, '-' and '_'");
        }
        let nats_replicas = env.whole("NATS_REPLICAS", 1)?;
        if !(1..=5).contains(&nats_replicas) {
            bail!(
                "NATS_REPLICAS={nats_replicas} must be 1 to 5 (JetStream keeps at most 5 copies \
                 of a stream; use 3 on a 3-node cluster, 1 on a single server)"
            );
        }
        Ok(Config {
            nats_url: ServiceUrl::new(env.text("NATS_URL", "nats://127.0.0.1:4222")),
            nats_replicas: nats_replicas as usize,
            nats_prefix,
            database_url: ServiceUrl::new(
                env.text("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ihub"),
            ),
            http_addr: env.addr("HTTP_ADDR", "127.0.0.1:8000")?,
            otlp_endpoint: env.non_empty("OTEL_EXPORTER_OTLP_ENDPOINT"),
            service_name: env.non_empty("OTEL_SERVICE_NAME"),
            http_timeout,
            ack_wait,
            consumer_concurrency: env.whole("CONSUMER_CONCURRENCY", 64)?.max(1) as usize,
            breaker_failures: env.whole("BREAKER_FAILURES", 5)?.max(1) as u32,
            breaker_open: env.millis("BREAKER_OPEN_MS", 30_000)?,
            max_wait: Duration::from_secs(10),
            publish_timeout: env
                .millis("PUBLISH_TIMEOUT_MS", 2_000)?
                .max(Duration::from_millis(1)),
            env,
        })
    }

    /// The same settings over another environment (`ihub dev` adds the mocks' URLs).
    pub fn with_env(&self, env: Env) -> Self {
        Self {
            env,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::load(Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn defaults_run_on_one_machine() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.nats_url.expose(), "nats://127.0.0.1:4222");
        assert_eq!(
            cfg.database_url.expose(),
            "postgres://postgres@127.0.0.1:5432/ihub"
        );
        assert_eq!(cfg.http_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(cfg.http_timeout, Duration::from_secs(10));
        assert_eq!(cfg.consumer_concurrency, 64);
        assert_eq!(cfg.ack_wait, None);
        assert_eq!(cfg.nats_replicas, 1);
    }

    #[test]
    fn nats_replicas_are_1_to_5() {
        assert_eq!(config(&[("NATS_REPLICAS", "3")]).unwrap().nats_replicas, 3);
        assert_eq!(config(&[("NATS_REPLICAS", "5")]).unwrap().nats_replicas, 5);
        for bad in ["0", "6", "-1", "three"] {
            let err = format!("{:#}", config(&[("NATS_REPLICAS", bad)]).unwrap_err());
            assert!(err.contains("NATS_REPLICAS"), "{err}");
        }
        let err = format!("{:#}", config(&[("NATS_REPLICAS", "7")]).unwrap_err());
        assert!(err.contains("1 to 5"), "{err}");
    }

    #[test]
    fn debug_shows_no_secret_and_no_password() {
        let cfg = config(&[
            ("WALLET_HMAC_SECRET", "hunter2"),
            ("DATABASE_URL", "postgres://ihub:pg-pass-77@db:5432/ihub"),
            (
                "NATS_URL",
                "nats://hub:nats-pass-88@n1:4222,nats://hub:nats-pass-99@n2:4222",
            ),
        ])
        .unwrap();
        let shown = format!("{cfg:?}");
        for secret in ["hunter2", "pg-pass-77", "nats-pass-88", "nats-pass-99"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://ihub:***@db:5432/ihub"),
            "{shown}"
        );
        assert!(
            shown.contains("nats://hub:***@n1:4222,nats://hub:***@n2:4222"),
            "every server of a cluster is shown: {shown}"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, name) in [
            (&[("HTTP_TIMEOUT_MS", "soon")][..], "HTTP_TIMEOUT_MS"),
            (&[("HTTP_ADDR", "localhost")][..], "HTTP_ADDR"),
            (&[("NATS_PREFIX", "a.b")][..], "NATS_PREFIX"),
            (
                &[("ACK_WAIT_MS", "500"), ("HTTP_TIMEOUT_MS", "1000")][..],
                "ACK_WAIT_MS",
            ),
        ] {
            let err = format!("{:#}", config(vars).unwrap_err());
            assert!(err.contains(name), "{err}");
        }
    }
}
