//! Single flight: one run of a piece of work at a time, shared by every caller that asks while
//! it runs.
//!
//! A caller must see the world as it was when it asked, so it cannot join a run that started
//! before it: it waits for the next one. Callers that ask during run *n* are all answered by
//! run *n + 1*: however many ask, at most one run is in flight and one more is queued. The
//! work runs in its own task, so a caller that hangs up cancels nothing (the others still get
//! their answer, and the work is not left half done).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

/// The work ended without an answer (it panicked, or the runner is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

pub struct SingleFlight<T> {
    requests: mpsc::UnboundedSender<oneshot::Sender<T>>,
    queued: Arc<AtomicUsize>,
    runs: Arc<AtomicU64>,
}

impl<T: Clone + Send + 'static> SingleFlight<T> {
    /// Starts the runner (a task that lives as long as this value).
    pub fn new<F, Fut>(work: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (requests, mut incoming) = mpsc::unbounded_channel::<oneshot::Sender<T>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(AtomicU64::new(0));
        let (waiting, started) = (queued.clone(), runs.clone());
        tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                let mut callers = vec![first];
                while let Ok(next) = incoming.try_recv() {
                    callers.push(next);
                }
                waiting.fetch_sub(callers.len(), Ordering::SeqCst);
                started.fetch_add(1, Ordering::SeqCst);
                // Its own task: a panic in the work drops these callers' answers (they see
                // `Lost`) and the next run still happens.
                if let Ok(answer) = tokio::spawn(work()).await {
                    for caller in callers {
                        let _ = caller.send(answer.clone());
                    }
                }
            }
        });
        Self {
            requests,
            queued,
            runs,
        }
    }

    /// The answer of a run that started after this call.
    pub async fn run(&self) -> Result<T, Lost> {
        let (answer, answered) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.requests.send(answer).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Lost);
        }
        answered.await.map_err(|_| Lost)
    }

    /// Callers waiting for a run that has not started yet.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Runs started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn callers_during_a_run_share_the_next_one() {
        // Each run takes a permit: the test lets runs through one at a time.
        let gate = Arc::new(Semaphore::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let flight = {
            let (gate, entered) = (gate.clone(), entered.clone());
            Arc::new(SingleFlight::new(move || {
                let (gate, entered) = (gate.clone(), entered.clone());
                async move {
                    let run = entered.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.acquire().await.expect("gate").forget();
                    run
                }
            }))
        };
        let first = tokio::spawn({
            let flight = flight.clone();
            async move { flight.run().await }
        });
        until("the first run to start", || entered.load(Ordering::SeqCst) == 1).await;
        let others: Vec<_> = (0..19)
            .map(|_| {
                let flight = flight.clone();
                tokio::spawn(async move { flight.run().await })
            })
            .collect();
        until("19 callers queued", || flight.queued() == 19).await;
        gate.add_permits(2);
        assert_eq!(first.await.unwrap(), Ok(1));
        for other in others {
            assert_eq!(other.await.unwrap(), Ok(2));
        }
        assert_eq!(flight.runs(), 2);
        assert_eq!(flight.queued(), 0);
    }

    #[tokio::test]
    async fn a_panicking_run_loses_its_callers_not_the_runner() {
        let calls = Arc::new(AtomicUsize::new(0));
        let flight = {
            let calls = calls.clone();
            SingleFlight::new(move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert!(n > 0, "the first run panics");
                    n
                }
            })
        };
        assert_eq!(flight.run().await, Err(Lost));
        assert_eq!(flight.run().await, Ok(1));
    }
}
