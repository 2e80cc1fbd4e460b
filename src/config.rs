//! Settings from environment variables, with defaults that run on one machine.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::domain::Currency;
use crate::runtime::Schedule;

/// A secret value: printable only on purpose, never through `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The secrets ihub reads, by environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretVar {
    WalletHmac,
    ReconciliationToken,
    AppHmac,
    AdminToken,
}

impl SecretVar {
    pub fn env_name(self) -> &'static str {
        match self {
            SecretVar::WalletHmac => "WALLET_HMAC_SECRET",
            SecretVar::ReconciliationToken => "RECONCILIATION_TOKEN",
            SecretVar::AppHmac => "APP_HMAC_SECRET",
            SecretVar::AdminToken => "ADMIN_TOKEN",
        }
    }
    /// The value `ihub dev` uses when the environment sets none (documented in the README).
    pub fn demo_value(self) -> &'static str {
        match self {
            SecretVar::WalletHmac => "dev-wallet-secret",
            SecretVar::ReconciliationToken => "dev-reconciliation-token",
            SecretVar::AppHmac => "dev-app-hmac-secret",
            SecretVar::AdminToken => "dev-admin-token",
        }
    }

    /// Every secret, in the order start-up messages name them.
    pub const ALL: [SecretVar; 4] = [
        SecretVar::WalletHmac,
        SecretVar::ReconciliationToken,
        SecretVar::AppHmac,
        SecretVar::AdminToken,
    ];
}

/// What `ihub dev` assumes where the environment says nothing, besides the required demo
/// secrets: the demo WaveGate partner, signed callbacks, and callbacks to the local OTA mock
/// over plain HTTP.
pub const DEV_DEFAULTS: &[(&str, &str)] = &[
    (
        "PARTNERS_JSON",
        r#"[{"id":"demo","name":"Demo Partner","token":"demotoken","allowlist_cidrs":["0.0.0.0/0","::/0"]}]"#,
    ),
    ("CALLBACK_SIGNING_SECRET", "dev-callback-secret"),
    ("ALLOW_PRIVATE_CALLBACKS", "1"),
    ("REQUIRE_HTTPS_CALLBACKS", "0"),
    ("ALLOWED_CALLBACK_PORTS", "*"),
];

#[derive(Clone, Debug)]
pub struct Config {
    pub nats_url: String,
    /// Prefix for every stream, subject and bucket name; empty in production, unique per test.
    pub nats_prefix: String,
    pub database_url: String,
    pub http_addr: SocketAddr,
    pub operator_url: String,
    pub rgs_webhook_url: String,
    pub wallet_hmac_secret: Option<Secret>,
    /// Secret the operator signs `/webhooks/incoming` with; the wallet secret when unset.
    pub operator_webhook_secret: Option<Secret>,
    pub reconciliation_token: Option<Secret>,
    pub wallet_currencies: Vec<Currency>,
    pub signature_tolerance: Duration,
    pub otlp_endpoint: Option<String>,
    /// OTEL_SERVICE_NAME; unset, each command names itself `ihub-<command>`.
    pub service_name: Option<String>,
    pub http_timeout: Duration,
    /// Overrides the `ack_wait` of the consumer definitions in `nats/` when set.
    pub ack_wait: Option<Duration>,
    pub consumer_concurrency: usize,
    pub operator_rate_limit_per_sec: u32,
    pub operator_retry: Schedule,
    pub rgs_retry: Schedule,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub max_wait: Duration,
    pub wavegate: WaveGateConfig,
    pub mocks: MockConfig,
}

/// WaveGate (seed 3): OTA partner orders → ticketing → partner callback.
#[derive(Clone, Debug)]
pub struct WaveGateConfig {
    /// Partners to seed at `ihub setup` (the seed's JSON list); unset, the table is left as is.
    pub partners_json: Option<String>,
    /// Key of the partner token hashes.
    pub app_hmac_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    /// Signs callbacks (`X-Callback-Signature`, Standard Webhooks) when set.
    pub callback_signing_secret: Option<Secret>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub rate_limit_capacity: u32,
    pub rate_limit_per_sec: f64,
    pub callbacks: crate::ssrf::CallbackPolicy,
    /// Callbacks in flight per consumer process.
    pub callback_concurrency: usize,
    pub ticketing_url: String,
    /// Retry schedule of ticketing and callbacks: attempt offsets from the first.
    pub retry: Schedule,
}

/// Settings of the partner mocks (`ihub mocks`, `ihub dev`).
#[derive(Clone, Debug)]
pub struct MockConfig {
    pub operator_addr: SocketAddr,
    pub rgs_addr: SocketAddr,
    /// Where the operator mock posts its asynchronous callbacks.
    pub hub_callback_url: String,
    pub operator_currencies: Vec<String>,
    pub operator_initial_balance_minor: i64,
    pub ticketing_addr: SocketAddr,
    pub ota_addr: SocketAddr,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_string());
        let parsed = |name: &str, default: &str| -> anyhow::Result<u64> {
            let raw = var(name, default);
            raw.trim()
                .parse::<u64>()
                .with_context(|| format!("{name}={raw:?} is not a whole number"))
        };
        let secret = |name: &str| get(name).filter(|v| !v.is_empty()).map(Secret::new);
        let addr = |name: &str, default: &str| -> anyhow::Result<SocketAddr> {
            let raw = var(name, default);
            SocketAddr::from_str(raw.trim()).with_context(|| {
                format!("{name}={raw:?} is not a socket address like 127.0.0.1:8000")
            })
        };
        let schedule = |target: &str, base_ms: &str, max_ms: &str, attempts: &str| {
            let base = parsed(&format!("{target}_RETRY_BASE_MS"), base_ms)?;
            let max = parsed(&format!("{target}_RETRY_MAX_MS"), max_ms)?;
            let attempts = parsed(&format!("{target}_RETRY_ATTEMPTS"), attempts)?;
            if attempts == 0 {
                bail!("{target}_RETRY_ATTEMPTS must be at least 1");
            }
            anyhow::Ok(Schedule::Exponential {
                base: Duration::from_millis(base),
                max: Duration::from_millis(max.max(base)),
                attempts: attempts as u32,
            })
        };

        let wallet_currencies = var("WALLET_CURRENCIES", "EUR,USD,GBP")
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| Currency::parse(c).with_context(|| format!("WALLET_CURRENCIES: {c:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if wallet_currencies.is_empty() {
            bail!("WALLET_CURRENCIES is empty: list at least one ISO 4217 code, e.g. EUR,USD");
        }

        let http_timeout = Duration::from_millis(parsed("HTTP_TIMEOUT_MS", "10000")?);
        let ack_wait = get("ACK_WAIT_MS")
            .map(|raw| {
                raw.trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .with_context(|| format!("ACK_WAIT_MS={raw:?} is not a whole number"))
            })
            .transpose()?;
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

        let flag = |name: &str, default: &str| -> anyhow::Result<bool> {
            match var(name, default).trim() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                other => bail!("{name}={other:?} must be 1 or 0"),
            }
        };
        let list = |name: &str, default: &str| -> Vec<String> {
            var(name, default)
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        let trusted_proxies = list("TRUSTED_PROXIES", "")
            .iter()
            .map(|raw| parse_net(raw).with_context(|| format!("TRUSTED_PROXIES: {raw:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let allowed_ports = match var("ALLOWED_CALLBACK_PORTS", "443").trim() {
            "*" => None,
            raw => Some(
                raw.split(',')
                    .map(|p| {
                        p.trim().parse::<u16>().with_context(|| {
                            format!("ALLOWED_CALLBACK_PORTS: {p:?} is not a port (or use *)")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
        };
        let allowed_hosts = list("ALLOWED_CALLBACK_HOSTS", "");
        let rate_limit_per_sec: f64 = {
            let raw = var("RATE_LIMIT_PER_SEC", "1");
            raw.trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r > 0.0)
                .with_context(|| format!("RATE_LIMIT_PER_SEC={raw:?} must be a number above 0"))?
        };
        let retry_offsets = {
            let raw = var(
                "WAVEGATE_RETRY_OFFSETS_MS",
                "0,2000,6000,12000,20000,30000,45000,65000,90000,120000,155000,195000,235000,270000,300000",
            );
            let offsets = raw
                .split(',')
                .map(|n| n.trim().parse::<u64>().map(Duration::from_millis))
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|o| !o.is_empty() && o.is_sorted())
                .with_context(|| {
                    format!(
                        "WAVEGATE_RETRY_OFFSETS_MS={raw:?} must list rising millisecond offsets, \
                         e.g. 0,2000,6000"
                    )
                })?;
            Schedule::Offsets(offsets)
        };

        let nats_prefix = var("NATS_PREFIX", "");
        if !nats_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("NATS_PREFIX={nats_prefix:?} may hold only letters, digits, '-' and '_'");
        }

        Ok(Config {
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
            nats_prefix,
            database_url: var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ihub"),
            http_addr: addr("HTTP_ADDR", "127.0.0.1:8000")?,
            operator_url: var("OPERATOR_URL", "http://127.0.0.1:8001")
                .trim_end_matches('/')
                .to_string(),
            rgs_webhook_url: var("RGS_WEBHOOK_URL", "http://127.0.0.1:8002/webhooks"),
            wallet_hmac_secret: secret("WALLET_HMAC_SECRET"),
            operator_webhook_secret: secret("OPERATOR_WEBHOOK_SECRET"),
            reconciliation_token: secret("RECONCILIATION_TOKEN"),
            wallet_currencies,
            signature_tolerance: Duration::from_secs(parsed("SIGNATURE_TOLERANCE_SECS", "300")?),
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()),
            service_name: get("OTEL_SERVICE_NAME").filter(|v| !v.is_empty()),
            http_timeout,
            ack_wait,
            consumer_concurrency: parsed("CONSUMER_CONCURRENCY", "64")?.max(1) as usize,
            operator_rate_limit_per_sec: parsed("OPERATOR_RATE_LIMIT_PER_SEC", "2000")?.max(1)
                as u32,
            operator_retry: schedule("OPERATOR", "500", "30000", "8")?,
            rgs_retry: schedule("RGS", "1000", "600000", "12")?,
            breaker_failures: parsed("BREAKER_FAILURES", "5")?.max(1) as u32,
            breaker_open: Duration::from_millis(parsed("BREAKER_OPEN_MS", "30000")?),
            max_wait: Duration::from_secs(10),
            wavegate: WaveGateConfig {
                partners_json: get("PARTNERS_JSON").filter(|v| !v.trim().is_empty()),
                app_hmac_secret: secret("APP_HMAC_SECRET"),
                admin_token: secret("ADMIN_TOKEN"),
                callback_signing_secret: secret("CALLBACK_SIGNING_SECRET"),
                trusted_proxies,
                rate_limit_capacity: parsed("RATE_LIMIT_CAPACITY", "5")?.max(1) as u32,
                rate_limit_per_sec,
                callbacks: crate::ssrf::CallbackPolicy {
                    require_https: flag("REQUIRE_HTTPS_CALLBACKS", "1")?,
                    allowed_ports,
                    allowed_hosts: (!allowed_hosts.is_empty()).then_some(allowed_hosts),
                    allow_private: flag("ALLOW_PRIVATE_CALLBACKS", "0")?,
                },
                callback_concurrency: parsed("CALLBACK_CONCURRENCY", "5")?.max(1) as usize,
                ticketing_url: var("TICKETING_URL", "http://127.0.0.1:8003/orders"),
                retry: retry_offsets,
            },
            mocks: MockConfig {
                operator_addr: addr("OPERATOR_MOCK_ADDR", "127.0.0.1:8001")?,
                rgs_addr: addr("RGS_MOCK_ADDR", "127.0.0.1:8002")?,
                hub_callback_url: var(
                    "HUB_CALLBACK_URL",
                    "http://127.0.0.1:8000/webhooks/incoming",
                ),
                operator_currencies: var("OPERATOR_MOCK_CURRENCIES", "EUR,USD")
                    .split(',')
                    .map(|c| c.trim().to_ascii_uppercase())
                    .filter(|c| !c.is_empty())
                    .collect(),
                operator_initial_balance_minor: parsed("OPERATOR_MOCK_INITIAL_BALANCE", "100000")?
                    as i64,
                ticketing_addr: addr("TICKETING_MOCK_ADDR", "127.0.0.1:8003")?,
                ota_addr: addr("OTA_MOCK_ADDR", "127.0.0.1:8004")?,
            },
        })
    }

    /// Fills every unset secret with its demo value; returns the variables it filled.
    pub fn fill_demo_secrets(&mut self) -> Vec<&'static str> {
        let mut filled = Vec::new();
        for var in SecretVar::ALL {
            let slot = self.secret_slot(var);
            if slot.is_none() {
                *slot = Some(Secret::new(var.demo_value()));
                filled.push(var.env_name());
            }
        }
        filled
    }

    /// Stops start-up when a secret the command needs is unset, naming every missing variable.
    pub fn require(&self, vars: &[SecretVar]) -> anyhow::Result<()> {
        let missing: Vec<&str> = vars
            .iter()
            .filter(|var| self.secret_value(**var).is_none())
            .map(|var| var.env_name())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "{} not set: export {} before starting (only `ihub dev` fills in demo values)",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        )
    }

    pub fn secret(&self, var: SecretVar) -> anyhow::Result<Secret> {
        self.require(&[var])?;
        Ok(self.secret_value(var).cloned().expect("checked by require"))
    }

    /// The secret that signs the operator's callbacks to `/webhooks/incoming`.
    pub fn operator_webhook_secret(&self) -> anyhow::Result<Secret> {
        match &self.operator_webhook_secret {
            Some(secret) => Ok(secret.clone()),
            None => self.secret(SecretVar::WalletHmac),
        }
    }

    fn secret_value(&self, var: SecretVar) -> Option<&Secret> {
        match var {
            SecretVar::WalletHmac => self.wallet_hmac_secret.as_ref(),
            SecretVar::ReconciliationToken => self.reconciliation_token.as_ref(),
            SecretVar::AppHmac => self.wavegate.app_hmac_secret.as_ref(),
            SecretVar::AdminToken => self.wavegate.admin_token.as_ref(),
        }
    }

    fn secret_slot(&mut self, var: SecretVar) -> &mut Option<Secret> {
        match var {
            SecretVar::WalletHmac => &mut self.wallet_hmac_secret,
            SecretVar::ReconciliationToken => &mut self.reconciliation_token,
            SecretVar::AppHmac => &mut self.wavegate.app_hmac_secret,
            SecretVar::AdminToken => &mut self.wavegate.admin_token,
        }
    }

    /// The database URL with any password masked, for messages.
    pub fn database_url_for_display(&self) -> String {
        mask_password(&self.database_url)
    }
}

/// A CIDR range, or a single address as its /32 or /128.
pub fn parse_net(raw: &str) -> anyhow::Result<ipnet::IpNet> {
    let raw = raw.trim();
    if let Ok(net) = raw.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    raw.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| anyhow::anyhow!("{raw:?} is neither a CIDR range nor an IP address"))
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_run_on_one_machine() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(cfg.database_url, "postgres://postgres@127.0.0.1:5432/ihub");
        assert_eq!(cfg.signature_tolerance, Duration::from_secs(300));
        let codes: Vec<&str> = cfg.wallet_currencies.iter().map(|c| c.code()).collect();
        assert_eq!(codes, ["EUR", "USD", "GBP"]);
    }

    #[test]
    fn a_missing_secret_is_named() {
        let cfg = config(&[("WALLET_HMAC_SECRET", "s")]).unwrap();
        let err = cfg
            .require(&[SecretVar::WalletHmac, SecretVar::ReconciliationToken])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RECONCILIATION_TOKEN"), "{err}");
        assert!(!err.contains("WALLET_HMAC_SECRET"), "{err}");
    }

    #[test]
    fn demo_secrets_fill_only_what_is_unset() {
        let mut cfg = config(&[("WALLET_HMAC_SECRET", "mine")]).unwrap();
        assert_eq!(
            cfg.fill_demo_secrets(),
            ["RECONCILIATION_TOKEN", "APP_HMAC_SECRET", "ADMIN_TOKEN"]
        );
        assert_eq!(cfg.secret(SecretVar::WalletHmac).unwrap().expose(), "mine");
    }

    #[test]
    fn secrets_do_not_print() {
        let cfg = config(&[("WALLET_HMAC_SECRET", "hunter2")]).unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("HTTP_TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP_TIMEOUT_MS"), "{err}");
        let err = config(&[("WALLET_CURRENCIES", "EUR,XXQ")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WALLET_CURRENCIES"), "{err}");
        let err = config(&[("ACK_WAIT_MS", "500"), ("HTTP_TIMEOUT_MS", "1000")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ACK_WAIT_MS"), "{err}");
    }

    #[test]
    fn wavegate_defaults_follow_the_seed() {
        let cfg = config(&[]).unwrap().wavegate;
        assert_eq!(cfg.rate_limit_capacity, 5);
        assert_eq!(cfg.rate_limit_per_sec, 1.0);
        assert_eq!(cfg.callback_concurrency, 5);
        assert!(cfg.callbacks.require_https && !cfg.callbacks.allow_private);
        assert_eq!(cfg.callbacks.allowed_ports, Some(vec![443]));
        assert_eq!(cfg.retry.attempts(), 15);
        assert_eq!(cfg.retry.delay_after(1), Duration::from_secs(2));
        assert_eq!(cfg.retry.delay_after(14), Duration::from_secs(30));
        assert!(cfg.partners_json.is_none());

        let cfg = config(&[
            ("ALLOWED_CALLBACK_PORTS", "*"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7"),
            ("RATE_LIMIT_PER_SEC", "0.5"),
        ])
        .unwrap()
        .wavegate;
        assert_eq!(cfg.callbacks.allowed_ports, None);
        assert_eq!(cfg.trusted_proxies.len(), 2);
        assert_eq!(cfg.rate_limit_per_sec, 0.5);
        for (name, value) in [
            ("RATE_LIMIT_PER_SEC", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("WAVEGATE_RETRY_OFFSETS_MS", "0,5000,2000"),
            ("REQUIRE_HTTPS_CALLBACKS", "maybe"),
        ] {
            let err = config(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("postgres://u:pw@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(
            mask_password("postgres://postgres@127.0.0.1/ihub"),
            "postgres://postgres@127.0.0.1/ihub"
        );
    }
}
