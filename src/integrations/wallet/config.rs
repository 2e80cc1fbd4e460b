//! The wallet hub's settings and secrets.

use std::time::Duration;

use crate::config::{Env, Secret, SecretVar};
use crate::money::Currency;
use crate::runtime::Schedule;

/// The RGS signs its requests with it; the hub signs the RGS webhooks with it.
pub const WALLET_HMAC: SecretVar = SecretVar {
    name: "WALLET_HMAC_SECRET",
    demo: "dev-wallet-secret",
};

/// The bearer token of `/reconciliation_data`.
pub const RECONCILIATION_TOKEN: SecretVar = SecretVar {
    name: "RECONCILIATION_TOKEN",
    demo: "dev-reconciliation-token",
};

#[derive(Clone, Debug)]
pub struct WalletConfig {
    /// The operator wallet API, without a trailing slash.
    pub operator_url: String,
    /// Where outcome webhooks go (a GET lists them, for reconciliation).
    pub rgs_webhook_url: String,
    /// Currencies the hub accepts (others: 422).
    pub currencies: Vec<Currency>,
    /// Allowed clock skew of `X-Timestamp`.
    pub signature_tolerance: Duration,
    /// Rate-limit guard on operator calls, per process.
    pub operator_rate_limit_per_sec: u32,
    pub operator_retry: Schedule,
    pub rgs_retry: Schedule,
}

impl WalletConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let currencies = env.list_of("WALLET_CURRENCIES", "EUR,USD,GBP", |code| {
            Ok(Currency::parse(code)?)
        })?;
        if currencies.is_empty() {
            anyhow::bail!("WALLET_CURRENCIES is empty: list at least one ISO 4217 code, e.g. EUR,USD");
        }
        Ok(Self {
            operator_url: env
                .text("OPERATOR_URL", "http://127.0.0.1:8001")
                .trim_end_matches('/')
                .to_string(),
            rgs_webhook_url: env.text("RGS_WEBHOOK_URL", "http://127.0.0.1:8002/webhooks"),
            currencies,
            signature_tolerance: Duration::from_secs(env.whole("SIGNATURE_TOLERANCE_SECS", 300)?),
            operator_rate_limit_per_sec: env.whole("OPERATOR_RATE_LIMIT_PER_SEC", 2000)?.max(1)
                as u32,
            operator_retry: Schedule::exponential_from_env(env, "OPERATOR", 500, 30_000, 8)?,
            rgs_retry: Schedule::exponential_from_env(env, "RGS", 1000, 600_000, 12)?,
        })
    }
}

/// The secret the operator signs its callbacks to `/webhooks/incoming` with:
/// `OPERATOR_WEBHOOK_SECRET`, else the wallet's.
pub fn operator_webhook_secret(env: &Env) -> anyhow::Result<Secret> {
    match env.optional_secret("OPERATOR_WEBHOOK_SECRET") {
        Some(secret) => Ok(secret),
        None => env.secret(&WALLET_HMAC),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<WalletConfig> {
        WalletConfig::from_env(&Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_seed() {
        let cfg = config(&[]).unwrap();
        let codes: Vec<&str> = cfg.currencies.iter().map(|c| c.code()).collect();
        assert_eq!(codes, ["EUR", "USD", "GBP"]);
        assert_eq!(cfg.operator_url, "http://127.0.0.1:8001");
        assert_eq!(cfg.signature_tolerance, Duration::from_secs(300));
        assert_eq!(cfg.operator_retry.attempts(), 8);
        assert_eq!(cfg.rgs_retry.delay_after(1), Duration::from_secs(1));
        assert_eq!(
            config(&[("OPERATOR_URL", "http://op/")]).unwrap().operator_url,
            "http://op"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("WALLET_CURRENCIES", "EUR,XXQ"),
            ("WALLET_CURRENCIES", " , "),
            ("OPERATOR_RETRY_ATTEMPTS", "0"),
            ("RGS_RETRY_BASE_MS", "soon"),
            ("SIGNATURE_TOLERANCE_SECS", "-1"),
        ] {
            let err = format!("{:#}", config(&[(name, value)]).unwrap_err());
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn the_operator_signs_with_its_own_secret_or_the_wallets() {
        let env = Env::from_pairs([("WALLET_HMAC_SECRET", "w")]);
        assert_eq!(operator_webhook_secret(&env).unwrap().expose(), "w");
        let env = Env::from_pairs([("OPERATOR_WEBHOOK_SECRET", "o")]);
        assert_eq!(operator_webhook_secret(&env).unwrap().expose(), "o");
        let err = operator_webhook_secret(&Env::from_pairs::<&str, &str>([]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WALLET_HMAC_SECRET"), "{err}");
    }
}
