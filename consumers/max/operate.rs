//! `operate-max` (INBOUND, `in.max.>`): MAX's writes and the transaction updates.
//!
//! A write is recorded pending in `max_operations` (a redelivery of one that succeeded or was
//! refused only tells its outcome again; a failed one replayed from the DLQ runs again), run
//! through its adapter (retry table, breaker, audit), recorded with
//! its answer, and told to the ingress waiting on `max.outcome.<id>`. A write that failed
//! (the partner kept failing, or the breaker is open) is answered 502/503, dead-lettered with
//! its payload and error (`ihub dlq replay` runs it again), and the supervisor is told.
//!
//! A transaction update deletes the transaction's cached status and its customer's cached
//! histories, then pushes `{"event": "transaction.updated", "conversation_id", "data"}` to
//! the agent of every conversation whose metadata names the transaction.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::integrations::max::adapter::{Adapters, Outcome};
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
    pub fn new(ctx: &Context) -> anyhow::Result<Self> {
        Ok(Self {
            cfg: AdapterConfig::from_env(ctx.env())?,
            ctx: ctx.clone(),
            adapters: OnceCell::new(),
            cache: OnceCell::new(),
        })
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

    async fn write(&self, delivery: &Delivery) -> StageResult {
        let write: Write = delivery.json()?;
        let db = &self.ctx.db;
        let id = write.operation_id;
        let conversation = write.conversation_id.as_deref();
        let row = store::begin(db, id, &write.operation, conversation).await?;
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
        let outcome = adapters
            .call(&write.operation, conversation, Some(&id.to_string()))
            .await?;
        let mut answer = Answer::of(&outcome, write.operation.adapter());
        if let Value::Object(body) = &mut answer.body {
            body.insert("operation_id".into(), json!(id));
        }
        let (ended, error) = match &outcome {
            Outcome::Answered { status, .. } if *status < 300 => (Ended::Succeeded, None),
            Outcome::Answered { .. } => (Ended::Refused, None),
            Outcome::Failed { error, .. } => (Ended::Failed, Some(error.clone())),
        };
        store::end(db, id, ended, answer.status, &answer.body, error.as_deref()).await?;
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
        self.tell(&write, &answer).await;
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
}
