//! OAuth2 client credentials for MAX's adapters: one bearer token per adapter, shared by every
//! process through the `tokens` KV bucket (`oauth.<adapter>`), used until shortly before its
//! `expires_in` ends. When it must be renewed, one process asks the partner (it holds
//! `oauth.<adapter>.lock`, created only if absent) and the others wait for the token it
//! stores; a lock older than [`LOCK_STALE`] (its holder died) is broken. After a 401, the
//! caller [`SharedToken::replace`]s the token it used: if no one did so already, it is
//! dropped and a new one fetched, so many callers that see the same 401 cost one request.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::kv::{self, CreateErrorKind};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::keys::percent_encode;
use crate::config::Secret;
use crate::nats::Unavailable;

/// A refresh lock older than this belongs to a process that died holding it.
pub const LOCK_STALE: Duration = Duration::from_secs(10);

/// Rounds of "look, lock or wait" before giving up.
const ROUNDS: usize = 20;

#[derive(Serialize, Deserialize)]
struct Stored {
    token: String,
    /// Unix ms after which it is renewed (before it expires: see [`renew_at`]).
    renew_at_ms: i64,
}

/// When a token that lives `expires_in` seconds from `now_ms` is renewed: 10 % of its life
/// before it ends (at least 1 s, at most 30 s before).
fn renew_at(now_ms: i64, expires_in: u64) -> i64 {
    let life = i64::try_from(expires_in).unwrap_or(i64::MAX / 2000) * 1000;
    let margin = (life / 10).clamp(1_000, 30_000).min(life);
    now_ms + life - margin
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One adapter's token, shared by every process.
pub struct SharedToken {
    kv: kv::Store,
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    token_key: String,
    lock_key: String,
}

impl SharedToken {
    /// `adapter` names the token (a KV key part: letters, digits, `_` and `-`).
    pub fn new(
        kv: kv::Store,
        http: reqwest::Client,
        adapter: &str,
        token_url: String,
        client_id: String,
        client_secret: Secret,
    ) -> Self {
        Self {
            kv,
            http,
            token_url,
            client_id,
            client_secret,
            token_key: format!("oauth.{adapter}"),
            lock_key: format!("oauth.{adapter}.lock"),
        }
    }

    /// A live bearer token.
    pub async fn bearer(&self) -> anyhow::Result<Secret> {
        for _ in 0..ROUNDS {
            // Watch before looking, so a token stored in between is not missed.
            let mut stored = self.kv.watch(&self.token_key).await.context(Unavailable(
                "could not watch the shared token".into(),
            ))?;
            if let Some(token) = self.live().await? {
                return Ok(token);
            }
            let now = now_ms();
            match self.kv.create(&self.lock_key, now.to_string().into()).await {
                Ok(_) => {
                    // Whoever held the lock before may have stored a token after we looked.
                    let fetched = match self.live().await {
                        Ok(Some(token)) => Ok(token),
                        _ => self.fetch().await,
                    };
                    let _ = self.kv.delete(&self.lock_key).await;
                    return fetched;
                }
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                    if self.lock_is_stale(now).await? {
                        let _ = self.kv.delete(&self.lock_key).await;
                        continue;
                    }
                    // Another process is asking: wait for what it stores.
                    let _ = tokio::time::timeout(LOCK_STALE, stored.next()).await;
                }
                Err(err) => {
                    return Err(err).context(Unavailable("could not take the token lock".into()));
                }
            }
        }
        bail!("no token for {} after {ROUNDS} rounds", self.token_key)
    }

    /// After a 401 with `stale`: a new token (one request however many callers saw it).
    pub async fn replace(&self, stale: &Secret) -> anyhow::Result<Secret> {
        if let Some(entry) = self.kv.entry(&self.token_key).await.context(Unavailable(
            "could not read the shared token".into(),
        ))? && let Ok(stored) = serde_json::from_slice::<Stored>(&entry.value)
            && stored.token == stale.expose()
        {
            // Only if it is still that entry: a process that replaced it meanwhile keeps its
            // fresh token (this delete then fails, and the fresh one is used).
            let _ = self
                .kv
                .delete_expect_revision(&self.token_key, Some(entry.revision))
                .await;
        }
        self.bearer().await
    }

    /// The stored token, if it is not due for renewal.
    async fn live(&self) -> anyhow::Result<Option<Secret>> {
        let Some(bytes) = self.kv.get(&self.token_key).await.context(Unavailable(
            "could not read the shared token".into(),
        ))?
        else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<Stored>(&bytes)
            .ok()
            .filter(|stored| now_ms() < stored.renew_at_ms)
            .map(|stored| Secret::new(stored.token)))
    }

    async fn lock_is_stale(&self, now: i64) -> anyhow::Result<bool> {
        let taken: Option<i64> = self
            .kv
            .get(&self.lock_key)
            .await
            .context(Unavailable("could not read the token lock".into()))?
            .and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse().ok());
        Ok(taken.is_some_and(|taken| now - taken > LOCK_STALE.as_millis() as i64))
    }

    /// Asks the partner for a token and stores it for every process.
    async fn fetch(&self) -> anyhow::Result<Secret> {
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            percent_encode(&self.client_id),
            percent_encode(self.client_secret.expose()),
        );
        let response = self
            .http
            .post(&self.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .with_context(|| format!("the token endpoint {} did not answer", self.token_url))?;
        let status = response.status();
        if !status.is_success() {
            bail!("the token endpoint {} answered {status}", self.token_url);
        }
        let granted: Granted = response
            .json()
            .await
            .with_context(|| format!("the token endpoint {} sent no token", self.token_url))?;
        let stored = Stored {
            renew_at_ms: renew_at(now_ms(), granted.expires_in),
            token: granted.access_token,
        };
        self.kv
            .put(&self.token_key, serde_json::to_vec(&stored)?.into())
            .await
            .context(Unavailable("could not store the shared token".into()))?;
        Ok(Secret::new(stored.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_a_tenth_of_its_life_early_within_bounds() {
        assert_eq!(renew_at(0, 60), 54_000);
        assert_eq!(renew_at(0, 3600), 3_570_000, "at most 30 s early");
        assert_eq!(renew_at(0, 5), 4_000, "at least 1 s early");
        assert_eq!(renew_at(0, 0), 0);
    }
}
