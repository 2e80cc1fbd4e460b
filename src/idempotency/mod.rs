//! Idempotency keys, kept in the JetStream KV bucket `idempotency` (24 h max age).
//!
//! Lifecycle of a key:
//! 1. The ingress *claims* `<scope>.<sha256(Idempotency-Key)>` with a create that fails when the
//!    key exists, storing the request's fingerprint and the response it is about to give.
//! 2. A later request with the same key gets that stored response when its fingerprint matches
//!    ([`Claim::Repeat`]), and 409 when it does not ([`Claim::Conflict`]).
//! 3. When the outcome is known, a consumer *completes* the record, replacing the stored
//!    response; replays from then on return the outcome.
//!
//! The claim is the first of the two JetStream writes an accepted request costs (the event is
//! the second); a request that claimed but crashed before publishing is healed by its client's
//! retry, which re-publishes the event under the same `Nats-Msg-Id`.

use anyhow::Context as _;

use crate::nats::Unavailable;
use async_nats::jetstream::kv::{self, CreateErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What is stored per key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// sha256 of the canonical request body.
    pub fingerprint: String,
    /// The id the request created (transaction id, order id).
    pub resource_id: String,
    /// The response to replay.
    pub status: u16,
    pub body: serde_json::Value,
    /// True once the response is the final outcome.
    #[serde(default)]
    pub done: bool,
}

/// What claiming a key came to, for a request with a given body fingerprint.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This request owns the key.
    Claimed,
    /// The same request (same body) claimed it before; this is what it stored.
    Repeat(Record),
    /// Another request, with another body, holds the key.
    Conflict,
}

impl Claim {
    /// What finding `existing` under the key means for a request with `fingerprint`.
    pub fn of_existing(existing: Record, fingerprint: &str) -> Self {
        if existing.fingerprint == fingerprint {
            Claim::Repeat(existing)
        } else {
            Claim::Conflict
        }
    }
}

#[derive(Clone)]
pub struct Idempotency {
    kv: kv::Store,
}

/// Checks the caller's `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn validate_key(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty() || raw.len() > 255 {
        return Err("Idempotency-Key must have 1 to 255 characters");
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key may hold only visible ASCII characters");
    }
    Ok(())
}

/// sha256 hex of `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Idempotency {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// The KV key for a caller's key within a scope (endpoint, partner).
    pub fn key(scope: &str, idempotency_key: &str) -> String {
        format!("{scope}.{}", fingerprint(idempotency_key.as_bytes()))
    }

    pub async fn claim(&self, key: &str, record: &Record) -> anyhow::Result<Claim> {
        let value = serde_json::to_vec(record)?;
        // Two rounds: a key that expires between our create and our read is claimed again.
        for _ in 0..2 {
            match self.kv.create(key, value.clone().into()).await {
                Ok(_) => return Ok(Claim::Claimed),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                    if let Some(existing) = self.get(key).await? {
                        let claim = Claim::of_existing(existing, &record.fingerprint);
                        // The scope (`wallet-debit` of `wallet-debit.<hash>`): a bounded label.
                        let scope = key.split('.').next().unwrap_or(key);
                        let outcome = match claim {
                            Claim::Conflict => "conflict",
                            _ => "replay",
                        };
                        crate::metrics::idempotency(scope, outcome);
                        return Ok(claim);
                    }
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        Unavailable(format!("could not claim idempotency key {key}"))
                    });
                }
            }
        }
        anyhow::bail!("idempotency key {key} keeps vanishing between create and read")
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Record>> {
        let Some(bytes) = self
            .kv
            .get(key)
            .await
            .with_context(|| Unavailable(format!("could not read idempotency key {key}")))?
        else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("idempotency key {key} holds something that is not a record")
        })?))
    }

    /// Frees a key whose request was refused after the claim, so the caller can use it again.
    pub async fn release(&self, key: &str) -> anyhow::Result<()> {
        self.kv
            .delete(key)
            .await
            .with_context(|| Unavailable(format!("could not release idempotency key {key}")))?;
        Ok(())
    }

    /// Replaces the stored response with the final outcome.
    pub async fn complete(&self, key: &str, record: &Record) -> anyhow::Result<()> {
        self.kv
            .put(key, serde_json::to_vec(record)?.into())
            .await
            .with_context(|| Unavailable(format!("could not store the outcome under {key}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_hashes() {
        let a = Idempotency::key("wallet-debit", "k1");
        assert!(a.starts_with("wallet-debit."));
        assert_eq!(a.len(), "wallet-debit.".len() + 64);
        assert_ne!(a, Idempotency::key("wallet-credit", "k1"));
        assert_ne!(a, Idempotency::key("wallet-debit", "k2"));
    }

    #[test]
    fn the_same_body_repeats_and_another_conflicts() {
        let stored = Record {
            fingerprint: fingerprint(b"{\"a\":1}"),
            resource_id: "t-1".into(),
            status: 202,
            body: serde_json::json!({"status": "pending"}),
            done: false,
        };
        assert_eq!(
            Claim::of_existing(stored.clone(), &fingerprint(b"{\"a\":1}")),
            Claim::Repeat(stored.clone())
        );
        assert_eq!(
            Claim::of_existing(stored, &fingerprint(b"{\"a\":2}")),
            Claim::Conflict
        );
    }

    #[test]
    fn validates_caller_keys() {
        assert!(validate_key("order-123_ABC:x").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("has space").is_err());
        assert!(validate_key(&"x".repeat(256)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A key passes exactly when it can travel in a header and a KV key derived from
            /// it: 1 to 255 visible ASCII characters.
            #[test]
            fn any_key_is_judged_without_panic(key in ".{0,300}") {
                let ok = validate_key(&key).is_ok();
                prop_assert_eq!(ok, (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()));
                if ok {
                    prop_assert!(crate::nats::header_value(&key).is_ok());
                }
            }
        }
    }
}
