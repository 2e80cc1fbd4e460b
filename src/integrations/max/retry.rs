//! MAX's retry table, the seed's, for every adapter:
//!
//! | answer | next |
//! | --- | --- |
//! | 2xx | done |
//! | timeout, connection failure, 5xx, 408, 429 | again after 2 s, 4 s, 8 s: three retries (`MAX_RETRY_BASE_MS` doubling; `Retry-After` honoured when longer) |
//! | 401 | re-authenticate once, then again at once; a second 401 is final |
//! | any other 4xx | final |
//!
//! A write's pauses are JetStream redeliveries (the `operate-max` durable runs on
//! [`schedule`]); a read's are taken in the service call that waits for it.

use std::time::Duration;

use crate::http_client::{Response, Verdict};
use crate::runtime::Schedule;

/// Attempts in all for a retryable failure: the first and three retries.
pub const ATTEMPTS: u32 = 4;

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    /// Try again after this long.
    Retry(Duration),
    /// Get a new token, then try again at once.
    Reauthenticate,
    /// Stop: the last answer is the outcome.
    GiveUp,
}

/// The schedule of MAX's retries (`MAX_RETRY_BASE_MS`, default 2,000).
pub fn schedule(base: Duration) -> Schedule {
    Schedule::Exponential {
        base,
        max: base * 4,
        attempts: ATTEMPTS,
    }
}

/// After attempt `attempt` (1 for the first) answered `response`; `reauthenticated` says
/// whether this call already re-authenticated once.
pub fn next(schedule: &Schedule, attempt: u32, response: &Response, reauthenticated: bool) -> Next {
    match (response.status, response.verdict()) {
        (_, Verdict::Success) => Next::Done,
        (Some(401), _) if !reauthenticated => Next::Reauthenticate,
        (_, Verdict::Retry) if attempt < ATTEMPTS => {
            Next::Retry(schedule.next_delay(u64::from(attempt), response.retry_after()))
        }
        _ => Next::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answered(status: u16, retry_after: Option<&str>) -> Response {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
        }
        Response {
            status: Some(status),
            headers,
            body: bytes::Bytes::new(),
            duration: Duration::ZERO,
            error: None,
        }
    }

    #[test]
    fn the_seeds_table() {
        let s = schedule(Duration::from_secs(2));
        let timeout = Response::not_sent("timed out".into());
        assert_eq!(next(&s, 1, &answered(200, None), false), Next::Done);
        assert_eq!(next(&s, 1, &answered(404, None), false), Next::GiveUp);
        assert_eq!(next(&s, 1, &answered(401, None), false), Next::Reauthenticate);
        assert_eq!(next(&s, 1, &answered(401, None), true), Next::GiveUp);
        assert_eq!(next(&s, 4, &answered(503, None), false), Next::GiveUp, "three retries");
        assert_eq!(next(&s, 4, &timeout, false), Next::GiveUp);
        for (attempt, around) in [(1, 2.0), (2, 4.0), (3, 8.0)] {
            for failed in [answered(503, None), answered(429, None), Response::not_sent("timed out".into())] {
                let Next::Retry(delay) = next(&s, attempt, &failed, false) else {
                    panic!("{failed:?} is retried");
                };
                let secs = delay.as_secs_f64();
                assert!(secs >= around && secs <= around * 1.2, "{attempt}: {secs}");
            }
        }
        // A partner asking for longer is given it.
        let Next::Retry(delay) = next(&s, 1, &answered(429, Some("30")), false) else {
            panic!("429 is retried");
        };
        assert_eq!(delay, Duration::from_secs(30));
    }

    proptest! {
        #[test]
        fn other_client_errors_are_final(status in 400u16..500, attempt in 1u32..4) {
            prop_assume!(![401, 408, 429].contains(&status));
            let s = schedule(Duration::from_millis(10));
            prop_assert_eq!(next(&s, attempt, &answered(status, None), false), Next::GiveUp);
        }

        #[test]
        fn server_errors_retry_three_times(status in 500u16..600, attempt in 1u32..6) {
            let s = schedule(Duration::from_millis(10));
            let next = next(&s, attempt, &answered(status, None), false);
            prop_assert_eq!(matches!(next, Next::Retry(_)), attempt < ATTEMPTS);
        }
    }
}
