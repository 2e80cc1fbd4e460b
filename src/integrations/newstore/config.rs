//! NewStore's settings and secrets: the default tenant from single variables, more tenants
//! from `NEWSTORE_TENANTS_JSON`, each with its own webhook secret, Hail URL, Hail key and
//! store map.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::config::{Env, Secret, SecretVar};
use crate::runtime::Schedule;

/// The default tenant's webhook secret (`X-NewStore-Signature`).
pub const NEWSTORE_WEBHOOK: SecretVar = SecretVar {
    name: "NEWSTORE_WEBHOOK_SECRET",
    demo: "dev-newstore-secret",
};

/// The default tenant's Hail API key.
pub const HAIL_API_KEY: SecretVar = SecretVar {
    name: "HAIL_API_KEY",
    demo: "dev-hail-key",
};

/// The bearer token of `/newstore/events/…` and `/newstore/orders/…` (the hub's admin token).
pub const ADMIN_TOKEN: SecretVar = SecretVar {
    name: "ADMIN_TOKEN",
    demo: "dev-admin-token",
};

/// The tenant of `POST /webhooks/newstore` (no tenant in the path).
pub const DEFAULT_TENANT: &str = "default";

/// One NewStore tenant: who signs its webhooks, where its Hail is, how its stores map.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub webhook_secret: Secret,
    pub hail_url: String,
    pub hail_api_key: Secret,
    /// NewStore store id → Hail store id; a store not listed keeps its id.
    pub store_map: HashMap<String, String>,
}

impl Tenant {
    pub fn hail_store(&self, newstore_store: &str) -> String {
        self.store_map
            .get(newstore_store)
            .cloned()
            .unwrap_or_else(|| newstore_store.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantJson {
    tenant: String,
    webhook_secret: String,
    /// Unset: the default tenant's (`HAIL_URL`).
    hail_url: Option<String>,
    hail_api_key: String,
    #[serde(default)]
    store_map: HashMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct NewStoreConfig {
    pub tenants: HashMap<String, Tenant>,
    /// `POST /webhooks/newstore/simulate` is served (`NEWSTORE_SIMULATE=1`; `ihub dev` sets it).
    pub simulate: bool,
    /// Retries of Hail calls.
    pub hail_retry: Schedule,
}

impl NewStoreConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let mut tenants = HashMap::new();
        let hail_url = env.text("HAIL_URL", "http://127.0.0.1:8005/events/v2/transaction/");
        let default = Tenant {
            name: DEFAULT_TENANT.into(),
            webhook_secret: env.secret(&NEWSTORE_WEBHOOK)?,
            hail_url: hail_url.clone(),
            hail_api_key: env.secret(&HAIL_API_KEY)?,
            store_map: parse_store_map(&env.text("NEWSTORE_STORE_MAP_JSON", "{}"))?,
        };
        tenants.insert(default.name.clone(), default);
        for tenant in parse_tenants(&env.text("NEWSTORE_TENANTS_JSON", "[]"), &hail_url)? {
            if tenants.insert(tenant.name.clone(), tenant).is_some() {
                bail!("NEWSTORE_TENANTS_JSON names a tenant twice (or \"{DEFAULT_TENANT}\")");
            }
        }
        Ok(Self {
            tenants,
            simulate: env.flag("NEWSTORE_SIMULATE", false)?,
            hail_retry: Schedule::full_jitter_from_env(env, "NEWSTORE_HAIL", 500, 60_000, 10)?,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.get(name)
    }
}

fn parse_store_map(raw: &str) -> anyhow::Result<HashMap<String, String>> {
    serde_json::from_str(raw)
        .context("NEWSTORE_STORE_MAP_JSON must be a JSON object of NewStore store id → Hail store id")
}

fn parse_tenants(raw: &str, default_hail_url: &str) -> anyhow::Result<Vec<Tenant>> {
    let parsed: Vec<TenantJson> = serde_json::from_str(raw).context(
        "NEWSTORE_TENANTS_JSON must be [{\"tenant\",\"webhook_secret\",\"hail_url\" (optional),\"hail_api_key\",\"store_map\"}]",
    )?;
    parsed
        .into_iter()
        .map(|t| {
            if t.tenant.is_empty()
                || !t
                    .tenant
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!(
                    "NEWSTORE_TENANTS_JSON: tenant {:?} must be letters, digits, '-' or '_'",
                    t.tenant
                );
            }
            if t.webhook_secret.is_empty() || t.hail_api_key.is_empty() {
                bail!("NEWSTORE_TENANTS_JSON: tenant {} needs a webhook_secret and a hail_api_key", t.tenant);
            }
            Ok(Tenant {
                name: t.tenant,
                webhook_secret: Secret::new(t.webhook_secret),
                hail_url: t.hail_url.unwrap_or_else(|| default_hail_url.to_string()),
                hail_api_key: Secret::new(t.hail_api_key),
                store_map: t.store_map,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(
            [("NEWSTORE_WEBHOOK_SECRET", "s"), ("HAIL_API_KEY", "k")]
                .into_iter()
                .chain(vars.iter().copied()),
        )
    }

    #[test]
    fn tenants_come_from_json_besides_the_default() {
        let cfg = NewStoreConfig::from_env(&env(&[(
            "NEWSTORE_TENANTS_JSON",
            r#"[{"tenant":"eu","webhook_secret":"w","hail_url":"http://127.0.0.1:9/","hail_api_key":"h","store_map":{"s1":"H-1"}}]"#,
        )]))
        .unwrap();
        assert_eq!(cfg.tenants.len(), 2);
        let eu = cfg.tenant("eu").unwrap();
        assert_eq!(eu.hail_store("s1"), "H-1");
        assert_eq!(eu.hail_store("s2"), "s2");
        assert!(!format!("{cfg:?}").contains("\"w\""), "secrets stay hidden");
    }

    #[test]
    fn bad_tenants_are_named() {
        for raw in [
            "{",
            r#"[{"tenant":"a b","webhook_secret":"w","hail_url":"u","hail_api_key":"h"}]"#,
            r#"[{"tenant":"default","webhook_secret":"w","hail_url":"u","hail_api_key":"h"}]"#,
            r#"[{"tenant":"x","webhook_secret":"","hail_url":"u","hail_api_key":"h"}]"#,
        ] {
            let err = NewStoreConfig::from_env(&env(&[("NEWSTORE_TENANTS_JSON", raw)])).unwrap_err();
            assert!(format!("{err:#}").contains("NEWSTORE_TENANTS_JSON"), "{raw}: {err:#}");
        }
    }
}
