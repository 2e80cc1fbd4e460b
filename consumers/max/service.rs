//! The `ihub-max` service, served by every consumer process (queue group `q`): the reads the
//! ingress's cache missed (`svc.max.read`: run through the adapters, the answer cached for its
//! operation's time to live) and conversations (`svc.max.conversation`). A reply is an
//! [`Answer`] (`{status, body}`).

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::integrations::max::adapter::{Adapters, Outcome};
use crate::integrations::max::cache::Cache;
use crate::integrations::max::config::AdapterConfig;
use crate::integrations::max::messages::{Answer, Conversation, Read};
use crate::integrations::max::{store, subjects};
use crate::runtime::service::{Context, Endpoints, Serving};

/// The most requests one process serves at once.
const IN_FLIGHT: usize = 512;

struct Max {
    ctx: Context,
    adapters: Adapters,
    cache: Cache,
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Read,
    Conversation,
}

pub fn start(ctx: Context, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<Serving>> {
    Box::pin(async move {
        let cfg = AdapterConfig::from_env(ctx.env())?;
        let adapters = Adapters::new(cfg, &ctx.bus, ctx.db.clone(), ctx.http.clone()).await?;
        let cache = Cache::open(&ctx.bus).await?;
        let endpoints = Endpoints::start(
            &ctx,
            subjects::SERVICE,
            "ihub MAX adapters: reads that missed the cache, conversations",
            &[(Endpoint::Read, subjects::READ), (Endpoint::Conversation, subjects::CONVERSATION)],
        )
        .await?;
        let max = Arc::new(Max { ctx, adapters, cache });
        let serving: Serving = Box::pin(async move {
            endpoints
                .serve(IN_FLIGHT, shutdown, move |endpoint, request| {
                    let max = max.clone();
                    async move { max.answer(endpoint, request).await }
                })
                .await;
            Ok(())
        });
        Ok(serving)
    })
}

impl Max {
    async fn answer(&self, endpoint: Endpoint, request: async_nats::service::Request) {
        let span = tracing::info_span!(
            "max service",
            otel.name = format!("max {endpoint:?}"),
            otel.kind = "server",
            messaging.system = "nats",
            messaging.destination.name = %request.message.subject,
            messaging.operation.type = "process",
        );
        crate::telemetry::continue_from_nats(&span, request.message.headers.as_ref());
        let answer = async {
            let answered = match endpoint {
                Endpoint::Read => self.read(&request.message.payload).await,
                Endpoint::Conversation => self.conversation(&request.message.payload).await,
            };
            answered.unwrap_or_else(|err| {
                tracing::warn!(error = %self.adapters.redact(&format!("{err:#}")), ?endpoint, "MAX service call failed");
                Answer {
                    status: 503,
                    body: json!({"error": "unavailable", "message": "the hub could not answer now: retry"}),
                }
            })
        }
        .instrument(span)
        .await;
        let payload = serde_json::to_vec(&answer).unwrap_or_default();
        if let Err(err) = request.respond(Ok(payload.into())).await {
            tracing::warn!(%err, ?endpoint, "could not send the reply");
        }
    }

    async fn read(&self, payload: &[u8]) -> anyhow::Result<Answer> {
        let read: Read = serde_json::from_slice(payload).context("a read that does not parse")?;
        let operation = &read.operation;
        let outcome = self.adapters.call(operation, read.conversation_id.as_deref()).await?;
        if let (Outcome::Answered { status: 200..=299, body }, Some((key, ttl))) =
            (&outcome, operation.cached(self.adapters.config().cache_ttl))
        {
            self.cache.put(&key, body, ttl).await?;
        }
        Ok(Answer::of(&outcome, operation.adapter()))
    }

    async fn conversation(&self, payload: &[u8]) -> anyhow::Result<Answer> {
        let conversation: Conversation = serde_json::from_slice(payload).context("a conversation that does not parse")?;
        store::put_conversation(
            &self.ctx.db,
            &conversation.id,
            &conversation.assigned_to,
            &conversation.metadata,
        )
        .await?;
        Ok(Answer {
            status: 200,
            body: json!({
                "conversation_id": conversation.id,
                "assigned_to": conversation.assigned_to,
                "metadata": conversation.metadata,
            }),
        })
    }
}
