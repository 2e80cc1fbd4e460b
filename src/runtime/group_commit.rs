//! Group commit: what concurrent messages write to Postgres runs in shared transactions.
//!
//! A stage hands its job to [`GroupCommit::submit`] and awaits the outcome; one task per
//! process takes every job waiting at that moment (at most `max_batch`), hands them all to
//! [`Batched::run`] in one transaction (which writes them with as few statements as it can:
//! an `unnest` of arrays is one round trip for the whole batch), commits once and answers
//! each. (More tasks, each with its own
//! batch in flight, measured no faster on 2 cores: the pipeline is CPU-bound, not waiting.) The stage acts on the outcome
//! (publishes, acks) only after that commit, so nothing is acked that is not stored. A batch
//! that fails as a whole (one job's error, a deadlock with another process) runs again one
//! job per transaction, so one bad job never fails the others. At a low rate a batch is one
//! job and nothing waits; under load the commits, and their fsyncs, are shared.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use super::Failure;

/// The work of a batch of jobs, run inside one transaction.
pub trait Batched: Send + Sync + 'static {
    type Job: Send + Sync + 'static;
    type Done: Send + 'static;

    /// The batch is written by one statement, atomic by itself: it runs without `BEGIN` and
    /// `COMMIT` (two round trips fewer per batch).
    const ONE_STATEMENT: bool = false;

    /// Runs `jobs` (in arrival order) and answers one outcome per job, in the same order.
    fn run<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        jobs: &'a [&'a Self::Job],
    ) -> BoxFuture<'a, Result<Vec<Self::Done>, Failure>>;
}

type Reply<B> = oneshot::Sender<Result<<B as Batched>::Done, Failure>>;

pub struct GroupCommit<B: Batched> {
    jobs: mpsc::Sender<(B::Job, Reply<B>)>,
}

impl<B: Batched> GroupCommit<B> {
    /// Starts the batching task (it ends when this is dropped).
    pub fn start(db: PgPool, batched: Arc<B>, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (jobs, queue) = mpsc::channel(max_batch * 4);
        tokio::spawn(run_batches(db, batched, queue, max_batch));
        Self { jobs }
    }

    /// Runs `job` in the next batch; resolves once its transaction committed (or failed).
    pub async fn submit(&self, job: B::Job) -> Result<B::Done, Failure> {
        let stopped = || Failure::outage("the group-commit task has stopped");
        let (reply, outcome) = oneshot::channel();
        self.jobs.send((job, reply)).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run_batches<B: Batched>(
    db: PgPool,
    batched: Arc<B>,
    mut queue: mpsc::Receiver<(B::Job, Reply<B>)>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match together(&db, batched.as_ref(), &jobs).await {
            Ok(outcomes) => {
                for ((_, reply), done) in jobs.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(err) => {
                if jobs.len() > 1 {
                    tracing::debug!(%err, jobs = jobs.len(), "batch failed: one job per transaction");
                }
                for (job, reply) in jobs {
                    let _ = reply.send(alone(&db, batched.as_ref(), &job).await);
                }
            }
        }
    }
}

/// Every job in one transaction; any error abandons them all.
async fn together<B: Batched>(
    db: &PgPool,
    batched: &B,
    jobs: &[(B::Job, Reply<B>)],
) -> Result<Vec<B::Done>, Failure> {
    let jobs: Vec<&B::Job> = jobs.iter().map(|(job, _)| job).collect();
    let outcomes = in_transaction(db, batched, &jobs).await?;
    if outcomes.len() != jobs.len() {
        return Err(Failure::permanent(format!(
            "a batch of {} jobs answered {} outcomes",
            jobs.len(),
            outcomes.len()
        )));
    }
    Ok(outcomes)
}

async fn alone<B: Batched>(db: &PgPool, batched: &B, job: &B::Job) -> Result<B::Done, Failure> {
    let done = in_transaction(db, batched, &[job]).await?.pop();
    done.ok_or_else(|| Failure::permanent("a batch of one job answered nothing"))
}

/// Runs `jobs` and commits (a [`Batched::ONE_STATEMENT`] batch commits by itself).
async fn in_transaction<B: Batched>(
    db: &PgPool,
    batched: &B,
    jobs: &[&B::Job],
) -> Result<Vec<B::Done>, Failure> {
    if B::ONE_STATEMENT {
        let mut conn = db.acquire().await?;
        return batched.run(&mut conn, jobs).await;
    }
    let mut tx = db.begin().await?;
    let outcomes = batched.run(&mut tx, jobs).await?;
    tx.commit().await?;
    Ok(outcomes)
}
