//! The casino's settings and secrets.

use std::time::Duration;

use crate::config::{Env, Secret, SecretVar};

/// Signs the game provider's calls to the wallet (`x-casino-signature`).
pub const CASINO_SECRET: SecretVar = SecretVar {
    name: "CASINO_SECRET",
    demo: "dev-casino-secret",
};

/// Signs the hub's calls to the provider (`x-provider-signature`).
pub const PROVIDER_SECRET: SecretVar = SecretVar {
    name: "PROVIDER_SECRET",
    demo: "dev-provider-secret",
};

/// The bearer token of the casino front end's calls (`/casino/launchGame`,
/// `/casino/simulateRound`).
pub const CASINO_API_TOKEN: SecretVar = SecretVar {
    name: "CASINO_API_TOKEN",
    demo: "dev-casino-api-token",
};

/// The bearer token of `GET /casino/ledger` and `/casino/reconciliation` (the hub's admin
/// token).
pub const ADMIN_TOKEN: SecretVar = SecretVar {
    name: "ADMIN_TOKEN",
    demo: "dev-admin-token",
};

/// The provider's base URL (`POST {PROVIDER_URL}/provider/launch`, `…/provider/simulate`).
pub const DEFAULT_PROVIDER_URL: &str = "http://127.0.0.1:8006";

/// What the ingress needs.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    pub casino_secret: Secret,
    pub api_token: Secret,
    pub admin_token: Secret,
    /// How long the ingress waits for a wallet process's answer (`CASINO_WALLET_TIMEOUT_MS`,
    /// default 2,000); then it answers 503 and the provider retries with the same id.
    pub wallet_timeout: Duration,
    /// How long the wallet service waits for the provider (the front end's calls wait for it).
    pub provider_timeout: Duration,
    /// Calls per second one player may make to one ingress process
    /// (`CASINO_PLAYER_RATE_LIMIT_PER_SEC`, default 1,000; burst as many): a retry storm gets
    /// 429 with `Retry-After` instead of the wallet's rows.
    pub player_rate_limit: u32,
}

impl IngressConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        Ok(Self {
            casino_secret: env.secret(&CASINO_SECRET)?,
            api_token: env.secret(&CASINO_API_TOKEN)?,
            admin_token: env.secret(&ADMIN_TOKEN)?,
            wallet_timeout: Duration::from_millis(env.whole("CASINO_WALLET_TIMEOUT_MS", 2_000)?),
            provider_timeout: provider_timeout(env)?,
            player_rate_limit: u32::try_from(env.whole("CASINO_PLAYER_RATE_LIMIT_PER_SEC", 1_000)?)
                .unwrap_or(u32::MAX)
                .max(1),
        })
    }
}

/// What the wallet service needs to call the provider.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub provider_secret: Secret,
    pub provider_url: String,
    /// `PROVIDER_TIMEOUT_MS`, default 5,000: how long the hub waits for the provider, and the
    /// provider mock for the wallet.
    pub provider_timeout: Duration,
}

impl ProviderConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        Ok(Self {
            provider_secret: env.secret(&PROVIDER_SECRET)?,
            provider_url: env
                .non_empty("PROVIDER_URL")
                .unwrap_or_else(|| DEFAULT_PROVIDER_URL.to_string())
                .trim_end_matches('/')
                .to_string(),
            provider_timeout: provider_timeout(env)?,
        })
    }
}

pub fn provider_timeout(env: &Env) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(env.whole("PROVIDER_TIMEOUT_MS", 5_000)?))
}
