//! A private stream `TEST` (subjects `test.>`) with the durable `test-stage`, plus the shared
//! streams (`PARKED` and the DLQ among them): the runtime's tests run a test stage on it.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, consumer::pull, stream};
use ihub::nats::{Bus, provision};
use ihub::runtime::{self, Schedule, Spec, Stage};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DURABLE: &str = "test-stage";

pub struct TestStream {
    pub bus: Bus,
}

impl TestStream {
    /// Under a fresh prefix starting with `letter`; the durable redelivers after `ack_wait`.
    pub async fn new(letter: char, ack_wait: Duration) -> TestStream {
        super::init_logs();
        let prefix = super::unique(letter);
        let bus = Bus::connect(&super::nats_url(), &prefix, "ihub-runtime-test")
            .await
            .unwrap();
        let defs = provision::definitions(&bus.names, None, &[]).unwrap();
        provision::apply(&bus.js, &defs, |_| {}).await.unwrap();
        let stream = bus
            .js
            .create_stream(stream::Config {
                name: bus.names.stream("TEST"),
                subjects: vec![bus.names.subject("test.>")],
                ..Default::default()
            })
            .await
            .unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some(DURABLE.into()),
                filter_subject: bus.names.subject("test.>"),
                ack_wait,
                ..Default::default()
            })
            .await
            .unwrap();
        TestStream { bus }
    }

    /// Retries within milliseconds, `attempts` in all.
    pub fn spec(
        &self,
        attempts: u32,
        concurrency: usize,
        breaker: Option<(u32, Duration)>,
    ) -> Spec {
        Spec {
            durable: DURABLE,
            stream: "TEST",
            schedule: Schedule::Exponential {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
                attempts,
            },
            concurrency,
            breaker,
        }
    }

    /// Binds the durable and starts pulling; returns once messages can flow to `stage`.
    pub async fn pulling<S: Stage>(
        &self,
        spec: Spec,
        stage: Arc<S>,
        stop: &CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        let pulling = runtime::start(self.bus.clone(), spec, stage, stop.clone())
            .await
            .expect("bound");
        tokio::spawn(pulling.into_future())
    }

    /// The durable as the server sees it (deliveries, redeliveries, acks).
    pub async fn info(&self) -> consumer::Info {
        let mut consumer: consumer::PullConsumer = self
            .bus
            .stream("TEST")
            .await
            .unwrap()
            .get_consumer(DURABLE)
            .await
            .unwrap();
        consumer.info().await.unwrap().clone()
    }

    /// (pending, ack pending) of the durable.
    pub async fn backlog(&self) -> (u64, usize) {
        let info = self.info().await;
        (info.num_pending, info.num_ack_pending)
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        // The test's runtime is blocked in this drop: clean up over a connection of our own.
        let prefix = self.bus.names.prefix().to_string();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let bus = Bus::connect(&super::nats_url(), &prefix, "ihub-test-cleanup").await?;
                let _ = bus.js.delete_stream(bus.names.stream("TEST")).await;
                provision::delete_all(&bus.js, &bus.names).await
            })
        })
        .join();
    }
}
