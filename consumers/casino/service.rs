//! The wallet service: every consumer process serves `svc.casino.*` (NATS service
//! `ihub-casino-wallet`, queue group `q`) and relays the ledger's outbox to JetStream.
//!
//! Why request/reply and not a JetStream stream with a reply: the provider waits for the
//! answer (its own timeout is a few seconds), so a call must be answered by whichever process
//! takes it, now, or fail fast for the provider to retry; a redelivery seconds later is an
//! answer nobody waits for. Postgres is the commit point, and the answer to an
//! `externalTransactionId` is kept with the entry, so a retry after a lost reply (a process
//! killed mid-call) gets the first answer, or runs the call if nothing was committed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::integrations::casino::config::{PROVIDER_SECRET, ProviderConfig};
use crate::integrations::casino::domain::{BalanceRequest, LaunchRequest, MoneyRequest, RollbackRequest};
use crate::integrations::casino::reply::Reply;
use super::{front, wallet};
use crate::integrations::casino::subjects;
use crate::runtime::service::{Context, Endpoints, Service, Serving};
use crate::signatures::canonical_json;

pub const WALLET: Service = Service {
    name: subjects::SERVICE,
    secrets: &[&PROVIDER_SECRET],
    start,
};

/// The most calls one process runs at once (each holds a Postgres connection while it does).
const IN_FLIGHT: usize = 256;

/// What a request asks.
#[derive(Clone, Copy, Debug)]
enum Op {
    Balance,
    Debit,
    Credit,
    Rollback,
    Launch,
    Simulate,
}

const OPS: [(Op, &str); 6] = [
    (Op::Balance, subjects::BALANCE),
    (Op::Debit, subjects::DEBIT),
    (Op::Credit, subjects::CREDIT),
    (Op::Rollback, subjects::ROLLBACK),
    (Op::Launch, subjects::LAUNCH),
    (Op::Simulate, subjects::SIMULATE),
];

struct Wallet {
    ctx: Context,
    cfg: ProviderConfig,
    /// Wakes the outbox relay after a call booked an entry.
    booked: Notify,
}

fn start(ctx: Context, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<Serving>> {
    Box::pin(async move {
        let cfg = ProviderConfig::from_env(ctx.env())?;
        let endpoints = Endpoints::start(
            &ctx,
            subjects::SERVICE,
            "ihub casino wallet: balance, debit, credit, rollback, launch, simulate",
            &OPS,
        )
        .await?;
        let wallet = Arc::new(Wallet {
            ctx,
            cfg,
            booked: Notify::new(),
        });
        let serving: Serving = Box::pin(async move {
            let answering = wallet.clone();
            let serve = endpoints.serve(IN_FLIGHT, shutdown.clone(), move |op, request| {
                let wallet = answering.clone();
                async move { wallet.answer(op, request).await }
            });
            tokio::join!(serve, relay(wallet, shutdown));
            Ok(())
        });
        Ok(serving)
    })
}

impl Wallet {
    async fn answer(&self, op: Op, request: async_nats::service::Request) {
        let span = tracing::info_span!(
            "casino wallet",
            otel.name = format!("casino {op:?}"),
            otel.kind = "server",
            messaging.system = "nats",
            messaging.destination.name = %request.message.subject,
            messaging.operation.type = "process",
            casino.user_id = tracing::field::Empty,
            casino.external_transaction_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        crate::telemetry::continue_from_nats(&span, request.message.headers.as_ref());
        let reply = async {
            match self.run(op, &request.message.payload).await {
                Ok(reply) => reply,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), ?op, "casino call failed");
                    Reply::error(503, "unavailable", "the wallet could not answer now: retry")
                }
            }
        }
        .instrument(span.clone())
        .await;
        span.record("http.response.status_code", reply.status);
        if let Err(err) = request
            .respond_with_headers(Ok(reply.body.clone()), reply.headers())
            .await
        {
            tracing::warn!(%err, ?op, "could not send the reply");
        }
        if reply.status == 200 && matches!(op, Op::Debit | Op::Credit | Op::Rollback) {
            self.booked.notify_one();
        }
    }

    /// The answer to one call; `Err` is the hub's trouble (Postgres down), not the caller's.
    async fn run(&self, op: Op, payload: &[u8]) -> anyhow::Result<Reply> {
        let db = &self.ctx.db;
        let value: Value = serde_json::from_slice(payload).context("not JSON")?;
        // The ids a log line or a trace is searched by (correlation ids).
        let span = tracing::Span::current();
        match &value["userId"] {
            Value::String(id) => span.record("casino.user_id", id.as_str()),
            other => span.record("casino.user_id", other.to_string().as_str()),
        };
        if let Some(id) = value["externalTransactionId"].as_str() {
            span.record("casino.external_transaction_id", id);
        }
        let fingerprint = crate::idempotency::fingerprint(canonical_json(&value).as_bytes());
        let parse_error = |err: serde_json::Error| Reply::error(422, "invalid_body", err);
        Ok(match op {
            Op::Balance => match serde_json::from_value::<BalanceRequest>(value) {
                Ok(request) => wallet::balance(db, &request).await?,
                Err(err) => parse_error(err),
            },
            Op::Debit | Op::Credit => match serde_json::from_value::<MoneyRequest>(value) {
                Ok(request) => match request.minor() {
                    Ok(amount) => {
                        let kind = if matches!(op, Op::Debit) {
                            wallet::Kind::Debit
                        } else {
                            wallet::Kind::Credit
                        };
                        wallet::money(db, kind, &request, amount, &fingerprint).await?
                    }
                    Err(why) => Reply::error(422, "invalid_amount", why),
                },
                Err(err) => parse_error(err),
            },
            Op::Rollback => match serde_json::from_value::<RollbackRequest>(value) {
                Ok(request) => wallet::rollback(db, &request, &fingerprint).await?,
                Err(err) => parse_error(err),
            },
            Op::Launch | Op::Simulate => match serde_json::from_value::<LaunchRequest>(value) {
                Ok(request) => {
                    let simulate = matches!(op, Op::Simulate);
                    front::run(&self.ctx, &self.cfg, &request, simulate).await?
                }
                Err(err) => parse_error(err),
            },
        })
    }
}

/// The most outbox rows published per pass.
const RELAY_BATCH: i64 = 256;

/// How long the relay waits for a wake-up before it looks again (entries booked by another
/// process wake only that process).
const RELAY_IDLE: Duration = Duration::from_millis(200);

/// Publishes the outbox to JetStream, oldest first: a pass locks up to [`RELAY_BATCH`] rows
/// (`SKIP LOCKED`: several processes share the work), publishes each on its
/// `ledger.casino.<kind>` with `Nats-Msg-Id: casino-ledger-<id>`, and deletes them once every
/// publish is acked, in the same transaction. A crash between publish and delete publishes
/// them again, and the stream drops the repeats (duplicate window 2 min): each entry is seen
/// once.
async fn relay(wallet: Arc<Wallet>, shutdown: CancellationToken) {
    loop {
        let published = match relay_pass(&wallet.ctx).await {
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "casino outbox relay: will retry");
                0
            }
        };
        if published as i64 == RELAY_BATCH {
            continue;
        }
        tokio::select! {
            () = wallet.booked.notified() => {}
            () = tokio::time::sleep(RELAY_IDLE) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One pass of the relay: how many entries it published.
pub async fn relay_pass(ctx: &Context) -> anyhow::Result<usize> {
    let mut tx = ctx.db.begin().await?;
    let rows: Vec<(i64, String, Value)> = sqlx::query_as(
        "SELECT ledger_id, subject, payload FROM casino_outbox
         ORDER BY ledger_id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(RELAY_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut acks = Vec::with_capacity(rows.len());
    for (id, subject, payload) in &rows {
        let msg_id = format!("casino-ledger-{id}");
        let body = serde_json::to_vec(payload)?;
        acks.push(
            ctx.bus
                .start_publish(subject, Some(&msg_id), async_nats::HeaderMap::new(), body.into())
                .await?,
        );
    }
    for ack in acks {
        ack.await.context("JetStream did not store a ledger entry")?;
    }
    let ids: Vec<i64> = rows.iter().map(|(id, _, _)| *id).collect();
    sqlx::query("DELETE FROM casino_outbox WHERE ledger_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len())
}
