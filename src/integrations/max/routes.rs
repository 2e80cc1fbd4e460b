//! The hub's API for MAX (bearer `MAX_API_TOKEN`), the transaction webhook and the agents'
//! WebSocket. The ingress writes nothing but NATS:
//!
//! * reads answer from the `cache` KV bucket (`X-Cache: hit`), else ask the `ihub-max`
//!   service, which runs the adapters and caches the answer (`X-Cache: miss`);
//!   `Cache-Control: no-cache` skips the lookup;
//! * writes are published to `in.max.write` and answered with the partner's answer when it
//!   comes within `MAX_SYNC_WAIT_MS`, else 202 with the operation id to poll
//!   (`GET /max/operations/{id}`). A commit needs `Idempotency-Key`: a repeat answers what the
//!   first got (or waits for it), another draft under the same key is 409, and the partner
//!   is sent the same key, so a draft is never committed twice;
//! * `X-Conversation-Id`, when sent, is carried into the audit log and the logs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::cache::Cache;
use super::config::{IngressConfig, MAX_API_TOKEN};
use super::messages::{Answer, Conversation, Read, Write};
use super::operations::{Adapter, Operation};
use super::{schemas, store, subjects};
use crate::idempotency::{self, Idempotency, Record};
use crate::ingress::{self, ApiError, Context, Parent};
use crate::money::{Currency, parse_major};
use crate::runtime::shared_breaker::SharedBreaker;
use crate::signatures::verify_body_signature;

pub const SIGNATURE_HEADER: &str = "x-max-signature";
pub const CONVERSATION_HEADER: &str = "x-conversation-id";

pub struct Max {
    hub: Context,
    cfg: IngressConfig,
    cache: Cache,
    breakers: kv::Store,
}

pub type MaxState = Arc<Max>;

impl Max {
    pub async fn new(hub: &Context) -> anyhow::Result<MaxState> {
        Ok(Arc::new(Self {
            cfg: IngressConfig::from_env(hub.env())?,
            cache: Cache::open(&hub.bus).await?,
            breakers: hub.bus.kv(SharedBreaker::BUCKET).await?,
            hub: hub.clone(),
        }))
    }
}

pub fn router() -> Router<MaxState> {
    Router::new()
        .route("/max/tickets", post(create_ticket))
        .route("/max/tickets/{id}", get(ticket_status))
        .route("/max/tickets/{id}/comments", post(add_comment))
        .route("/max/transactions/{id}", get(transaction_status))
        .route("/max/customers/{id}/transactions", get(transaction_history))
        .route("/max/transactions/drafts", post(create_draft))
        .route("/max/transactions/drafts/{id}/commit", post(commit))
        .route("/max/transactions/drafts/{id}/cancel", post(cancel))
        .route("/max/operations/{id}", get(operation))
        .route("/max/conversations/{id}", put(conversation))
        .route("/max/health", get(health))
        .route("/max/ws", get(websocket))
        .route("/webhooks/transaction_updated", post(transaction_updated))
}

/// An id MAX puts in a path or a header: 1 to 128 of `[A-Za-z0-9._:@+~-]`, starting with a
/// letter or digit.
fn checked_id<'a>(value: &'a str, what: &str) -> Result<&'a str, ApiError> {
    let fine = (1..=128).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@+~-".contains(c));
    if fine {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "invalid_id",
            format!("{what} must be 1 to 128 of A-Z a-z 0-9 . _ : @ + ~ - (starting with a letter or digit)"),
        ))
    }
}

fn conversation_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    ingress::header(headers, CONVERSATION_HEADER)
        .map(|id| checked_id(id, CONVERSATION_HEADER).map(str::to_string))
        .transpose()
}

/// Checks the bearer, then runs `work` inside the request's span.
async fn served(
    app: &Max,
    span: tracing::Span,
    headers: &HeaderMap,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    ingress::respond(span, Parent::Caller(headers), async {
        ingress::bearer(headers, &app.cfg.api_token, MAX_API_TOKEN.name)?;
        work.await
    })
    .await
}

fn answered(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, Json(answer.body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// One request to the `ihub-max` service, waiting at most `wait`.
async fn ask(app: &Max, subject: &str, payload: &impl serde::Serialize, wait: Duration) -> Result<Answer, ApiError> {
    let payload = serde_json::to_vec(payload).map_err(|err| ApiError::internal(err.into()))?;
    let message = app
        .hub
        .bus
        .request(subject, payload.into(), wait)
        .await
        .map_err(|err| ingress::unanswered(err, "the MAX adapters", wait, "retry (MAX_READ_TIMEOUT_MS)"))?;
    serde_json::from_slice(&message.payload)
        .map_err(|err| ApiError::internal(anyhow::anyhow!("the service's reply does not parse: {err}")))
}

/// A read: from the cache, else through the service.
async fn read(app: &Max, headers: &HeaderMap, operation: Operation) -> Result<Response, ApiError> {
    let (key, _) = operation.cached(None).expect("reads are cached");
    let fresh = ingress::header(headers, "cache-control").is_some_and(|v| v.contains("no-cache"));
    if !fresh
        && let Some(body) = app.cache.get(&key).await.map_err(ApiError::unavailable)?
    {
        crate::metrics::cache_lookup(operation.name(), true);
        let mut response = (StatusCode::OK, Json(body)).into_response();
        response.headers_mut().insert("x-cache", HeaderValue::from_static("hit"));
        return Ok(response);
    }
    crate::metrics::cache_lookup(operation.name(), false);
    let read = Read {
        operation,
        conversation_id: conversation_id(headers)?,
    };
    let mut response = answered(ask(app, subjects::READ, &read, app.cfg.read_timeout).await?);
    response.headers_mut().insert("x-cache", HeaderValue::from_static("miss"));
    Ok(response)
}

fn pending_body(id: Uuid) -> Value {
    json!({"operation_id": id, "state": "pending", "href": format!("/max/operations/{id}")})
}

fn pending(id: Uuid) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(pending_body(id))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/max/operations/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn operation_key(id: Uuid) -> String {
    Idempotency::key("max-op", &id.to_string())
}

/// A write: published as a command, answered with its outcome when it comes in time.
async fn write(
    app: &Max,
    headers: &HeaderMap,
    operation: Operation,
    idempotency: Option<(String, String)>,
) -> Result<Response, ApiError> {
    let conversation_id = conversation_id(headers)?;
    let kv = &app.hub.idempotency;
    let mut operation_id = Uuid::now_v7();
    let record = |fingerprint: String, id: Uuid| Record {
        fingerprint,
        resource_id: id.to_string(),
        status: StatusCode::ACCEPTED.as_u16(),
        body: pending_body(id),
        done: false,
    };
    let mut idempotency_record = None;
    if let Some((key, fingerprint)) = idempotency {
        let claimed = ingress::claim(kv, &key, &record(fingerprint, operation_id), || {
            ApiError::conflict(
                "idempotency_conflict",
                "this Idempotency-Key already committed another draft",
            )
        })
        .await?;
        match claimed {
            None => {}
            Some(stored) if stored.done => return Ok(ingress::replayed(stored)),
            Some(stored) => {
                operation_id = stored.resource_id.parse().map_err(|_| {
                    ApiError::internal(anyhow::anyhow!("idempotency record holds no operation id"))
                })?;
            }
        }
        idempotency_record = Some(key);
    }
    // Known as pending from now on (`GET /max/operations/{id}`), even before a consumer takes it.
    kv.claim(&operation_key(operation_id), &record(String::new(), operation_id))
        .await
        .map_err(ApiError::unavailable)?;
    tracing::Span::current().record("operation_id", tracing::field::display(operation_id));

    // Listen before publishing, so the outcome cannot slip past.
    let bus = &app.hub.bus;
    let mut outcome = bus
        .client
        .subscribe(bus.names.subject(&subjects::outcome(operation_id)))
        .await
        .map_err(|err| ApiError::unavailable(err.into()))?;
    let command = Write {
        operation_id,
        operation,
        conversation_id,
        idempotency_record: idempotency_record.clone(),
    };
    bus.publish_json(
        subjects::WRITE,
        Some(&operation_id.to_string()),
        async_nats::HeaderMap::new(),
        &command,
    )
    .await
    .map_err(ApiError::unavailable)?;

    if let Ok(Some(message)) = tokio::time::timeout(app.cfg.sync_wait, outcome.next()).await
        && let Ok(answer) = serde_json::from_slice::<Answer>(&message.payload)
    {
        return Ok(answered(answer));
    }
    // It may have ended before we listened (a repeat of an older commit).
    if let Some(key) = idempotency_record
        && let Ok(Some(latest)) = kv.get(&key).await
        && latest.done
    {
        return Ok(ingress::replayed(latest));
    }
    Ok(pending(operation_id))
}

/// The body as JSON that matches `schema`.
fn body_of(body: &[u8], schema: &crate::schemas::Schema) -> Result<Value, ApiError> {
    let value = ingress::json_body(body)?;
    ingress::check_schema(schema, &value)?;
    Ok(value)
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_string()
}

async fn create_ticket(State(app): State<MaxState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("POST", "/max/tickets", operation_id);
    served(&app, span, &headers, async {
        let value = body_of(&body, &schemas::TICKET)?;
        let operation = Operation::CreateTicket {
            customer_id: text(&value, "customer_id"),
            subject: text(&value, "subject"),
            description: text(&value, "description"),
            priority: value["priority"].as_str().unwrap_or("normal").to_string(),
        };
        write(&app, &headers, operation, None).await
    })
    .await
}

async fn ticket_status(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("GET", "/max/tickets/{id}");
    served(&app, span, &headers, async {
        let ticket_id = checked_id(&id, "the ticket id")?.to_string();
        read(&app, &headers, Operation::GetTicketStatus { ticket_id }).await
    })
    .await
}

async fn add_comment(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("POST", "/max/tickets/{id}/comments", operation_id);
    served(&app, span, &headers, async {
        let ticket_id = checked_id(&id, "the ticket id")?.to_string();
        let value = body_of(&body, &schemas::COMMENT)?;
        let operation = Operation::AddComment {
            ticket_id,
            comment: text(&value, "comment"),
            is_public: value["is_public"].as_bool().unwrap_or(true),
        };
        write(&app, &headers, operation, None).await
    })
    .await
}

async fn transaction_status(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("GET", "/max/transactions/{id}");
    served(&app, span, &headers, async {
        let transaction_id = checked_id(&id, "the transaction id")?.to_string();
        read(&app, &headers, Operation::GetTransactionStatus { transaction_id }).await
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<u32>,
}

async fn transaction_history(
    State(app): State<MaxState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let span = crate::server_span!("GET", "/max/customers/{id}/transactions");
    served(&app, span, &headers, async {
        let customer_id = checked_id(&id, "the customer id")?.to_string();
        let limit = ingress::query(query)?.limit.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request("invalid_query", "limit: 1 to 100"));
        }
        read(&app, &headers, Operation::GetTransactionHistory { customer_id, limit }).await
    })
    .await
}

async fn create_draft(State(app): State<MaxState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("POST", "/max/transactions/drafts", operation_id);
    served(&app, span, &headers, async {
        let value = body_of(&body, &schemas::DRAFT)?;
        let currency = Currency::parse(value["currency"].as_str().unwrap_or("USD"))
            .map_err(|err| ApiError::unprocessable("invalid_currency", err.to_string()))?;
        let amount_minor = parse_major(&text(&value, "amount"), currency)
            .map_err(|err| ApiError::unprocessable("invalid_amount", err.to_string()))?;
        let operation = Operation::CreateDraftTransaction {
            customer_id: text(&value, "customer_id"),
            amount_minor,
            currency,
            description: text(&value, "description"),
            metadata: value.get("metadata").cloned().unwrap_or_else(|| json!({})),
        };
        write(&app, &headers, operation, None).await
    })
    .await
}

async fn commit(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("POST", "/max/transactions/drafts/{id}/commit", operation_id);
    served(&app, span, &headers, async {
        let draft_id = checked_id(&id, "the draft id")?.to_string();
        let key = ingress::header(&headers, "idempotency-key").ok_or_else(|| {
            ApiError::bad_request("missing_idempotency_key", "the Idempotency-Key header is required")
        })?;
        idempotency::validate_key(key).map_err(|msg| ApiError::bad_request("invalid_idempotency_key", msg))?;
        let record = (
            Idempotency::key("max-commit", key),
            idempotency::fingerprint(draft_id.as_bytes()),
        );
        let operation = Operation::CommitTransaction {
            draft_id,
            idempotency_key: key.to_string(),
        };
        write(&app, &headers, operation, Some(record)).await
    })
    .await
}

async fn cancel(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("POST", "/max/transactions/drafts/{id}/cancel", operation_id);
    served(&app, span, &headers, async {
        let draft_id = checked_id(&id, "the draft id")?.to_string();
        write(&app, &headers, Operation::CancelDraft { draft_id }, None).await
    })
    .await
}

/// `GET /max/operations/{id}`: a write's state and, once it ended, its answer.
async fn operation(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("GET", "/max/operations/{id}");
    served(&app, span, &headers, async {
        let id: Uuid = id
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_id", "an operation id is a UUID"))?;
        if let Some(row) = store::find(&app.hub.db, id).await.map_err(ApiError::database)? {
            return Ok(Json(json!({
                "operation_id": id,
                "state": row.state,
                "status": row.status_code,
                "answer": row.answer,
            }))
            .into_response());
        }
        match app.hub.idempotency.get(&operation_key(id)).await.map_err(ApiError::unavailable)? {
            Some(_) => Ok(Json(pending_body(id)).into_response()),
            None => Err(ApiError::not_found(format!("no operation {id}"))),
        }
    })
    .await
}

async fn conversation(State(app): State<MaxState>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("PUT", "/max/conversations/{id}");
    served(&app, span, &headers, async {
        let id = checked_id(&id, "the conversation id")?.to_string();
        let value = body_of(&body, &schemas::CONVERSATION)?;
        let conversation = Conversation {
            id,
            assigned_to: text(&value, "assigned_to"),
            metadata: value.get("metadata").cloned().unwrap_or_else(|| json!({})),
        };
        Ok(answered(ask(&app, subjects::CONVERSATION, &conversation, app.cfg.read_timeout).await?))
    })
    .await
}

/// `GET /max/health`: each adapter's breaker, as every process shares it.
async fn health(State(app): State<MaxState>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("GET", "/max/health");
    served(&app, span, &headers, async {
        let mut adapters = serde_json::Map::new();
        for adapter in Adapter::ALL {
            let state = SharedBreaker::state_of(&app.breakers, &adapter.breaker_key())
                .await
                .map_err(ApiError::unavailable)?;
            crate::metrics::breaker_state(adapter.name(), state.gauge());
            adapters.insert(adapter.name().into(), json!({"breaker": state.as_str()}));
        }
        Ok(Json(json!({"adapters": adapters})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentQuery {
    agent: String,
}

/// `GET /max/ws?agent=`: a WebSocket on which the agent gets `transaction.updated` events
/// for their conversations. The first frame, `{"event": "subscribed"}`, says it is listening.
async fn websocket(
    State(app): State<MaxState>,
    headers: HeaderMap,
    query: Result<Query<AgentQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/max/ws");
    served(&app, span, &headers, async {
        let agent = ingress::query(query)?.agent;
        if agent.is_empty() || agent.len() > 254 || agent.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid_query", "agent: 1 to 254 printable characters"));
        }
        let upgrade = upgrade.map_err(|err| {
            ApiError::new(StatusCode::UPGRADE_REQUIRED, "websocket_required", err.body_text())
        })?;
        let bus = &app.hub.bus;
        let events = bus
            .client
            .subscribe(bus.names.subject(&subjects::push(&agent)))
            .await
            .map_err(|err| ApiError::unavailable(err.into()))?;
        bus.client.flush().await.map_err(|err| ApiError::unavailable(err.into()))?;
        Ok(upgrade.on_upgrade(move |socket| pump(socket, events, agent)))
    })
    .await
}

async fn pump(mut socket: WebSocket, mut events: async_nats::Subscriber, agent: String) {
    let hello = json!({"event": "subscribed", "agent": agent}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                let text = String::from_utf8_lossy(&event.payload).into_owned();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = events.unsubscribe().await;
}

/// `POST /webhooks/transaction_updated` (signed `X-MAX-Signature`): accepted for the
/// `operate-max` consumer, which invalidates the cache and pushes to the agents.
async fn transaction_updated(State(app): State<MaxState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::server_span!("POST", "/webhooks/transaction_updated");
    ingress::respond(span, Parent::Caller(&headers), async {
        let signature = ingress::header(&headers, SIGNATURE_HEADER).ok_or_else(|| {
            ApiError::unauthorized("send X-MAX-Signature: hex HMAC-SHA256(MAX_WEBHOOK_SECRET, body)")
        })?;
        if !verify_body_signature(&app.cfg.webhook_secret, signature, &body) {
            return Err(ApiError::unauthorized("X-MAX-Signature does not match the body"));
        }
        let value = body_of(&body, &schemas::TRANSACTION_UPDATED)?;
        checked_id(&text(&value, "transaction_id"), "transaction_id")?;
        let msg_id = format!("txn-updated:{}", idempotency::fingerprint(&body));
        app.hub
            .bus
            .publish_json(subjects::TRANSACTION_UPDATED, Some(&msg_id), async_nats::HeaderMap::new(), &value)
            .await
            .map_err(ApiError::unavailable)?;
        Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response())
    })
    .await
}
