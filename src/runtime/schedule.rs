use std::time::Duration;

/// The longest `Retry-After` honoured; a partner asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// When to try a delivery target again, and how often at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// `base`, `2·base`, `4·base`, … capped at `max`, for `attempts` attempts in all.
    Exponential {
        base: Duration,
        max: Duration,
        attempts: u32,
    },
    /// Attempt *n* at `offsets[n-1]` from the first attempt (so `offsets[0]` is 0).
    Offsets(Vec<Duration>),
    /// The doubling of [`Schedule::Exponential`] as a ceiling, each pause drawn uniformly from
    /// zero to it ("full jitter"): the retries of a burst that failed together spread over the
    /// whole window instead of returning together.
    FullJitter {
        base: Duration,
        max: Duration,
        attempts: u32,
    },
}

impl Schedule {
    /// Retries of an internal stage (a database or NATS hiccup): quick at first, for about ten
    /// minutes.
    pub const STAGE: Schedule = Schedule::Exponential {
        base: Duration::from_millis(200),
        max: Duration::from_secs(60),
        attempts: 15,
    };

    /// Doubling backoff read from `<TARGET>_RETRY_BASE_MS`, `_MAX_MS` and `_ATTEMPTS`.
    pub fn exponential_from_env(
        env: &crate::config::Env,
        target: &str,
        base_ms: u64,
        max_ms: u64,
        attempts: u64,
    ) -> anyhow::Result<Self> {
        let base = env.millis(&format!("{target}_RETRY_BASE_MS"), base_ms)?;
        let max = env.millis(&format!("{target}_RETRY_MAX_MS"), max_ms)?;
        let attempts_var = format!("{target}_RETRY_ATTEMPTS");
        let attempts = env.whole(&attempts_var, attempts)?;
        if attempts == 0 {
            anyhow::bail!("{attempts_var} must be at least 1");
        }
        Ok(Schedule::Exponential {
            base,
            max: max.max(base),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        })
    }

    /// [`Schedule::exponential_from_env`] with full jitter.
    pub fn full_jitter_from_env(
        env: &crate::config::Env,
        target: &str,
        base_ms: u64,
        max_ms: u64,
        attempts: u64,
    ) -> anyhow::Result<Self> {
        match Self::exponential_from_env(env, target, base_ms, max_ms, attempts)? {
            Schedule::Exponential {
                base,
                max,
                attempts,
            } => Ok(Schedule::FullJitter {
                base,
                max,
                attempts,
            }),
            other => Ok(other),
        }
    }

    /// Attempt times, in rising milliseconds from the first, read from `var`.
    pub fn offsets_from_env(
        env: &crate::config::Env,
        var: &str,
        default: &str,
    ) -> anyhow::Result<Self> {
        let raw = env.text(var, default);
        raw.split(',')
            .map(|n| n.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|o| !o.is_empty() && o.is_sorted())
            .map(Schedule::Offsets)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{var}={raw:?} must list rising millisecond offsets, e.g. 0,2000,6000"
                )
            })
    }

    pub fn attempts(&self) -> u32 {
        match self {
            Schedule::Exponential { attempts, .. } | Schedule::FullJitter { attempts, .. } => {
                *attempts
            }
            Schedule::Offsets(offsets) => offsets.len().max(1) as u32,
        }
    }

    /// The pause after attempt `delivered` failed, before jitter.
    pub fn delay_after(&self, delivered: u64) -> Duration {
        match self {
            Schedule::Exponential { base, max, .. } | Schedule::FullJitter { base, max, .. } => {
                let doublings = delivered.saturating_sub(1).min(32) as u32;
                base.saturating_mul(2u32.saturating_pow(doublings))
                    .min(*max)
            }
            Schedule::Offsets(offsets) => {
                let n = delivered as usize;
                match (offsets.get(n.saturating_sub(1)), offsets.get(n)) {
                    (Some(this), Some(next)) => next.saturating_sub(*this),
                    _ => offsets.last().copied().unwrap_or_default(),
                }
            }
        }
    }

    /// The pause before the next attempt: the schedule's (plus up to 20 % jitter, so retries
    /// of many messages spread out), or the partner's `Retry-After` when that is longer.
    pub fn next_delay(&self, delivered: u64, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.delay_after(delivered);
        let planned = match self {
            Schedule::FullJitter { .. } => ceiling
                .mul_f64(rand::random_range(0.0..=1.0))
                .max(Duration::from_millis(1)),
            _ => jitter(ceiling),
        };
        match retry_after {
            Some(asked) => planned.max(asked.min(MAX_RETRY_AFTER)),
            None => planned,
        }
    }
}

fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(1.0 + rand::random_range(0.0..0.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn full_jitter_draws_below_the_doubling() {
        let s = Schedule::FullJitter {
            base: MS(100),
            max: MS(500),
            attempts: 6,
        };
        for delivered in 1..=5 {
            let ceiling = s.delay_after(delivered);
            for _ in 0..50 {
                let delay = s.next_delay(delivered, None);
                assert!(
                    delay >= MS(1) && delay <= ceiling,
                    "{delay:?} over {ceiling:?}"
                );
            }
        }
        assert_eq!(s.next_delay(1, Some(MS(900))), MS(900), "Retry-After wins");
        assert_eq!(s.attempts(), 6);
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let s = Schedule::Exponential {
            base: MS(100),
            max: MS(500),
            attempts: 6,
        };
        let delays: Vec<_> = (1..=5).map(|n| s.delay_after(n)).collect();
        assert_eq!(delays, [MS(100), MS(200), MS(400), MS(500), MS(500)]);
        assert_eq!(s.attempts(), 6);
    }

    #[test]
    fn offsets_give_the_gaps_between_attempts() {
        let s = Schedule::Offsets([0, 2, 6, 12].map(Duration::from_secs).to_vec());
        assert_eq!(s.attempts(), 4);
        assert_eq!(s.delay_after(1), Duration::from_secs(2));
        assert_eq!(s.delay_after(2), Duration::from_secs(4));
        assert_eq!(s.delay_after(3), Duration::from_secs(6));
    }

    #[test]
    fn jitter_only_lengthens_and_retry_after_wins_when_longer() {
        let s = Schedule::Exponential {
            base: MS(100),
            max: MS(100),
            attempts: 3,
        };
        for _ in 0..100 {
            let d = s.next_delay(1, None);
            assert!(d >= MS(100) && d < MS(120), "{d:?}");
        }
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }
}
