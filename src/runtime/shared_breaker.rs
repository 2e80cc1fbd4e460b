//! A circuit breaker shared by every process through the `breakers` KV bucket (one key per
//! breaker, e.g. `max.ticketing`; `ihub status` lists them all): after `threshold` consecutive failures it is open for
//! `open_for` and every call fails at once; then one call (the probe, holding a lease so a
//! crashed prober cannot wedge it) goes through, and its result closes or reopens it.
//! Updates are compare-and-set on the entry's revision, so processes racing on the same
//! failure count it once each and only one of them probes.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::nats::Unavailable;

/// Rounds of compare-and-set before a state change is given up (another process keeps
/// changing it; its change is as good).
const ROUNDS: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    /// Consecutive failures while closed.
    failures: u32,
    /// Unix ms until which it is open; 0 when closed.
    open_until_ms: i64,
    /// Unix ms until which the half-open probe is out.
    probe_until_ms: i64,
}

/// What callers and `GET /max/health` see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The `integration_breaker_state` gauge's value.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
}

impl Stored {
    fn state(&self, now: i64) -> State {
        if self.open_until_ms == 0 {
            State::Closed
        } else if now < self.open_until_ms {
            State::Open
        } else {
            State::HalfOpen
        }
    }
}

/// May this call go out?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go.
    Call,
    /// Half-open and this call is the probe.
    Probe,
}

pub struct SharedBreaker {
    kv: kv::Store,
    key: String,
    threshold: u32,
    open_for: Duration,
    /// How long a probe may be out before another call probes instead.
    probe_lease: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl SharedBreaker {
    /// The bucket of every shared breaker.
    pub const BUCKET: &'static str = "breakers";

    /// Breaker `key` (a KV key: letters, digits, `-`, `_`, `.`).
    pub fn new(
        kv: kv::Store,
        key: &str,
        threshold: u32,
        open_for: Duration,
        probe_lease: Duration,
    ) -> Self {
        Self {
            kv,
            key: key.to_string(),
            threshold: threshold.max(1),
            open_for,
            probe_lease,
        }
    }

    async fn load(&self) -> anyhow::Result<(Stored, u64)> {
        let entry = self
            .kv
            .entry(&self.key)
            .await
            .context(Unavailable("could not read the breaker".into()))?;
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice(&entry.value).unwrap_or_default(),
                entry.revision,
            ),
            Some(entry) => (Stored::default(), entry.revision),
            None => (Stored::default(), 0),
        })
    }

    /// Stores `next` if the entry is still at `revision`; false if another process got there
    /// first.
    async fn swap(&self, revision: u64, next: &Stored) -> anyhow::Result<bool> {
        let value = serde_json::to_vec(next)?.into();
        let stored = if revision == 0 {
            self.kv.create(&self.key, value).await.is_ok()
        } else {
            self.kv.update(&self.key, value, revision).await.is_ok()
        };
        Ok(stored)
    }

    pub async fn state(&self) -> anyhow::Result<State> {
        Ok(self.load().await?.0.state(now_ms()))
    }

    /// The state of breaker `key`, read by a process that does not call the partner (the
    /// ingress's `GET /max/health`, `ihub status`).
    pub async fn state_of(kv: &kv::Store, key: &str) -> anyhow::Result<State> {
        let probe = Self::new(kv.clone(), key, 1, Duration::ZERO, Duration::ZERO);
        probe.state().await
    }

    /// `Ok` with how the call goes, or `Err` with the state that refuses it (open, or
    /// half-open with the probe out).
    pub async fn allow(&self) -> anyhow::Result<Result<Permit, State>> {
        for _ in 0..ROUNDS {
            let (stored, revision) = self.load().await?;
            let now = now_ms();
            match stored.state(now) {
                State::Closed => return Ok(Ok(Permit::Call)),
                State::Open => return Ok(Err(State::Open)),
                State::HalfOpen if stored.probe_until_ms > now => return Ok(Err(State::HalfOpen)),
                State::HalfOpen => {
                    let next = Stored {
                        probe_until_ms: now + millis(self.probe_lease),
                        ..stored
                    };
                    if self.swap(revision, &next).await? {
                        return Ok(Ok(Permit::Probe));
                    }
                }
            }
        }
        Ok(Err(State::HalfOpen))
    }

    /// The partner answered (a success, or a refusal that says it is up): closed, count reset.
    pub async fn succeeded(&self) -> anyhow::Result<State> {
        for _ in 0..ROUNDS {
            let (stored, revision) = self.load().await?;
            if stored == Stored::default() || self.swap(revision, &Stored::default()).await? {
                return Ok(State::Closed);
            }
        }
        Ok(State::Closed)
    }

    /// The partner failed (timeout, 5xx, 429): one more in a row; the threshold, or a failed
    /// probe, opens it.
    pub async fn failed(&self) -> anyhow::Result<State> {
        for _ in 0..ROUNDS {
            let (stored, revision) = self.load().await?;
            let now = now_ms();
            let state = stored.state(now);
            if state == State::Open {
                return Ok(State::Open);
            }
            let failures = stored.failures.saturating_add(1);
            let next = if state == State::HalfOpen || failures >= self.threshold {
                Stored {
                    failures,
                    open_until_ms: now + millis(self.open_for),
                    probe_until_ms: 0,
                }
            } else {
                Stored { failures, ..stored }
            };
            if self.swap(revision, &next).await? {
                return Ok(next.state(now));
            }
        }
        self.state().await
    }

    /// A probe that never reached the partner (our own failure) lets the next call probe.
    pub async fn release_probe(&self) -> anyhow::Result<()> {
        let (stored, revision) = self.load().await?;
        if stored.probe_until_ms != 0 {
            let next = Stored {
                probe_until_ms: 0,
                ..stored
            };
            self.swap(revision, &next).await?;
        }
        Ok(())
    }
}

/// What a process reports of its own (in-memory) breaker of a delivery consumer, under
/// [`reported_key`], each time its state changes: what `ihub status` shows of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reported {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Unix ms of the change.
    pub at_ms: i64,
}

/// Where this process reports its breaker of `consumer`: `consumer.<consumer>.<host>-<pid>`.
pub fn reported_key(consumer: &str) -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("consumer.{consumer}.{host}-{}", std::process::id())
}

/// Stores `state` under `key`; a failure is only logged (the breaker works without its
/// report).
pub async fn report(kv: &kv::Store, key: &str, state: State) {
    let reported = Reported {
        state: state.as_str().to_string(),
        at_ms: now_ms(),
    };
    let Ok(value) = serde_json::to_vec(&reported) else {
        return;
    };
    if let Err(err) = kv.put(key, value.into()).await {
        tracing::debug!(%err, key, "could not report the breaker's state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_times() {
        let closed = Stored::default();
        assert_eq!(closed.state(10), State::Closed);
        let open = Stored {
            failures: 5,
            open_until_ms: 100,
            probe_until_ms: 0,
        };
        assert_eq!(open.state(99), State::Open);
        assert_eq!(open.state(100), State::HalfOpen);
    }
}
