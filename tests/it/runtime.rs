//! The runtime against real JetStream, with a scripted stage: acks, retries, dead letters,
//! progress, breaker and shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ihub::nats::headers;
use ihub::runtime::{self, Delivery, Failure, Spec, Stage, StageResult};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::eventually;
use crate::support::test_stream::TestStream;

const WAIT: Duration = Duration::from_secs(10);

/// A stage that does what its script says, recording each call.
struct Scripted {
    script: Box<dyn Fn(u64) -> StageResult + Send + Sync>,
    work: Duration,
    calls: Mutex<Vec<(u64, Instant)>>,
    /// Deliveries whose work is done.
    finished: Mutex<Vec<u64>>,
    dead: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(
        work: Duration,
        script: impl Fn(u64) -> StageResult + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            work,
            calls: Mutex::new(Vec::new()),
            finished: Mutex::new(Vec::new()),
            dead: Mutex::new(Vec::new()),
        })
    }

    fn deliveries(&self) -> Vec<u64> {
        self.calls.lock().unwrap().iter().map(|(d, _)| *d).collect()
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    fn finished(&self) -> Vec<u64> {
        self.finished.lock().unwrap().clone()
    }
}

impl Stage for Scripted {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        self.calls
            .lock()
            .unwrap()
            .push((delivery.delivered, Instant::now()));
        tokio::time::sleep(self.work).await;
        self.finished.lock().unwrap().push(delivery.delivered);
        (self.script)(delivery.delivered)
    }

    async fn dead_lettered(&self, _delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        self.dead.lock().unwrap().push(error.to_string());
        Ok(())
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
    async fn new(ack_wait: Duration) -> Bench {
        Bench(TestStream::new('r', ack_wait).await)
    }

    fn spec(&self, attempts: u32, concurrency: usize) -> Spec {
        self.0.spec(attempts, concurrency, None)
    }

    fn run(
        &self,
        spec: Spec,
        stage: Arc<Scripted>,
        stop: &CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(runtime::run(self.bus.clone(), spec, stage, stop.clone()))
    }

    async fn publish(&self, subject: &str, msg_id: &str) {
        self.bus
            .publish(
                subject,
                Some(msg_id),
                async_nats::HeaderMap::new(),
                Bytes::from_static(b"{\"n\":1}"),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_retry_is_redelivered_until_it_succeeds() {
    let bench = Bench::new(Duration::from_secs(5)).await;
    let stage = Scripted::new(Duration::ZERO, |delivered| {
        if delivered < 3 {
            Err(Failure::retry("not yet"))
        } else {
            Ok(())
        }
    });
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, 4), stage.clone(), &stop);
    bench.publish("test.a", "m-1").await;

    eventually("three deliveries", WAIT, || async {
        (stage.deliveries() == [1, 2, 3]).then_some(())
    })
    .await;
    eventually("the ack", WAIT, || async {
        (bench.backlog().await == (0, 0)).then_some(())
    })
    .await;
    let times = stage.times();
    assert!(
        times[1] - times[0] >= Duration::from_millis(10),
        "naked with the schedule's delay"
    );
    assert!(stage.dead.lock().unwrap().is_empty());
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_with_its_origin() {
    let bench = Bench::new(Duration::from_secs(5)).await;
    let stage = Scripted::new(Duration::ZERO, |_| {
        Err(Failure::permanent("HTTP 400: no such player"))
    });
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, 4), stage.clone(), &stop);
    bench.publish("test.permanent", "m-42").await;

    let letter = eventually("the dead letter", WAIT, || async {
        ihub::runtime::dlq::list(&bench.bus, Some("test-stage"))
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        stage.deliveries(),
        [1],
        "a permanent failure is not retried"
    );
    assert_eq!(*stage.dead.lock().unwrap(), ["HTTP 400: no such player"]);
    assert_eq!(
        letter.original_subject,
        bench.bus.names.subject("test.permanent")
    );
    assert_eq!(letter.original_stream, bench.bus.names.stream("TEST"));
    assert_eq!(letter.original_seq, Some(1));
    assert_eq!(letter.deliveries, Some(1));
    assert_eq!(letter.error, "HTTP 400: no such player");
    assert_eq!(letter.payload, "{\"n\":1}");
    let header = |name: &str| {
        letter
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(headers::ORIGINAL_MSG_ID).as_deref(), Some("m-42"));
    eventually("the term", WAIT, || async {
        (bench.backlog().await == (0, 0)).then_some(())
    })
    .await;

    // A replay republishes it where it came from; it fails again and comes back, once more.
    ihub::runtime::dlq::replay(&bench.bus, letter.seq)
        .await
        .unwrap();
    eventually("the second dead letter", WAIT, || async {
        let letters = ihub::runtime::dlq::list(&bench.bus, None).await.unwrap();
        (letters.len() == 1 && letters[0].seq != letter.seq).then_some(())
    })
    .await;
    assert_eq!(stage.deliveries(), [1, 1]);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn retries_stop_after_the_schedules_attempts() {
    let bench = Bench::new(Duration::from_secs(5)).await;
    let stage = Scripted::new(Duration::ZERO, |_| Err(Failure::retry("HTTP 503")));
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(3, 4), stage.clone(), &stop);
    bench.publish("test.exhausted", "m-1").await;

    let letter = eventually("the dead letter", WAIT, || async {
        ihub::runtime::dlq::list(&bench.bus, None)
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(stage.deliveries(), [1, 2, 3]);
    assert_eq!(letter.deliveries, Some(3));
    assert!(
        letter.error.contains("HTTP 503") && letter.error.contains("attempt 3 of 3"),
        "{}",
        letter.error
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let bench = Bench::new(Duration::from_secs(5)).await;
    let stage = Scripted::new(Duration::ZERO, |delivered| {
        if delivered == 1 {
            Err(Failure::Retry {
                error: "HTTP 429".into(),
                retry_after: Some(Duration::from_millis(700)),
            })
        } else {
            Ok(())
        }
    });
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, 4), stage.clone(), &stop);
    bench.publish("test.slow-down", "m-1").await;
    eventually("the second delivery", WAIT, || async {
        (stage.deliveries().len() == 2).then_some(())
    })
    .await;
    let times = stage.times();
    assert!(
        times[1] - times[0] >= Duration::from_millis(700),
        "{:?}",
        times[1] - times[0]
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn long_work_keeps_its_message_with_progress_acks() {
    // ack_wait 1 s, work 2.5 s: without in-progress acks it would be redelivered meanwhile.
    let bench = Bench::new(Duration::from_secs(1)).await;
    let stage = Scripted::new(Duration::from_millis(2500), |_| Ok(()));
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, 4), stage.clone(), &stop);
    bench.publish("test.long", "m-1").await;
    eventually("the ack", Duration::from_secs(10), || async {
        (!stage.deliveries().is_empty() && bench.backlog().await == (0, 0)).then_some(())
    })
    .await;
    // Had ack_wait run out under the work, the server would have redelivered it meanwhile.
    let info = bench.info().await;
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 1);
    assert_eq!(stage.deliveries(), [1]);
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_hand() {
    let bench = Bench::new(Duration::from_secs(2)).await;
    let stage = Scripted::new(Duration::from_millis(800), |_| Ok(()));
    let stop = CancellationToken::new();
    let task = bench.run(bench.spec(5, 4), stage.clone(), &stop);
    bench.publish("test.in-hand", "m-1").await;
    eventually("the work to start", WAIT, || async {
        (!stage.deliveries().is_empty()).then_some(())
    })
    .await;

    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(stage.finished(), [1], "it waited for the work in hand");

    // It was acked before the runner returned: the server holds nothing to redeliver.
    eventually("the ack at the server", WAIT, || async {
        let info = bench.info().await;
        (info.ack_floor.stream_sequence == 1).then_some(())
    })
    .await;
    let info = bench.info().await;
    assert_eq!(
        (info.num_pending, info.num_ack_pending, info.num_redelivered),
        (0, 0, 0),
        "{info:?}"
    );
    assert_eq!(stage.deliveries(), [1]);
}

#[tokio::test]
async fn runners_on_one_durable_share_the_messages() {
    let bench = Bench::new(Duration::from_secs(5)).await;
    let first = Scripted::new(Duration::from_millis(30), |_| Ok(()));
    let second = Scripted::new(Duration::from_millis(30), |_| Ok(()));
    let stop = CancellationToken::new();
    // Both are pulling before anything is published.
    let tasks = [
        bench.pulling(bench.spec(5, 1), first.clone(), &stop).await,
        bench.pulling(bench.spec(5, 1), second.clone(), &stop).await,
    ];
    for i in 0..20 {
        bench.publish("test.shared", &format!("m-{i}")).await;
    }
    eventually("all 20 handled", WAIT, || async {
        (first.deliveries().len() + second.deliveries().len() == 20).then_some(())
    })
    .await;
    assert!(!first.deliveries().is_empty() && !second.deliveries().is_empty());
    stop.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn an_open_breaker_pauses_calls() {
    let bench = Bench::new(Duration::from_secs(5)).await;
    let stage = Scripted::new(Duration::ZERO, |_| Err(Failure::retry("HTTP 502")));
    let stop = CancellationToken::new();
    let spec = Spec {
        breaker: Some((2, Duration::from_millis(800))),
        ..bench.spec(20, 1)
    };
    let task = bench.run(spec, stage.clone(), &stop);
    bench.publish("test.breaker", "m-1").await;
    eventually("a call after the breaker opened", WAIT, || async {
        (stage.deliveries().len() >= 3).then_some(())
    })
    .await;
    // The schedule alone would retry within 60 ms; the open breaker holds the third call
    // back for its open time.
    let times = stage.times();
    assert!(
        times[2] - times[1] >= Duration::from_millis(700),
        "open: paused {:?}",
        times[2] - times[1]
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Inserts its number; a negative one fails.
struct Insert;

impl ihub::runtime::group_commit::Batched for Insert {
    type Job = i32;
    type Done = i32;

    fn run<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        numbers: &'a [&'a i32],
    ) -> futures::future::BoxFuture<'a, Result<Vec<i32>, Failure>> {
        Box::pin(async move {
            let numbers: Vec<i32> = numbers.iter().map(|n| **n).collect();
            if let Some(n) = numbers.iter().find(|n| **n < 0) {
                return Err(Failure::permanent(format!("{n} is negative")));
            }
            sqlx::query("INSERT INTO numbers SELECT * FROM unnest($1::int[])")
                .bind(&numbers)
                .execute(&mut *tx)
                .await?;
            Ok(numbers)
        })
    }
}

#[tokio::test]
async fn a_group_commit_fails_only_the_failing_job() {
    let url = format!(
        "postgres://postgres@127.0.0.1:5432/ihub_{}",
        crate::support::unique('g')
    );
    ihub::db::create_database_if_missing(&url).await.unwrap();
    let db = ihub::db::connect(&url, 4).await.unwrap();
    sqlx::query("CREATE TABLE numbers (n int PRIMARY KEY)")
        .execute(&db)
        .await
        .unwrap();
    let group = Arc::new(ihub::runtime::group_commit::GroupCommit::start(
        db.clone(),
        Arc::new(Insert),
        64,
    ));
    let outcomes = futures::future::join_all((-3..30).map(|n| {
        let group = group.clone();
        async move { (n, group.submit(n).await) }
    }))
    .await;
    for (n, outcome) in outcomes {
        match outcome {
            Ok(done) => assert_eq!(done, n),
            Err(failure) => {
                assert!(n < 0, "{n}: {failure}");
                assert!(matches!(failure, Failure::Permanent { .. }));
            }
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM numbers")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 30, "every good job committed, each once");
    db.close().await;
    ihub::db::drop_database(&url).await.unwrap();
}
