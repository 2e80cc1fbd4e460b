//! The load of a scenario: an RGS sending signed debits and credits at a steady rate, each
//! with its own player and Idempotency-Key, and retrying a 5xx, a 429, a timeout or a refused
//! connection with the same key and body until the hub answers it (or a minute and a half has
//! passed), as a real RGS does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Out;
use crate::integrations::wallet::client::Rgs;

/// An RGS's patience: it stops retrying a request this long after first sending it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);
/// Retries wait 200 ms, doubling up to this (or the hub's `Retry-After`, up to 5 s).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Plan {
    pub requests: u64,
    pub rate: f64,
    pub concurrency: usize,
    /// Part of every Idempotency-Key, so runs never share one.
    pub run: String,
}

impl Plan {
    /// When request `index` is due, from the start of the load.
    pub fn due(&self, index: u64) -> Duration {
        Duration::from_secs_f64(index as f64 / self.rate)
    }
}

/// One request the hub accepted (answered 2xx).
pub struct Accepted {
    pub player_id: String,
    pub transaction_id: String,
    /// From its first send to the 2xx.
    pub took: Duration,
}

/// What the RGS saw.
#[derive(Default)]
pub struct Tally {
    pub accepted: Vec<Accepted>,
    /// Answered with a 4xx other than 408/429 (never expected: each shows a bug).
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Never answered 2xx within the RGS's patience.
    pub unanswered: u64,
    /// 5xx answers, retries included.
    pub http_5xx: u64,
    /// Timeouts and refused or broken connections, retries included.
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the sending of the first request that got a 5xx or failed to the end of the last
    /// one, from the start of the load: when the hub was not taking requests.
    pub first_bad: Option<Duration>,
    pub last_bad: Option<Duration>,
    /// From the start of the load until the last request was answered (or given up).
    pub elapsed: Duration,
}

impl Tally {
    fn bad(&mut self, sent: Duration, ended: Duration) {
        self.first_bad = Some(self.first_bad.map_or(sent, |first| first.min(sent)));
        self.last_bad = Some(self.last_bad.map_or(ended, |last| last.max(ended)));
    }
}

/// What request `index` sends: mostly debits, every fourth a credit; 1.00 to 3.25 EUR in
/// minor units; a player of its own, so the operator's bookings per player count it.
pub fn request(index: u64) -> (&'static str, String, serde_json::Value) {
    let operation = if index % 4 == 3 { "credit" } else { "debit" };
    let player_id = format!("player-{index}");
    let body = json!({
        "player_id": player_id,
        "amount": 100 + (index % 10) * 25,
        "currency": "EUR",
    });
    (operation, player_id, body)
}

/// Sends `plan.requests` requests, request `i` at `start + plan.due(i)` (later when every
/// caller is busy retrying), and returns what came back.
pub async fn drive(rgs: Arc<Rgs>, plan: Arc<Plan>, start: Instant, out: Out) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (rgs, plan, tally, next, answered) = (
            rgs.clone(),
            plan.clone(),
            tally.clone(),
            next.clone(),
            answered.clone(),
        );
        callers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.requests {
                    break;
                }
                tokio::time::sleep_until(start + plan.due(index)).await;
                send_until_answered(&rgs, &plan, index, start, &tally).await;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let progress = {
        let (tally, answered, plan) = (tally.clone(), answered.clone(), plan.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let t = tally.lock().await;
                out.progress(format!(
                    "    {:>5.1} s  answered {}/{}, accepted {}, 5xx {}, errors {}",
                    start.elapsed().as_secs_f64(),
                    answered.load(Ordering::Relaxed),
                    plan.requests,
                    t.accepted.len(),
                    t.http_5xx,
                    t.errors
                ));
            }
        })
    };
    callers.join_all().await;
    progress.abort();
    let mut tally = std::mem::take(&mut *tally.lock().await);
    tally.elapsed = start.elapsed();
    tally
}

async fn send_until_answered(
    rgs: &Rgs,
    plan: &Plan,
    index: u64,
    start: Instant,
    tally: &Mutex<Tally>,
) {
    let (operation, player_id, body) = request(index);
    let key = format!("chaos-{}-{index}", plan.run);
    let first_sent = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let sent = start.elapsed();
        let wait = match rgs.post(operation, &key, &body).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                let transaction_id = answer.body["transaction_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                tally.lock().await.accepted.push(Accepted {
                    player_id,
                    transaction_id,
                    took: first_sent.elapsed(),
                });
                return;
            }
            Ok(answer) if answer.status >= 500 || matches!(answer.status, 408 | 429) => {
                let mut t = tally.lock().await;
                if answer.status >= 500 {
                    t.http_5xx += 1;
                    t.bad(sent, start.elapsed());
                }
                answer
                    .retry_after
                    .map(|after| after.min(Duration::from_secs(5)))
            }
            Ok(answer) => {
                let mut t = tally.lock().await;
                t.refused += 1;
                t.first_refusal
                    .get_or_insert(format!("HTTP {}: {}", answer.status, answer.body));
                return;
            }
            Err(err) => {
                let mut t = tally.lock().await;
                t.errors += 1;
                t.bad(sent, start.elapsed());
                t.first_error
                    .get_or_insert(format!("{:#}", anyhow::Error::from(err)));
                None
            }
        };
        if first_sent.elapsed() > GIVE_UP_AFTER {
            tally.lock().await.unanswered += 1;
            return;
        }
        tokio::time::sleep(wait.unwrap_or(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_has_its_own_player_and_amounts_are_minor_units() {
        let (operation, player, body) = request(3);
        assert_eq!((operation, player.as_str()), ("credit", "player-3"));
        assert_eq!(body["amount"], 175);
        assert_eq!(request(4).0, "debit");
        assert_eq!(request(4).1, "player-4");
    }

    #[test]
    fn requests_are_spread_at_the_rate() {
        let plan = Plan {
            requests: 10,
            rate: 4.0,
            concurrency: 1,
            run: "r".into(),
        };
        assert_eq!(plan.due(0), Duration::ZERO);
        assert_eq!(plan.due(6), Duration::from_millis(1500));
    }
}
