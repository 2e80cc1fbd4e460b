//! MAX's settings and secrets: the hub's API, the partners the adapters call, and the rules
//! they share.

use std::time::Duration;

use crate::config::{Env, Secret, SecretVar};

/// The ticketing system's API key (`X-API-Key`).
pub const TICKETING_API_KEY: SecretVar = SecretVar {
    name: "MAX_TICKETING_API_KEY",
    demo: "dev-max-ticketing-key",
};

/// The transaction status system's OAuth2 client credentials.
pub const TRANSACTIONS_CLIENT_ID: SecretVar = SecretVar {
    name: "MAX_TRANSACTIONS_CLIENT_ID",
    demo: "dev-max-transactions-client",
};
pub const TRANSACTIONS_CLIENT_SECRET: SecretVar = SecretVar {
    name: "MAX_TRANSACTIONS_CLIENT_SECRET",
    demo: "dev-max-transactions-secret",
};

/// Signs the supervisor notices (`X-Supervisor-Signature: <hex HMAC-SHA256(secret, body)>`).
pub const SUPERVISOR_SECRET: SecretVar = SecretVar {
    name: "SUPERVISOR_WEBHOOK_SECRET",
    demo: "dev-supervisor-secret",
};

/// The sales system's OAuth2 client credentials and the key of its `X-HMAC-Signature`.
pub const SALES_CLIENT_ID: SecretVar = SecretVar {
    name: "MAX_SALES_CLIENT_ID",
    demo: "dev-max-sales-client",
};
pub const SALES_CLIENT_SECRET: SecretVar = SecretVar {
    name: "MAX_SALES_CLIENT_SECRET",
    demo: "dev-max-sales-secret",
};
pub const SALES_HMAC_SECRET: SecretVar = SecretVar {
    name: "MAX_SALES_HMAC_SECRET",
    demo: "dev-max-sales-hmac",
};

/// MAX's bearer token on `/max/*` (`ihub dev`: `dev-max-token`).
pub const MAX_API_TOKEN: SecretVar = SecretVar {
    name: "MAX_API_TOKEN",
    demo: "dev-max-token",
};

/// Signs `POST /webhooks/transaction_updated` (`X-MAX-Signature: <hex HMAC-SHA256(secret, raw
/// body)>`).
pub const MAX_WEBHOOK_SECRET: SecretVar = SecretVar {
    name: "MAX_WEBHOOK_SECRET",
    demo: "dev-max-webhook-secret",
};

/// Every credential the adapters use (checked before a consumer process connects).
pub const ADAPTER_SECRETS: &[&SecretVar] = &[
    &TICKETING_API_KEY,
    &TRANSACTIONS_CLIENT_ID,
    &TRANSACTIONS_CLIENT_SECRET,
    &SALES_CLIENT_ID,
    &SALES_CLIENT_SECRET,
    &SALES_HMAC_SECRET,
    &SUPERVISOR_SECRET,
];

/// What the ingress needs.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    pub api_token: Secret,
    pub webhook_secret: Secret,
    /// How long a write waits for the partner's answer before it answers 202 with an operation
    /// id (`MAX_SYNC_WAIT_MS`, default 5,000).
    pub sync_wait: Duration,
    /// How long a read that missed the cache waits for the adapters (`MAX_READ_TIMEOUT_MS`,
    /// default 20,000: the retry table's 2 + 4 + 8 s and the calls fit).
    pub read_timeout: Duration,
}

impl IngressConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        Ok(Self {
            api_token: env.secret(&MAX_API_TOKEN)?,
            webhook_secret: env.secret(&MAX_WEBHOOK_SECRET)?,
            sync_wait: env.millis("MAX_SYNC_WAIT_MS", 5_000)?,
            read_timeout: env.millis("MAX_READ_TIMEOUT_MS", 20_000)?,
        })
    }
}

/// What the adapters need: where each partner is, its credentials, and the shared rules.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub ticketing_url: String,
    pub ticketing_api_key: Secret,
    pub transactions_url: String,
    pub transactions_client_id: String,
    pub transactions_client_secret: Secret,
    pub sales_url: String,
    pub sales_client_id: String,
    pub sales_client_secret: Secret,
    pub sales_hmac_secret: Secret,
    pub supervisor_url: String,
    pub supervisor_secret: Secret,
    /// The retry table's first delay (`MAX_RETRY_BASE_MS`, default 2,000; then ×2, ×4).
    pub retry_base: Duration,
    /// How long an open breaker fails fast (`MAX_BREAKER_OPEN_MS`, default 60,000).
    pub breaker_open: Duration,
    /// Consecutive failures that open a breaker (`MAX_BREAKER_FAILURES`, default 5).
    pub breaker_failures: u32,
    /// At most one supervisor notice per adapter this often (`SUPERVISOR_WINDOW_MS`, 300,000).
    pub supervisor_window: Duration,
    /// Every cached answer's time to live instead of the table's 300 s / 120 s
    /// (`MAX_CACHE_TTL_MS`; for demos and tests).
    pub cache_ttl: Option<Duration>,
}

impl AdapterConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let url = |name: &str, default: &str| env.text(name, default).trim_end_matches('/').to_string();
        Ok(Self {
            ticketing_url: url("MAX_TICKETING_URL", "http://127.0.0.1:8007"),
            ticketing_api_key: env.secret(&TICKETING_API_KEY)?,
            transactions_url: url("MAX_TRANSACTIONS_URL", "http://127.0.0.1:8008"),
            transactions_client_id: env.secret(&TRANSACTIONS_CLIENT_ID)?.expose().to_string(),
            transactions_client_secret: env.secret(&TRANSACTIONS_CLIENT_SECRET)?,
            sales_url: url("MAX_SALES_URL", "http://127.0.0.1:8009"),
            sales_client_id: env.secret(&SALES_CLIENT_ID)?.expose().to_string(),
            sales_client_secret: env.secret(&SALES_CLIENT_SECRET)?,
            sales_hmac_secret: env.secret(&SALES_HMAC_SECRET)?,
            supervisor_url: url("SUPERVISOR_WEBHOOK_URL", "http://127.0.0.1:8010/notices"),
            supervisor_secret: env.secret(&SUPERVISOR_SECRET)?,
            retry_base: env.millis("MAX_RETRY_BASE_MS", 2_000)?,
            breaker_open: env.millis("MAX_BREAKER_OPEN_MS", 60_000)?,
            breaker_failures: u32::try_from(env.whole("MAX_BREAKER_FAILURES", 5)?.max(1))
                .unwrap_or(u32::MAX),
            supervisor_window: env.millis("SUPERVISOR_WINDOW_MS", 300_000)?,
            cache_ttl: env.optional_millis("MAX_CACHE_TTL_MS")?,
        })
    }
}
