//! Per-partner rate limits shared by every ingress process, kept in a JetStream KV bucket.
//!
//! Each key (a partner id) is a token bucket of `capacity` tokens refilled at `per_sec`,
//! computed as GCRA: the entry holds the bucket's *theoretical arrival time* (TAT, unix ms).
//! A request at `now` may pass while `TAT - now <= T * (capacity - 1)`, where `T = 1000 /
//! per_sec` ms is the time one token takes to refill; passing moves TAT to `max(TAT, now) + T`.
//!
//! Lifecycle of an entry:
//! 1. A missing entry (never written, or expired by the bucket's max age) is a full bucket:
//!    the first request creates it, failing if another process created it first.
//! 2. Every later request reads the entry and writes the new TAT with compare-and-set on the
//!    entry's revision, so two processes never both spend the same token; a lost race re-reads
//!    and decides again (bounded by [`MAX_ROUNDS`]).
//! 3. A refused request writes nothing.
//!
//! The bucket's max age must exceed the longest TAT lead (`capacity / per_sec` seconds), or an
//! entry can expire while it still owes tokens and the bucket refills early.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many read/compare-and-set rounds one `take` tries before giving up.
pub const MAX_ROUNDS: u32 = 20;

/// A token bucket per key, shared through `kv` by every process that uses the same bucket.
#[derive(Clone)]
pub struct RateLimiter {
    kv: kv::Store,
    capacity: u32,
    per_sec: f64,
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No token left; `retry_after` is rounded up to whole seconds (at least 1 s), ready for a
    /// `Retry-After` header.
    Limited {
        retry_after: Duration,
    },
}

impl Decision {
    /// The `Retry-After` value in seconds, for a limited request.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Decision::Allowed => None,
            Decision::Limited { retry_after } => Some(retry_after.as_secs()),
        }
    }
}

/// What an entry holds.
#[derive(Serialize, Deserialize)]
struct State {
    tat_ms: i64,
}

/// The time one token takes to refill, in whole milliseconds (at least 1).
fn interval_ms(per_sec: f64) -> i64 {
    (1000.0 / per_sec).round().clamp(1.0, i64::MAX as f64) as i64
}

/// GCRA for one request at `now_ms` against a bucket whose TAT is `tat_ms` (None: full
/// bucket). `Ok(new TAT)` when the request may pass, `Err(exact wait)` when it may not.
pub fn gcra(
    tat_ms: Option<i64>,
    now_ms: i64,
    capacity: u32,
    per_sec: f64,
) -> Result<i64, Duration> {
    let interval = interval_ms(per_sec);
    let tau = interval.saturating_mul(i64::from(capacity.max(1) - 1));
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let lead = tat - now_ms;
    if lead > tau {
        Err(Duration::from_millis((lead - tau) as u64))
    } else {
        Ok(tat.saturating_add(interval))
    }
}

/// A token bucket per key kept in this process only (no round trip): for limits that guard a
/// hot path against runaway callers, where each process enforcing its share is enough.
pub struct Local {
    capacity: u32,
    per_sec: f64,
    tats: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// Past this many keys, those whose bucket is full again are forgotten.
const LOCAL_KEYS: usize = 100_000;

impl Local {
    pub fn new(capacity: u32, per_sec: f64) -> Self {
        Self {
            capacity,
            per_sec,
            tats: Default::default(),
        }
    }

    /// Takes a token of `key` at `now_ms`.
    pub fn take(&self, key: &str, now_ms: i64) -> Decision {
        let mut tats = self
            .tats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tats.len() >= LOCAL_KEYS {
            tats.retain(|_, tat| *tat > now_ms);
        }
        match gcra(tats.get(key).copied(), now_ms, self.capacity, self.per_sec) {
            Ok(tat) => {
                tats.insert(key.to_string(), tat);
                Decision::Allowed
            }
            Err(wait) => Decision::Limited {
                retry_after: whole_seconds(wait),
            },
        }
    }
}

/// A wait rounded up to whole seconds, at least one.
fn whole_seconds(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_millis().div_ceil(1000).max(1) as u64)
}

/// The KV key for `key`: itself when it is made of `[A-Za-z0-9_-]` (at most 128 characters),
/// else `sha256.<hex>` (which no plain key can collide with, having a dot).
pub fn kv_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        key.to_string()
    } else {
        format!("sha256.{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

enum Write {
    Done,
    Conflict,
}

impl RateLimiter {
    /// `capacity` >= 1 tokens, refilled at `per_sec` > 0 tokens a second (0.5 = one token every
    /// 2 s). Panics on other values: they are configuration errors caught at start-up.
    pub fn new(kv: kv::Store, capacity: u32, per_sec: f64) -> Self {
        assert!(capacity >= 1, "a rate limit needs a capacity of at least 1");
        assert!(
            per_sec.is_finite() && per_sec > 0.0,
            "a rate limit needs a positive refill rate"
        );
        Self {
            kv,
            capacity,
            per_sec,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// Spends one token of `key` (a partner id; other characters than `[A-Za-z0-9_-]` are
    /// hashed, see [`kv_key`]).
    pub async fn take(&self, key: &str) -> anyhow::Result<Decision> {
        let kv_key = kv_key(key);
        for round in 0..MAX_ROUNDS {
            if round > 0 {
                // Spread the losers of a race so they do not collide again in lockstep.
                let micros = rand::random_range(0..250 * u64::from(round));
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            let entry = self
                .kv
                .entry(kv_key.as_str())
                .await
                .with_context(|| format!("could not read the rate limit of {key}"))?;
            let (stored_tat, revision) = match &entry {
                None => (None, None),
                Some(entry) if entry.operation == Operation::Put => {
                    match serde_json::from_slice::<State>(&entry.value) {
                        Ok(state) => (Some(state.tat_ms), Some(entry.revision)),
                        Err(err) => {
                            tracing::warn!(%err, key, "rate limit entry unreadable; resetting it");
                            (None, Some(entry.revision))
                        }
                    }
                }
                // Deleted or purged: a full bucket, replaced at that revision.
                Some(entry) => (None, Some(entry.revision)),
            };
            let tat = match gcra(stored_tat, unix_ms(), self.capacity, self.per_sec) {
                Ok(tat) => tat,
                Err(wait) => {
                    return Ok(Decision::Limited {
                        retry_after: whole_seconds(wait),
                    });
                }
            };
            let value = serde_json::to_vec(&State { tat_ms: tat })?;
            match self.write(&kv_key, value.into(), revision).await {
                Ok(Write::Done) => return Ok(Decision::Allowed),
                Ok(Write::Conflict) => continue,
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("could not update the rate limit of {key}"));
                }
            }
        }
        anyhow::bail!(
            "the rate limit of {key} is too contended: {MAX_ROUNDS} compare-and-set rounds lost"
        )
    }

    async fn write(
        &self,
        key: &str,
        value: bytes::Bytes,
        revision: Option<u64>,
    ) -> anyhow::Result<Write> {
        match revision {
            Some(revision) => match self.kv.update(key, value, revision).await {
                Ok(_) => Ok(Write::Done),
                Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(Write::Conflict),
                Err(err) => Err(err.into()),
            },
            None => match self.kv.create(key, value).await {
                Ok(_) => Ok(Write::Done),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(Write::Conflict),
                Err(err) => Err(err.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    /// Runs `n` requests at `now` from `tat`, returning how many passed and the final TAT or
    /// the first refusal.
    fn burst(
        tat: Option<i64>,
        now: i64,
        n: u32,
        capacity: u32,
        per_sec: f64,
    ) -> Vec<Result<i64, Duration>> {
        let mut tat = tat;
        (0..n)
            .map(|_| {
                let result = gcra(tat, now, capacity, per_sec);
                if let Ok(new) = result {
                    tat = Some(new);
                }
                result
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_allows_capacity_requests_then_limits() {
        let results = burst(None, NOW, 7, 5, 1.0);
        assert!(results[..5].iter().all(Result::is_ok), "{results:?}");
        assert_eq!(results[4], Ok(NOW + 5_000));
        assert_eq!(results[5], Err(Duration::from_millis(1_000)));
        assert_eq!(results[6], Err(Duration::from_millis(1_000)));
    }

    #[test]
    fn one_token_refills_after_one_interval() {
        // Capacity 3 at 2 tokens/s: T = 500 ms, bucket empty with TAT now + 1500.
        let tat = NOW + 1_500;
        assert_eq!(
            gcra(Some(tat), NOW, 3, 2.0),
            Err(Duration::from_millis(500))
        );
        assert_eq!(
            gcra(Some(tat), NOW + 499, 3, 2.0),
            Err(Duration::from_millis(1))
        );
        assert_eq!(gcra(Some(tat), NOW + 500, 3, 2.0), Ok(NOW + 2_000));
        // Only one token came back.
        assert!(gcra(Some(NOW + 2_000), NOW + 500, 3, 2.0).is_err());
    }

    #[test]
    fn an_idle_bucket_is_full_again_and_does_not_bank_more() {
        let results = burst(Some(NOW - 3_600_000), NOW, 4, 3, 1.0);
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    }

    #[test]
    fn slow_rates_give_long_waits() {
        // 0.5/s = one token every 2 s; capacity 1.
        assert_eq!(gcra(None, NOW, 1, 0.5), Ok(NOW + 2_000));
        assert_eq!(
            gcra(Some(NOW + 2_000), NOW + 300, 1, 0.5),
            Err(Duration::from_millis(1_700))
        );
        // 0.001/s: 1000 s per token.
        let results = burst(None, NOW, 6, 5, 0.001);
        assert_eq!(results[5], Err(Duration::from_secs(1_000)));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(
            whole_seconds(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            whole_seconds(Duration::from_millis(1_000)),
            Duration::from_secs(1)
        );
        assert_eq!(
            whole_seconds(Duration::from_millis(1_001)),
            Duration::from_secs(2)
        );
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        let limited = Decision::Limited {
            retry_after: whole_seconds(Duration::from_millis(1_700)),
        };
        assert_eq!(limited.retry_after_secs(), Some(2));
        assert_eq!(Decision::Allowed.retry_after_secs(), None);
    }

    #[test]
    fn fast_rates_keep_a_one_millisecond_interval() {
        assert_eq!(interval_ms(1.0), 1_000);
        assert_eq!(interval_ms(3.0), 333);
        assert_eq!(interval_ms(1e6), 1);
    }

    #[test]
    fn keys_are_kv_safe() {
        assert_eq!(kv_key("partner_A-1"), "partner_A-1");
        let hashed = kv_key("partner.with dots/and spaces");
        assert!(hashed.starts_with("sha256."));
        assert_eq!(hashed.len(), "sha256.".len() + 64);
        assert!(kv_key("").starts_with("sha256."));
    }

    mod against_nats {
        use super::*;
        use async_nats::jetstream::{self, stream};

        const NATS_URL: &str = "nats://127.0.0.1:4222";

        /// A KV bucket created as a plain stream, the way that works on NATS 2.9 and later.
        async fn bucket(js: &jetstream::Context) -> (String, kv::Store) {
            let bucket = format!("rltest_{}", uuid::Uuid::new_v4().simple());
            js.create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                max_age: Duration::from_secs(3600),
                storage: stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .expect("create the KV stream (is nats-server -js running on 4222?)");
            let kv = js.get_key_value(&bucket).await.expect("open the bucket");
            (bucket, kv)
        }

        async fn context() -> jetstream::Context {
            let client = async_nats::connect(NATS_URL)
                .await
                .expect("NATS on 127.0.0.1:4222");
            jetstream::new(client)
        }

        #[tokio::test]
        async fn two_processes_never_spend_the_same_token() {
            let js_a = context().await;
            let js_b = context().await;
            let (bucket, kv_a) = bucket(&js_a).await;
            let kv_b = js_b.get_key_value(&bucket).await.unwrap();
            let a = RateLimiter::new(kv_a, 5, 0.001);
            let b = RateLimiter::new(kv_b, 5, 0.001);

            let takes = (0..20).map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { limiter.take("partner-1").await })
            });
            let results: Vec<_> = futures::future::join_all(takes).await;
            // A different key has its own bucket.
            let other = a.take("partner-2").await;
            js_a.delete_stream(format!("KV_{bucket}")).await.unwrap();

            let decisions: Vec<Decision> =
                results.into_iter().map(|r| r.unwrap().unwrap()).collect();
            let allowed = decisions
                .iter()
                .filter(|d| **d == Decision::Allowed)
                .count();
            assert_eq!(allowed, 5, "{decisions:?}");
            for decision in decisions.iter().filter(|d| **d != Decision::Allowed) {
                // 1000 s per token, the last one spent just now.
                let secs = decision.retry_after_secs().unwrap();
                assert!((999..=1000).contains(&secs), "{decision:?}");
            }
            assert_eq!(other.unwrap(), Decision::Allowed);
        }

        #[tokio::test]
        async fn tokens_come_back_at_the_refill_rate() {
            let js = context().await;
            let (bucket, kv) = bucket(&js).await;
            // One token, back after 500 ms: the second take finds none; polling (which spends
            // nothing while limited) finds it back.
            let limiter = RateLimiter::new(kv, 1, 2.0);
            let first = limiter.take("p").await.unwrap();
            let second = limiter.take("p").await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut third = limiter.take("p").await.unwrap();
            while third != Decision::Allowed && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                third = limiter.take("p").await.unwrap();
            }
            js.delete_stream(format!("KV_{bucket}")).await.unwrap();

            assert_eq!(first, Decision::Allowed);
            assert_eq!(
                second,
                Decision::Limited {
                    retry_after: Duration::from_secs(1)
                }
            );
            assert_eq!(third, Decision::Allowed, "the token came back");
        }
    }

    #[test]
    fn a_local_bucket_refuses_past_its_capacity_and_refills() {
        let local = Local::new(3, 10.0);
        for _ in 0..3 {
            assert_eq!(local.take("p", 1_000), Decision::Allowed);
        }
        assert!(matches!(local.take("p", 1_000), Decision::Limited { .. }));
        assert_eq!(
            local.take("other", 1_000),
            Decision::Allowed,
            "keys are separate"
        );
        assert_eq!(
            local.take("p", 1_100),
            Decision::Allowed,
            "a token refilled after 100 ms"
        );
    }
}
