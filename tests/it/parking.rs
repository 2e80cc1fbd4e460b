//! Parking per key against real JetStream: a stage parks what is not ready for its key, a
//! release runs that key's messages again in parking order, and no other key waits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use ihub::nats::{Bus, headers};
use ihub::runtime::{Delivery, Failure, Readiness, Spec, Stage, StageResult, park};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::eventually;
use crate::support::test_stream::{DURABLE, TestStream};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Event {
    key: String,
    n: u64,
}

/// A message the stage ran: key, n, delivery count, `Ihub-Released-From`, `X-Test`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ran {
    key: String,
    n: u64,
    delivered: u64,
    released_from: Option<String>,
    x_test: Option<String>,
}

/// Runs an event once its key is ready; parks it until then.
#[derive(Default)]
struct Waiter {
    ready: Mutex<HashSet<String>>,
    /// Keys that become ready between the stage's decision and its `parked` re-check (a
    /// release committed at that very moment).
    ready_while_parking: Mutex<HashSet<String>>,
    ran: Mutex<Vec<Ran>>,
    /// (key, n, delivered, reason) per call of the `parked` hook.
    parked: Mutex<Vec<(String, u64, u64, String)>>,
}

impl Waiter {
    fn make_ready(&self, key: &str) {
        self.ready.lock().unwrap().insert(key.to_string());
    }

    fn is_ready(&self, key: &str) -> bool {
        self.ready.lock().unwrap().contains(key)
    }

    fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap().clone()
    }

    fn ran_of(&self, key: &str) -> Vec<u64> {
        self.ran()
            .into_iter()
            .filter(|r| r.key == key)
            .map(|r| r.n)
            .collect()
    }
}

impl Stage for Waiter {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        let event: Event = delivery.json()?;
        if !self.is_ready(&event.key) {
            return Err(Failure::park(
                event.key.clone(),
                format!("{} is not ready", event.key),
            ));
        }
        self.ran.lock().unwrap().push(Ran {
            key: event.key,
            n: event.n,
            delivered: delivery.delivered,
            released_from: delivery.header(headers::RELEASED_FROM).map(str::to_string),
            x_test: delivery.header("X-Test").map(str::to_string),
        });
        Ok(())
    }

    async fn parked(
        &self,
        delivery: &Delivery,
        key: &str,
        reason: &str,
    ) -> anyhow::Result<Readiness> {
        let event: Event = delivery.json()?;
        self.parked.lock().unwrap().push((
            key.to_string(),
            event.n,
            delivery.delivered,
            reason.to_string(),
        ));
        if self.ready_while_parking.lock().unwrap().contains(key) {
            self.make_ready(key);
        }
        Ok(if self.is_ready(key) {
            Readiness::Ready
        } else {
            Readiness::Waiting
        })
    }
}

/// The test stream, with the helpers these tests share.
struct Bench(TestStream);

impl std::ops::Deref for Bench {
    type Target = TestStream;

    fn deref(&self) -> &TestStream {
        &self.0
    }
}

impl Bench {
    async fn new() -> Bench {
        Bench(TestStream::new('p', Duration::from_secs(5)).await)
    }

    fn spec(&self, attempts: u32, breaker: Option<(u32, Duration)>) -> Spec {
        self.0.spec(attempts, 1, breaker)
    }

    async fn run(
        &self,
        spec: Spec,
        stage: Arc<Waiter>,
        stop: &CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        self.pulling(spec, stage, stop).await
    }

    async fn publish(&self, key: &str, n: u64) {
        let mut h = HeaderMap::new();
        h.insert("X-Test", format!("{key}{n}").as_str());
        self.bus
            .publish_json(
                &format!("test.{n}"),
                Some(&format!("{key}-{n}")),
                h,
                &serde_json::json!({ "key": key, "n": n }),
            )
            .await
            .unwrap();
    }

    async fn parked(&self, key: &str) -> Vec<park::ParkedMessage> {
        park::parked(&self.bus, DURABLE, key).await.unwrap()
    }

    /// Waits until `key` has `count` messages parked.
    async fn until_parked(&self, key: &str, count: usize) -> Vec<park::ParkedMessage> {
        eventually(&format!("{count} parked for {key:?}"), WAIT, || async {
            let parked = self.parked(key).await;
            (parked.len() == count).then_some(parked)
        })
        .await
    }

    /// Messages stored in `TEST`: originals plus released copies.
    async fn stored(&self) -> u64 {
        let stream = self.bus.stream("TEST").await.unwrap();
        stream.get_info().await.unwrap().state.messages
    }

    /// Waits until the durable has nothing pending or unacked.
    async fn until_idle(&self) {
        eventually("the durable idle", WAIT, || async {
            (self.backlog().await == (0, 0)).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_release_runs_its_keys_parked_messages_in_order_and_no_other() {
    let bench = Bench::new().await;
    let stage = Arc::new(Waiter::default());
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, None), stage.clone(), &stop).await;

    bench.publish("A", 1).await;
    bench.publish("B", 1).await;
    bench.publish("A", 2).await;
    bench.publish("A", 3).await;
    let parked = bench.until_parked("A", 3).await;
    bench.until_parked("B", 1).await;
    bench.until_idle().await;
    assert!(stage.ran().is_empty(), "nothing ran: {:?}", stage.ran());

    // What a status page shows.
    let first = &parked[0];
    assert_eq!(first.consumer, DURABLE);
    assert_eq!(first.key, "A");
    assert_eq!(first.reason, "A is not ready");
    assert_eq!(first.original_subject, bench.bus.names.subject("test.1"));
    assert_eq!(first.original_stream, bench.bus.names.stream("TEST"));
    assert_eq!(first.original_seq, Some(1));
    assert!(!first.parked_at.is_empty());
    assert_eq!(first.payload, r#"{"key":"A","n":1}"#);
    let header = |name: &str| {
        first
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("X-Test"), Some("A1"));
    assert_eq!(header(headers::ORIGINAL_MSG_ID), Some("A-1"));
    assert!(header("traceparent").is_some(), "the trace goes along");
    let all = park::list(&bench.bus, Some(DURABLE)).await.unwrap();
    let keys: Vec<&str> = all.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["A", "B", "A", "A"],
        "every parked message, oldest first"
    );
    assert_eq!(park::list(&bench.bus, None).await.unwrap().len(), 4);

    // A is ready: its three run again, in the order they were parked; B still waits.
    stage.make_ready("A");
    assert_eq!(park::release(&bench.bus, DURABLE, "A").await.unwrap(), 3);
    eventually("A's messages run", WAIT, || async {
        (stage.ran().len() == 3).then_some(())
    })
    .await;
    bench.until_idle().await;
    let ran = stage.ran();
    assert_eq!(stage.ran_of("A"), [1, 2, 3], "{ran:?}");
    for (r, parked) in ran.iter().zip(&parked) {
        assert_eq!(r.delivered, 1, "a released message has all its attempts");
        assert_eq!(r.released_from, Some(parked.seq.to_string()));
        assert_eq!(r.x_test, Some(format!("A{}", r.n)), "original headers kept");
    }
    assert!(bench.parked("A").await.is_empty());
    assert_eq!(bench.parked("B").await.len(), 1, "B still waits");
    assert!(stage.ran_of("B").is_empty());

    // Once ready, a key's new messages run at once.
    bench.publish("A", 4).await;
    eventually("A4 runs", WAIT, || async {
        (stage.ran_of("A") == [1, 2, 3, 4]).then_some(())
    })
    .await;
    assert_eq!(stage.ran()[3].released_from, None);

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_release_with_nothing_parked_returns_zero() {
    // Before `ihub setup`, it says so.
    let bare = Bus::connect(
        &crate::support::nats_url(),
        &crate::support::unique('p'),
        "ihub-parking-test",
    )
    .await
    .unwrap();
    let err = park::release(&bare, DURABLE, "A").await.unwrap_err();
    assert!(format!("{err:#}").contains("ihub setup"), "{err:#}");

    let bench = Bench::new().await;
    assert_eq!(
        park::release(&bench.bus, DURABLE, "nobody").await.unwrap(),
        0
    );
    assert!(bench.parked("nobody").await.is_empty());
    assert!(park::list(&bench.bus, None).await.unwrap().is_empty());

    let stage = Arc::new(Waiter::default());
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, None), stage.clone(), &stop).await;
    bench.publish("A", 1).await;
    bench.until_parked("A", 1).await;
    assert_eq!(
        park::release(&bench.bus, DURABLE, "other").await.unwrap(),
        0
    );
    stage.make_ready("A");
    assert_eq!(park::release(&bench.bus, DURABLE, "A").await.unwrap(), 1);
    assert_eq!(park::release(&bench.bus, DURABLE, "A").await.unwrap(), 0);
    eventually("A1 runs", WAIT, || async {
        (stage.ran_of("A") == [1]).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn releases_at_once_or_after_a_crash_run_nothing_twice() {
    let bench = Bench::new().await;
    let stage = Arc::new(Waiter::default());
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, None), stage.clone(), &stop).await;
    for n in 1..=3 {
        bench.publish("A", n).await;
    }
    bench.until_parked("A", 3).await;
    stage.make_ready("A");

    // Two releases at once: each message goes out once between them.
    let (one, two) = tokio::join!(
        park::release(&bench.bus, DURABLE, "A"),
        park::release(&bench.bus, DURABLE, "A"),
    );
    assert_eq!(one.unwrap() + two.unwrap(), 3);
    eventually("A's messages run", WAIT, || async {
        (stage.ran_of("A").len() == 3).then_some(())
    })
    .await;
    bench.until_idle().await;
    assert_eq!(bench.stored().await, 6, "3 originals, 3 released copies");
    assert_eq!(stage.ran_of("A"), [1, 2, 3]);

    // A release that dies after republishing, before removing (here: PARKED refuses the
    // purge), then runs again: the copies are stored once.
    stage.ready.lock().unwrap().clear();
    for n in 4..=6 {
        bench.publish("B", n).await;
    }
    bench.until_parked("B", 3).await;
    stage.make_ready("B");
    let parked_stream = bench.bus.stream(park::STREAM).await.unwrap();
    let mut config = parked_stream.cached_info().config.clone();
    config.deny_purge = true;
    bench.bus.js.update_stream(config.clone()).await.unwrap();
    for _ in 0..2 {
        let err = park::release(&bench.bus, DURABLE, "B").await.unwrap_err();
        assert!(format!("{err:#}").contains("could not remove"), "{err:#}");
    }
    eventually("B's messages run", WAIT, || async {
        (stage.ran_of("B").len() == 3).then_some(())
    })
    .await;
    bench.until_idle().await;
    assert_eq!(bench.stored().await, 6 + 3 + 3, "each copy stored once");
    assert_eq!(stage.ran_of("B"), [4, 5, 6]);
    assert_eq!(
        bench.parked("B").await.len(),
        3,
        "still parked: not removed"
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_park_calls_the_hook_and_spends_no_attempt() {
    let bench = Bench::new().await;
    let stage = Arc::new(Waiter::default());
    let stop = CancellationToken::new();
    // One attempt, and a breaker that opens for a minute on one failure: a park that counted
    // as either would dead-letter the message or stop the consumer.
    let spec = bench.spec(1, Some((1, Duration::from_secs(60))));
    let task = bench.run(spec, stage.clone(), &stop).await;

    bench.publish("C", 1).await;
    bench.publish("D", 2).await;
    bench.until_parked("C", 1).await;
    bench.until_parked("D", 1).await;
    bench.until_idle().await;
    assert_eq!(
        *stage.parked.lock().unwrap(),
        [
            ("C".to_string(), 1, 1, "C is not ready".to_string()),
            ("D".to_string(), 2, 1, "D is not ready".to_string()),
        ]
    );
    let info = bench.info().await;
    assert_eq!(info.num_redelivered, 0, "acked, not retried");
    assert!(
        ihub::runtime::dlq::list(&bench.bus, None)
            .await
            .unwrap()
            .is_empty()
    );

    stage.make_ready("C");
    assert_eq!(park::release(&bench.bus, DURABLE, "C").await.unwrap(), 1);
    eventually("C1 runs", WAIT, || async {
        (stage.ran_of("C") == [1]).then_some(())
    })
    .await;
    assert_eq!(stage.ran()[0].delivered, 1);

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_key_that_turns_ready_while_parking_is_released_at_once() {
    let bench = Bench::new().await;
    let stage = Arc::new(Waiter::default());
    stage
        .ready_while_parking
        .lock()
        .unwrap()
        .insert("R".to_string());
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, None), stage.clone(), &stop).await;

    bench.publish("R", 1).await;
    eventually("R1 runs without anyone releasing it", WAIT, || async {
        (stage.ran_of("R") == [1]).then_some(())
    })
    .await;
    assert_eq!(stage.parked.lock().unwrap().len(), 1, "it was parked first");
    assert!(stage.ran()[0].released_from.is_some());
    bench.until_idle().await;
    assert!(bench.parked("R").await.is_empty());

    stop.cancel();
    task.await.unwrap().unwrap();
}
