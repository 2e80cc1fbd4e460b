use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A circuit breaker per delivery target, per process: after `threshold` retryable failures in
/// a row it opens for `open_for`; then one probe is let through, whose result closes or reopens
/// it. While it is open the runtime stops pulling messages for that target.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// `Ok` when a call may go out now; otherwise how long until it may.
    pub fn allow(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    Ok(())
                } else {
                    Err(until - now)
                }
            }
            // A probe is out; others wait a fraction of the open time.
            State::HalfOpen => Err((self.open_for / 4).max(Duration::from_millis(10))),
        }
    }

    /// How long to hold off pulling, if the breaker is open.
    pub fn open_remaining(&self) -> Option<Duration> {
        match *self.state.lock().expect("breaker lock") {
            State::Open { until } => until.checked_duration_since(Instant::now()),
            _ => None,
        }
    }

    /// Closed, open or half-open, as metrics and `ihub status` name them.
    pub fn state(&self) -> super::shared_breaker::State {
        use super::shared_breaker::State as Shown;
        match *self.state.lock().expect("breaker lock") {
            State::Closed { .. } => Shown::Closed,
            State::HalfOpen => Shown::HalfOpen,
            State::Open { .. } => Shown::Open,
        }
    }

    pub fn succeeded(&self) {
        *self.state.lock().expect("breaker lock") = State::Closed { failures: 0 };
    }

    /// The call did not reach the partner (our own outage, a parked message): says nothing
    /// about it. A probe that ended so lets the next call probe instead.
    pub fn no_verdict(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if *state == State::HalfOpen {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    pub fn failed(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Open { until } => State::Open { until },
            _ => State::Open {
                until: Instant::now() + self.open_for,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_open_time() {
        let b = Breaker::new(3, Duration::from_millis(40));
        b.failed();
        b.failed();
        assert!(b.allow().is_ok());
        b.failed();
        assert!(b.allow().is_err());
        assert!(b.open_remaining().is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.allow().is_ok(), "the probe goes through");
        assert!(b.allow().is_err(), "only one probe at a time");
        b.succeeded();
        assert!(b.allow().is_ok());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.failed();
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow().is_ok());
        b.failed();
        assert!(b.allow().is_err());
    }

    #[test]
    fn a_probe_without_verdict_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.failed();
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow().is_ok());
        b.no_verdict();
        assert!(b.allow().is_ok(), "the next call probes");
        assert!(b.allow().is_err(), "one probe at a time");
        b.succeeded();
        b.no_verdict();
        assert!(b.allow().is_ok(), "a closed breaker stays closed");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.failed();
        b.succeeded();
        b.failed();
        assert!(b.allow().is_ok());
    }
}
