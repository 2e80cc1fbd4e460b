//! `operate-max` (INBOUND, `in.max.>`): MAX's writes and the transaction updates.
//!
//! A write is recorded pending in `max_operations` (a redelivery of one that succeeded or was
//! refused only tells its outcome again; a failed one replayed from the DLQ runs again). Each
//! delivery makes one partner call through its adapter (breaker, audit); a timeout, 5xx or 429
//! goes back to the runtime, which redelivers it after MAX's retry table's pause (2, 4, 8 s).
//! The outcome is recorded with its answer and told to the ingress waiting on
//! `max.outcome.<id>`. A write that failed (the partner kept failing, or the breaker is open)
//! is answered 502/503, dead-lettered with its payload and error (`ihub dlq replay` runs it
//! again), and the supervisor is told.
//!
//! A transaction update deletes the transaction's cached status and its customer's cached
//! histories, then pushes `{"event": "transaction.updated", "conversation_id", "data"}` to
//! the agent of every conversation whose metadata names the transaction.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::integrations::max::adapter::{Adapters, Outcome, Progress, Step};
use crate::integrations::max::cache::Cache;
use crate::integrations::max::config::AdapterConfig;
use crate::integrations::max::messages::{Answer, Write};
use crate::integrations::max::store::{self, Ended};
use crate::integrations::max::subjects;
use crate::idempotency::Record;
use crate::runtime::{Context, Delivery, Failure, Stage, StageResult};

pub struct Operate {
    ctx: Context,
    cfg: AdapterConfig,
    adapters: OnceCell<Arc<Adapters>>,
    cache: OnceCell<Cache>,
}

impl Operate {
    pub fn new(ctx: &Context, cfg: AdapterConfig) -> Self {
        Self {
            cfg,
            ctx: ctx.clone(),
            adapters: OnceCell::new(),
            cache: OnceCell::new(),
        }
    }

    async fn adapters(&self) -> anyhow::Result<&Arc<Adapters>> {
        self.adapters
            .get_or_try_init(|| async {
                let adapters =
                    Adapters::new(self.cfg.clone(), &self.ctx.bus, self.ctx.db.clone(), self.ctx.http.clone()).await?;
                Ok(Arc::new(adapters))
            })
            .await
    }

    async fn cache(&self) -> anyhow::Result<&Cache> {
        self.cache.get_or_try_init(|| Cache::open(&self.ctx.bus)).await
    }

    async fn tell(&self, write: &Write, answer: &Answer) {
        if let Ok(payload) = serde_json::to_vec(answer) {
            self.ctx
                .bus
                .notify(&subjects::outcome(write.operation_id), payload.into())
                .await;
        }
    }

    /// One delivery of a write: one partner call (two after a 401). A failure worth another
    /// try goes back to the runtime, which redelivers it on MAX's retry table; an outcome is
    /// recorded and told.
    async fn write(&self, delivery: &Delivery) -> StageResult {
        let write: Write = delivery.json()?;
        let id = write.operation_id;
        let conversation = write.conversation_id.as_deref();
        let row = store::begin(&self.ctx.db, id, &write.operation, conversation).await?;
        // Ended, and told again to whoever waits; a failed one is here again only because an
        // operator replayed it from the DLQ: it runs again.
        if row.state == "succeeded" || row.state == "refused" {
            let answer = Answer {
                status: row.status_code.and_then(|s| u16::try_from(s).ok()).unwrap_or(502),
                body: row.answer.unwrap_or(Value::Null),
            };
            self.tell(&write, &answer).await;
            return Ok(());
        }
        let adapters = self.adapters().await?;
        let attempt = u32::try_from(delivery.delivered).unwrap_or(u32::MAX);
        let key = id.to_string();
        let mut progress = Progress::default();
        let outcome = loop {
            match adapters
                .step(&write.operation, conversation, Some(&key), attempt, &mut progress)
                .await?
            {
                Step::Ended(outcome) => break outcome,
                Step::Reauthenticate => continue,
                Step::Retry {
                    error, retry_after, ..
                } => return Err(Failure::Retry { error, retry_after }),
            }
        };
        self.end(&write, &outcome).await
    }

    /// Records `outcome` in `max_operations` and the idempotency record, tells the waiting
    /// ingress, and (through the adapters) the metrics and the supervisor. A failure is
    /// permanent: the runtime dead-letters the command.
    async fn end(&self, write: &Write, outcome: &Outcome) -> StageResult {
        let id = write.operation_id;
        let mut answer = Answer::of(outcome, write.operation.adapter());
        if let Value::Object(body) = &mut answer.body {
            body.insert("operation_id".into(), json!(id));
        }
        let (ended, error) = match outcome {
            Outcome::Answered { status, .. } if *status < 300 => (Ended::Succeeded, None),
            Outcome::Answered { .. } => (Ended::Refused, None),
            Outcome::Failed { error, .. } => (Ended::Failed, Some(error.clone())),
        };
        store::end(&self.ctx.db, id, ended, answer.status, &answer.body, error.as_deref()).await?;
        if let Some(key) = &write.idempotency_record {
            let idempotency = &self.ctx.idempotency;
            if ended == Ended::Failed {
                // A retry with the same Idempotency-Key runs it again (the partner commits a
                // key once, whatever we send).
                idempotency.release(key).await?;
            } else if let Some(claimed) = idempotency.get(key).await? {
                let record = Record {
                    status: answer.status,
                    body: answer.body.clone(),
                    done: true,
                    ..claimed
                };
                idempotency.complete(key, &record).await?;
            }
        }
        self.tell(write, &answer).await;
        // Since the write was accepted (its id is a UUIDv7): retries and queueing included.
        let accepted_ms = id
            .get_timestamp()
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                i64::try_from(secs).unwrap_or(0) * 1000 + i64::from(nanos / 1_000_000)
            })
            .unwrap_or_default();
        let took = u64::try_from(chrono::Utc::now().timestamp_millis() - accepted_ms).unwrap_or(0);
        self.adapters()
            .await?
            .ended(&write.operation, outcome, std::time::Duration::from_millis(took))
            .await;
        match error {
            Some(error) => Err(Failure::permanent(error)),
            None => Ok(()),
        }
    }

    async fn transaction_updated(&self, delivery: &Delivery) -> StageResult {
        let update: Value = delivery.json()?;
        let Some(transaction_id) = update["transaction_id"].as_str() else {
            return Err(Failure::permanent("a transaction update without transaction_id"));
        };
        let cache = self.cache().await?;
        let customer = match update["customer_id"].as_str() {
            Some(customer) => Some(customer.to_string()),
            None => {
                let key = crate::integrations::max::keys::cache_key(
                    "get_transaction_status",
                    &[("transaction_id", transaction_id)],
                );
                cache
                    .get(&key)
                    .await?
                    .and_then(|cached| cached["customer_id"].as_str().map(str::to_string))
            }
        };
        cache.invalidate_transaction(transaction_id, customer.as_deref()).await?;
        for (conversation, agent) in store::conversations_about(&self.ctx.db, transaction_id).await? {
            let event = json!({
                "event": "transaction.updated",
                "conversation_id": conversation,
                "data": update,
            });
            self.ctx
                .bus
                .notify(&subjects::push(&agent), event.to_string().into())
                .await;
        }
        Ok(())
    }
}

impl Stage for Operate {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        match delivery.subject() {
            subjects::WRITE => self.write(delivery).await,
            subjects::TRANSACTION_UPDATED => self.transaction_updated(delivery).await,
            other => Err(Failure::permanent(format!("operate-max does not handle {other}"))),
        }
    }

    /// A write out of attempts (or that failed for good) is recorded and told, unless its
    /// failure already was.
    async fn dead_lettered(&self, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        if delivery.subject() != subjects::WRITE {
            return Ok(());
        }
        let Ok(write) = delivery.json::<Write>() else {
            return Ok(());
        };
        let pending = store::find(&self.ctx.db, write.operation_id)
            .await?
            .is_none_or(|row| row.state == "pending");
        if pending {
            let failed = Outcome::Failed {
                error: error.to_string(),
                breaker: None,
            };
            // Its Err is the permanent failure being dead-lettered now.
            if let Err(Failure::Outage { error }) = self.end(&write, &failed).await {
                anyhow::bail!(error);
            }
        }
        Ok(())
    }
}
