//! The adapters' read cache: the `cache` KV bucket, one entry per operation and canonical
//! params ([`keys::cache_key`]), holding the answer and when it goes stale (NATS 2.9 has no
//! per-key TTL: the bucket's `max_age`, the longest TTL, only sweeps). A transaction's update
//! ([`Cache::invalidate_transaction`]) deletes its status entry and purges its customer's
//! history entries (every `limit`) with one subject-filtered purge.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{cache_key, token};
use crate::nats::{Bus, Unavailable};

pub const BUCKET: &str = "cache";

#[derive(Serialize, Deserialize)]
struct Entry {
    stale_at_ms: i64,
    answer: Value,
}

#[derive(Clone)]
pub struct Cache {
    kv: kv::Store,
    stream: String,
    bucket: String,
    js: jetstream::Context,
}

impl Cache {
    pub async fn open(bus: &Bus) -> anyhow::Result<Self> {
        let bucket = bus.names.kv_bucket(BUCKET);
        Ok(Self {
            kv: bus.kv(BUCKET).await?,
            stream: format!("KV_{bucket}"),
            bucket,
            js: bus.js.clone(),
        })
    }

    /// The answer stored under `key`, unless it is stale.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Value>> {
        let Some(bytes) = self
            .kv
            .get(key)
            .await
            .context(Unavailable("could not read the cache".into()))?
        else {
            return Ok(None);
        };
        let now = chrono::Utc::now().timestamp_millis();
        Ok(serde_json::from_slice::<Entry>(&bytes)
            .ok()
            .filter(|entry| now < entry.stale_at_ms)
            .map(|entry| entry.answer))
    }

    pub async fn put(&self, key: &str, answer: &Value, ttl: Duration) -> anyhow::Result<()> {
        let entry = Entry {
            stale_at_ms: chrono::Utc::now().timestamp_millis()
                + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
            answer: answer.clone(),
        };
        self.kv
            .put(key, serde_json::to_vec(&entry)?.into())
            .await
            .context(Unavailable("could not store in the cache".into()))?;
        Ok(())
    }

    /// Forgets what is cached of transaction `id` and, when known, of its customer's history.
    pub async fn invalidate_transaction(&self, id: &str, customer_id: Option<&str>) -> anyhow::Result<()> {
        let key = cache_key("get_transaction_status", &[("transaction_id", id)]);
        self.kv
            .purge(&key)
            .await
            .context(Unavailable("could not invalidate the cache".into()))?;
        if let Some(customer) = customer_id {
            let filter = format!(
                "$KV.{}.get_transaction_history.{}.>",
                self.bucket,
                token(customer)
            );
            let stream = self
                .js
                .get_stream(&self.stream)
                .await
                .context(Unavailable("could not reach the cache's stream".into()))?;
            stream
                .purge()
                .filter(filter)
                .await
                .context(Unavailable("could not purge the customer's history".into()))?;
        }
        Ok(())
    }
}
