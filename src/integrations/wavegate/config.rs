//! WaveGate's settings and secrets.

use crate::config::{Env, Secret, SecretVar, parse_net};
use crate::runtime::Schedule;
use crate::ssrf::{CallbackPolicy, PrivateTargets};

/// The key of the stored partner token hashes.
pub const APP_HMAC: SecretVar = SecretVar {
    name: "APP_HMAC_SECRET",
    demo: "dev-app-hmac-secret",
};

/// The bearer token of `/admin/orders`.
pub const ADMIN_TOKEN: SecretVar = SecretVar {
    name: "ADMIN_TOKEN",
    demo: "dev-admin-token",
};

/// Signs callbacks (`X-Callback-Signature`, Standard Webhooks) when set.
pub const CALLBACK_SIGNING_SECRET: &str = "CALLBACK_SIGNING_SECRET";

/// The seed's 15 attempts, at these offsets from the first.
const RETRY_OFFSETS_MS: &str =
    "0,2000,6000,12000,20000,30000,45000,65000,90000,120000,155000,195000,235000,270000,300000";

#[derive(Clone, Debug)]
pub struct WaveGateConfig {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub rate_limit_capacity: u32,
    pub rate_limit_per_sec: f64,
    pub callbacks: CallbackPolicy,
    /// Callbacks in flight per consumer process.
    pub callback_concurrency: usize,
    pub callback_signing_secret: Option<Secret>,
    pub ticketing_url: String,
    /// Retry schedule of ticketing and callbacks: attempt offsets from the first.
    pub retry: Schedule,
}

impl WaveGateConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let allowed_ports = match env.text("ALLOWED_CALLBACK_PORTS", "443").trim() {
            "*" => None,
            _ => Some(env.list_of("ALLOWED_CALLBACK_PORTS", "443", |port| {
                port.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("not a port (or use *)"))
            })?),
        };
        let allowed_hosts = env.list("ALLOWED_CALLBACK_HOSTS", "");
        Ok(Self {
            trusted_proxies: env.list_of("TRUSTED_PROXIES", "", parse_net)?,
            rate_limit_capacity: env.whole("RATE_LIMIT_CAPACITY", 5)?.max(1) as u32,
            rate_limit_per_sec: env.positive("RATE_LIMIT_PER_SEC", 1.0)?,
            callbacks: CallbackPolicy {
                require_https: env.flag("REQUIRE_HTTPS_CALLBACKS", true)?,
                allowed_ports,
                allowed_hosts: (!allowed_hosts.is_empty()).then_some(allowed_hosts),
                allow_private: PrivateTargets::parse(&env.text("ALLOW_PRIVATE_CALLBACKS", "0"))
                    .map_err(anyhow::Error::msg)?,
            },
            callback_concurrency: env.whole("CALLBACK_CONCURRENCY", 5)?.max(1) as usize,
            callback_signing_secret: env.optional_secret(CALLBACK_SIGNING_SECRET),
            ticketing_url: env.text("TICKETING_URL", "http://127.0.0.1:8003/orders"),
            retry: Schedule::offsets_from_env(env, "WAVEGATE_RETRY_OFFSETS_MS", RETRY_OFFSETS_MS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<WaveGateConfig> {
        WaveGateConfig::from_env(&Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_seed() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.rate_limit_capacity, 5);
        assert_eq!(cfg.rate_limit_per_sec, 1.0);
        assert_eq!(cfg.callback_concurrency, 5);
        assert!(cfg.callbacks.require_https && cfg.callbacks.allow_private == PrivateTargets::None);
        assert_eq!(cfg.callbacks.allowed_ports, Some(vec![443]));
        assert_eq!(cfg.retry.attempts(), 15);
        assert_eq!(cfg.retry.delay_after(1), Duration::from_secs(2));
        assert_eq!(cfg.retry.delay_after(14), Duration::from_secs(30));
        assert!(cfg.callback_signing_secret.is_none());

        let cfg = config(&[
            ("ALLOWED_CALLBACK_PORTS", "*"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7"),
            ("RATE_LIMIT_PER_SEC", "0.5"),
        ])
        .unwrap();
        assert_eq!(cfg.callbacks.allowed_ports, None);
        assert_eq!(cfg.trusted_proxies.len(), 2);
        assert_eq!(cfg.rate_limit_per_sec, 0.5);
        let cfg = config(&[("ALLOWED_CALLBACK_PORTS", "443, 8443")]).unwrap();
        assert_eq!(cfg.callbacks.allowed_ports, Some(vec![443, 8443]));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("RATE_LIMIT_PER_SEC", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("WAVEGATE_RETRY_OFFSETS_MS", "0,5000,2000"),
            ("REQUIRE_HTTPS_CALLBACKS", "maybe"),
            ("ALLOWED_CALLBACK_PORTS", "443,https"),
        ] {
            let err = format!("{:#}", config(&[(name, value)]).unwrap_err());
            assert!(err.contains(name), "{err}");
        }
    }
}
