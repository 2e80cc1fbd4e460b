//! The hub's API for MAX, through the adapters to the partner mocks: every operation, the
//! cache and its invalidation, the WebSocket push, the retry table, the shared breaker, dead
//! letters and the supervisor, the audit log, and no secret anywhere.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use ihub::config::Secret;
use ihub::integrations::max::mocks::sales::SalesMock;
use ihub::integrations::max::mocks::supervisor::SupervisorMock;
use ihub::integrations::max::mocks::ticketing::TicketingMock;
use ihub::integrations::max::mocks::transactions::TransactionsMock;
use ihub::runtime::shared_breaker::{Permit, SharedBreaker, State};
use ihub::signatures::body_signature;

use crate::max::{
    API_KEY, CLIENT_SECRET, MAX_TOKEN, SALES_HMAC, SALES_SECRET, SUPERVISOR_SECRET, WEBHOOK_SECRET,
    options,
};
use crate::support::process::Ihub;
use crate::support::{Hub, Options, eventually};

/// What MAX gets back: status, `X-Cache`, body.
struct Answer {
    status: u16,
    cache: Option<String>,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string());
    Answer {
        status,
        cache,
        body: response.json().await.unwrap_or(Value::Null),
    }
}

async fn get(hub: &Hub, path: &str) -> Answer {
    let response = hub
        .http
        .get(format!("{}{path}", hub.url))
        .bearer_auth(MAX_TOKEN)
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// A read that skips the cache (`Cache-Control: no-cache`).
async fn fresh(hub: &Hub, path: &str) -> Answer {
    let response = hub
        .http
        .get(format!("{}{path}", hub.url))
        .bearer_auth(MAX_TOKEN)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn post(hub: &Hub, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
    let mut request = hub
        .http
        .post(format!("{}{path}", hub.url))
        .bearer_auth(MAX_TOKEN)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.unwrap()).await
}

async fn webhook(hub: &Hub, body: &Value, secret: &str) -> u16 {
    let raw = body.to_string();
    hub.http
        .post(format!("{}/webhooks/transaction_updated", hub.url))
        .header("content-type", "application/json")
        .header(
            "x-max-signature",
            body_signature(&Secret::new(secret), raw.as_bytes()),
        )
        .body(raw)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `(attempt, status_code)` of each `integration_log` row of `operation`, in order.
async fn audit(hub: &Hub, operation: &str) -> Vec<(i32, Option<i32>)> {
    sqlx::query_as(
        "SELECT attempt, status_code FROM integration_log WHERE operation = $1 ORDER BY id",
    )
    .bind(operation)
    .fetch_all(&hub.db)
    .await
    .unwrap()
}

async fn breaker_of(hub: &Hub, adapter: &str) -> String {
    let health = get(hub, "/max/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    health.body["adapters"][adapter]["breaker"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn every_operation_answers_through_its_adapter() {
    let hub = Hub::start(options()).await;

    let refused = hub
        .http
        .get(format!("{}/max/transactions/TXN-1", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "MAX_API_TOKEN is required");

    let ticket = post(
        &hub,
        "/max/tickets",
        json!({"customer_id": "CUST-1", "subject": "Refund", "description": "charged twice", "priority": "high"}),
        &[("x-conversation-id", "conv-1")],
    )
    .await;
    assert_eq!(ticket.status, 201, "{}", ticket.body);
    let ticket_id = ticket.body["ticket_id"].as_str().unwrap().to_string();
    assert_eq!(ticket.body["status"], "open");
    assert!(ticket.body["url"].as_str().unwrap().ends_with(&ticket_id));
    let filed = hub.mock::<TicketingMock>().ticket(&ticket_id);
    assert_eq!(filed.map(|(status, _)| status).as_deref(), Some("open"));

    let status = get(&hub, &format!("/max/tickets/{ticket_id}")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["ticket_id"], ticket_id.as_str());
    assert_eq!(status.body["status"], "open");
    assert!(status.body.get("last_updated").is_some() && status.body.get("assigned_to").is_some());

    let comment = post(
        &hub,
        &format!("/max/tickets/{ticket_id}/comments"),
        json!({"comment": "We refunded you", "is_public": true}),
        &[],
    )
    .await;
    assert_eq!(comment.status, 201, "{}", comment.body);
    assert!(comment.body["comment_id"].is_string());
    let missing = post(
        &hub,
        "/max/tickets/TICKET-999/comments",
        json!({"comment": "x"}),
        &[],
    )
    .await;
    assert_eq!(
        missing.status, 404,
        "the partner's refusal: {}",
        missing.body
    );
    assert_eq!(missing.body["adapter"], "ticketing");

    let txn = get(&hub, "/max/transactions/TXN-1").await;
    assert_eq!(txn.status, 200, "{}", txn.body);
    assert_eq!(txn.body["transaction_id"], "TXN-1");
    assert!(
        txn.body["amount"].is_string(),
        "amounts are decimal strings: {}",
        txn.body
    );
    let history = get(&hub, "/max/customers/CUST-1/transactions?limit=3").await;
    assert_eq!(history.status, 200, "{}", history.body);
    let listed = history.body["transactions"].as_array().unwrap();
    assert!(!listed.is_empty() && listed.len() <= 3, "{}", history.body);
    assert!(listed.iter().all(|t| t["customer_id"] == "CUST-1"));
    assert_eq!(
        get(&hub, "/max/customers/CUST-1/transactions?limit=0")
            .await
            .status,
        400
    );
    assert_eq!(
        get(&hub, "/max/customers/CUST-1/transactions?limit=abc")
            .await
            .status,
        400
    );

    let draft = post(
        &hub,
        "/max/transactions/drafts",
        json!({"customer_id": "CUST-2", "amount": "12.50", "currency": "EUR", "description": "upgrade", "metadata": {"plan": "gold"}}),
        &[],
    )
    .await;
    assert_eq!(draft.status, 201, "{}", draft.body);
    assert_eq!(draft.body["amount"], "12.50");
    assert_eq!(draft.body["currency"], "EUR");
    let draft_id = draft.body["draft_id"].as_str().unwrap().to_string();
    let floats = post(
        &hub,
        "/max/transactions/drafts",
        json!({"customer_id": "CUST-2", "amount": 12.5, "description": "upgrade"}),
        &[],
    )
    .await;
    assert_eq!(
        floats.status, 422,
        "an amount is a decimal string: {}",
        floats.body
    );
    let yen = post(
        &hub,
        "/max/transactions/drafts",
        json!({"customer_id": "CUST-2", "amount": "1.5", "currency": "JPY", "description": "x"}),
        &[],
    )
    .await;
    assert_eq!(yen.status, 422, "JPY has no minor unit: {}", yen.body);
    assert_eq!(yen.body["error"], "invalid_amount");

    let cancelled = post(
        &hub,
        &format!("/max/transactions/drafts/{draft_id}/cancel"),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");

    // Each write is an operation MAX can look up.
    let id = cancelled.body["operation_id"].as_str().unwrap();
    let looked = get(&hub, &format!("/max/operations/{id}")).await;
    assert_eq!(looked.status, 200);
    assert_eq!(looked.body["state"], "succeeded");
    assert_eq!(looked.body["answer"]["status"], "cancelled");
    let unknown = get(&hub, &format!("/max/operations/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"], "not_found");

    // The conversation id reaches the audit log.
    let (conversation,): (Option<String>,) = sqlx::query_as(
        "SELECT conversation_id FROM integration_log WHERE operation = 'create_ticket'",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(conversation.as_deref(), Some("conv-1"));
    hub.stop().await;
}

#[tokio::test]
async fn a_commit_runs_once_per_idempotency_key() {
    let hub = Hub::start(options()).await;
    let draft = |amount: &'static str| {
        post(
            &hub,
            "/max/transactions/drafts",
            json!({"customer_id": "CUST-3", "amount": amount, "description": "renewal"}),
            &[],
        )
    };
    let first = draft("40.00").await.body["draft_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = draft("41.00").await.body["draft_id"]
        .as_str()
        .unwrap()
        .to_string();
    let commit = |draft: String, key: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let hub = &hub;
        async move {
            post(
                hub,
                &format!("/max/transactions/drafts/{draft}/commit"),
                json!({}),
                &headers,
            )
            .await
        }
    };

    let missing = commit(first.clone(), None).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], "missing_idempotency_key");

    // Three at once with one key: one commit, one answer.
    let (a, b, c) = tokio::join!(
        commit(first.clone(), Some("commit-key-1")),
        commit(first.clone(), Some("commit-key-1")),
        commit(first.clone(), Some("commit-key-1")),
    );
    for answered in [&a, &b, &c] {
        assert_eq!(answered.status, 200, "{}", answered.body);
        assert_eq!(answered.body["transaction_id"], a.body["transaction_id"]);
    }
    assert_eq!(a.body["amount"], "40.00");
    let again = commit(first.clone(), Some("commit-key-1")).await;
    assert_eq!(again.body["transaction_id"], a.body["transaction_id"]);
    assert_eq!(hub.mock::<SalesMock>().commits(), 1);

    let conflict = commit(second.clone(), Some("commit-key-1")).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["error"], "idempotency_conflict");
    // Another key for a committed draft: the partner refuses, the hub says so.
    let twice = commit(first.clone(), Some("commit-key-2")).await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert_eq!(twice.body["error"], "already_committed");
    assert_eq!(hub.mock::<SalesMock>().commits(), 1);

    // The committed transaction is known to the status system, through the hub.
    let txn = a.body["transaction_id"].as_str().unwrap();
    let status = get(&hub, &format!("/max/transactions/{txn}")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["amount"], "40.00");
    hub.stop().await;
}

#[tokio::test]
async fn reads_are_cached_until_a_signed_webhook_invalidates_them() {
    let hub = Hub::start(options()).await;
    let txns = hub.mock::<TransactionsMock>();

    let first = get(&hub, "/max/transactions/TXN-2").await;
    assert_eq!((first.status, first.cache.as_deref()), (200, Some("miss")));
    let customer = first.body["customer_id"].as_str().unwrap().to_string();
    let history_path = format!("/max/customers/{customer}/transactions?limit=5");
    assert_eq!(
        get(&hub, &history_path).await.cache.as_deref(),
        Some("miss")
    );
    let seen = txns.faults.requests();
    let second = get(&hub, "/max/transactions/TXN-2").await;
    assert_eq!(second.cache.as_deref(), Some("hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(get(&hub, &history_path).await.cache.as_deref(), Some("hit"));
    assert_eq!(txns.faults.requests(), seen, "hits never reach the partner");

    // The partner's transaction changes: the cache still says what it said...
    hub.http
        .post(format!("{}/_mock/transactions/TXN-2", txns.url))
        .json(&json!({"status": "refunded"}))
        .send()
        .await
        .unwrap();
    assert_ne!(
        get(&hub, "/max/transactions/TXN-2").await.body["status"],
        "refunded"
    );

    // ...until the platform says so, signed.
    let update = json!({"transaction_id": "TXN-2", "status": "refunded"});
    assert_eq!(webhook(&hub, &update, "wrong-secret").await, 401);
    assert_eq!(
        get(&hub, "/max/transactions/TXN-2").await.cache.as_deref(),
        Some("hit")
    );
    assert_eq!(webhook(&hub, &update, WEBHOOK_SECRET).await, 202);
    let fresh = eventually(
        "the update invalidates the entry",
        Duration::from_secs(10),
        || async {
            let read = get(&hub, "/max/transactions/TXN-2").await;
            (read.cache.as_deref() == Some("miss")).then_some(read)
        },
    )
    .await;
    assert_eq!(fresh.body["status"], "refunded");
    // The customer's histories went with it (the webhook named no customer: the cached
    // status did).
    assert_eq!(
        get(&hub, &history_path).await.cache.as_deref(),
        Some("miss")
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_cached_answer_expires() {
    let hub = Hub::start(options().with(vec![("MAX_CACHE_TTL_MS", "300".into())])).await;
    assert_eq!(
        get(&hub, "/max/transactions/TXN-5").await.cache.as_deref(),
        Some("miss")
    );
    eventually("the entry goes stale", Duration::from_secs(10), || async {
        (get(&hub, "/max/transactions/TXN-5").await.cache.as_deref() == Some("miss")).then_some(())
    })
    .await;
    hub.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn agent_socket(hub: &Hub, agent: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/max/ws?agent={agent}",
        hub.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {MAX_TOKEN}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = next_event(&mut socket).await;
    assert_eq!(hello["event"], "subscribed");
    socket
}

async fn next_event(socket: &mut Socket) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    return serde_json::from_str::<Value>(&text).unwrap();
                }
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await;
    frame.expect("an event within 10 s")
}

#[tokio::test]
async fn a_transaction_update_is_pushed_to_the_agents_of_its_conversations() {
    let hub = Hub::start(options()).await;
    let register = |id: &'static str, agent: &'static str, txn: &'static str| {
        let hub = &hub;
        async move {
            let response = hub
                .http
                .put(format!("{}/max/conversations/{id}", hub.url))
                .bearer_auth(MAX_TOKEN)
                .json(&json!({"assigned_to": agent, "metadata": {"transaction_id": txn}}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    register("conv-a", "alice@example.com", "TXN-3").await;
    register("conv-b", "bob@example.com", "TXN-4").await;
    register("conv-c", "alice@example.com", "TXN-6").await;

    let unauthorized = hub
        .http
        .get(format!("{}/max/ws?agent=alice", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    let mut alice = agent_socket(&hub, "alice@example.com").await;
    let mut bob = agent_socket(&hub, "bob@example.com").await;
    let update = json!({"transaction_id": "TXN-3", "status": "refunded", "customer_id": "CUST-1"});
    assert_eq!(webhook(&hub, &update, WEBHOOK_SECRET).await, 202);
    let pushed = next_event(&mut alice).await;
    assert_eq!(pushed["event"], "transaction.updated");
    assert_eq!(pushed["conversation_id"], "conv-a");
    assert_eq!(pushed["data"], update);

    // Bob's conversation is about another transaction: his first event is his own.
    let other = json!({"transaction_id": "TXN-4", "status": "failed"});
    assert_eq!(webhook(&hub, &other, WEBHOOK_SECRET).await, 202);
    let pushed = next_event(&mut bob).await;
    assert_eq!(pushed["conversation_id"], "conv-b");
    assert_eq!(pushed["data"]["transaction_id"], "TXN-4");
    alice.close(None).await.unwrap();
    bob.close(None).await.unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn the_retry_table_runs_through_the_adapter_and_every_call_is_audited() {
    let hub = Hub::start(options()).await;
    let ticketing = hub.mock::<TicketingMock>();
    let ticket = json!({"customer_id": "CUST-1", "subject": "Late", "description": "where is it"});

    // Two 503s, then the ticket: three calls, three rows.
    ticketing.faults.fail_next(2, 503);
    let filed = post(&hub, "/max/tickets", ticket.clone(), &[]).await;
    assert_eq!(filed.status, 201, "{}", filed.body);
    assert_eq!(
        audit(&hub, "create_ticket").await,
        [(1, Some(503)), (2, Some(503)), (3, Some(201))]
    );

    // A 422 is final: one call.
    ticketing.faults.fail_next(1, 422);
    let refused = post(&hub, "/max/tickets", ticket.clone(), &[]).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(audit(&hub, "create_ticket").await.len(), 4);

    // A 429 is retried too.
    ticketing.faults.fail_next(1, 429);
    assert_eq!(
        post(&hub, "/max/tickets", ticket.clone(), &[]).await.status,
        201
    );
    assert_eq!(
        audit(&hub, "create_ticket").await[4..],
        [(1, Some(429)), (2, Some(201))]
    );

    // A revoked token: one 401, one new token, one retry.
    let txns = hub.mock::<TransactionsMock>();
    assert_eq!(fresh(&hub, "/max/transactions/TXN-7").await.status, 200);
    let tokens = txns.token_requests();
    txns.expire_tokens();
    assert_eq!(fresh(&hub, "/max/transactions/TXN-7").await.status, 200);
    assert_eq!(txns.token_requests(), tokens + 1);
    assert_eq!(
        audit(&hub, "get_transaction_status").await,
        [(1, Some(200)), (1, Some(401)), (2, Some(200))]
    );
    // Sales: the same, with the body signed.
    let sales = hub.mock::<SalesMock>();
    let draft = json!({"customer_id": "CUST-4", "amount": "5.00", "description": "add-on"});
    assert_eq!(
        post(&hub, "/max/transactions/drafts", draft.clone(), &[])
            .await
            .status,
        201
    );
    hub.http
        .post(format!("{}/_mock/expire_tokens", sales.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post(&hub, "/max/transactions/drafts", draft, &[])
            .await
            .status,
        201
    );
    assert_eq!(sales.token_requests(), 2);

    // Every row names its adapter and trace; durations are recorded.
    let (rows, unnamed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE adapter NOT IN ('ticketing', 'transaction_status', 'transaction_create') OR duration_ms < 0)
         FROM integration_log",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert!(rows >= 11 && unnamed == 0, "{rows} rows, {unnamed} odd");
    hub.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_half_opens_and_closes_and_the_supervisor_hears_once() {
    let hub = Hub::start(options().with(vec![("MAX_BREAKER_OPEN_MS", "3000".into())])).await;
    let ticketing = hub.mock::<TicketingMock>();
    ticketing.faults.down();

    // Four attempts fail (retry table), then the fifth failure opens the breaker mid-call.
    let first = fresh(&hub, "/max/tickets/TICKET-1").await;
    assert_eq!(first.status, 502, "{}", first.body);
    assert_eq!(first.body["error"], "partner_failed");
    let second = fresh(&hub, "/max/tickets/TICKET-1").await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert_eq!(second.body["error"], "adapter_unavailable");
    assert_eq!(ticketing.faults.requests(), 5);
    assert_eq!(breaker_of(&hub, "ticketing").await, "open");
    assert_eq!(
        breaker_of(&hub, "transaction_status").await,
        "closed",
        "per adapter"
    );

    // Open: a write fails at once, is dead-lettered with its payload, the partner untouched.
    let write = post(
        &hub,
        "/max/tickets",
        json!({"customer_id": "CUST-1", "subject": "Outage", "description": "x"}),
        &[],
    )
    .await;
    assert_eq!(write.status, 503, "{}", write.body);
    assert_eq!(ticketing.faults.requests(), 5, "open means no call");
    let operation_id = write.body["operation_id"].as_str().unwrap().to_string();
    let dead = eventually(
        "the write is dead-lettered",
        Duration::from_secs(10),
        || async {
            let messages = hub.stream_messages("DLQ").await;
            messages
                .into_iter()
                .find(|(_, payload, _)| payload["operation_id"] == operation_id.as_str())
        },
    )
    .await;
    assert_eq!(dead.0, "dlq.operate-max");
    assert_eq!(dead.1["operation"], "create_ticket");
    assert_eq!(dead.1["subject"], "Outage");
    let error = dead
        .2
        .get("Ihub-Error")
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(error.contains("breaker"), "{error}");
    let looked = get(&hub, &format!("/max/operations/{operation_id}")).await;
    assert_eq!(looked.body["state"], "failed");

    // One notice for the whole outage; every failure recorded.
    let supervisor = hub.mock::<SupervisorMock>();
    assert_eq!(supervisor.notices().len(), 1);
    assert_eq!(supervisor.notices()[0]["adapter"], "ticketing");
    let (recorded,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM max_supervisor_notices WHERE adapter = 'ticketing'")
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert_eq!(recorded, 3);

    // The partner is back; after the open time one call probes and closes it.
    ticketing.faults.reset();
    eventually(
        "the breaker half-opens",
        Duration::from_secs(10),
        || async { (breaker_of(&hub, "ticketing").await == "half_open").then_some(()) },
    )
    .await;
    let probe = fresh(&hub, "/max/tickets/TICKET-1").await;
    assert_eq!(
        probe.status, 404,
        "the probe reached the partner: {}",
        probe.body
    );
    assert_eq!(breaker_of(&hub, "ticketing").await, "closed");

    // The operator replays the dead letter: the ticket is filed, the operation succeeds.
    let letters = ihub::runtime::dlq::list(&hub.bus, Some("operate-max"))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    ihub::runtime::dlq::replay(&hub.bus, letters[0].seq)
        .await
        .unwrap();
    let replayed = eventually(
        "the replayed write succeeds",
        Duration::from_secs(10),
        || async {
            let looked = get(&hub, &format!("/max/operations/{operation_id}")).await;
            (looked.body["state"] == "succeeded").then_some(looked)
        },
    )
    .await;
    let ticket_id = replayed.body["answer"]["ticket_id"].as_str().unwrap();
    assert!(ticketing.ticket(ticket_id).is_some());
    hub.stop().await;
}

#[tokio::test]
async fn a_write_slower_than_the_sync_wait_answers_202_and_can_be_polled() {
    let hub = Hub::start(options().with(vec![("MAX_SYNC_WAIT_MS", "50".into())])).await;
    let ticketing = hub.mock::<TicketingMock>();
    ticketing.faults.latency(Duration::from_millis(400));
    let response = hub
        .http
        .post(format!("{}/max/tickets", hub.url))
        .bearer_auth(MAX_TOKEN)
        .json(&json!({"customer_id": "CUST-1", "subject": "Slow", "description": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["state"], "pending");
    assert_eq!(
        location,
        format!(
            "/max/operations/{}",
            accepted["operation_id"].as_str().unwrap()
        )
    );
    let done = eventually("the operation ends", Duration::from_secs(10), || async {
        let looked = get(&hub, &location).await;
        (looked.body["state"] != "pending").then_some(looked)
    })
    .await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    assert_eq!(done.body["status"], 201);
    assert!(done.body["answer"]["ticket_id"].is_string());
    hub.stop().await;
}

#[tokio::test]
async fn a_half_open_breaker_lets_one_probe_through_across_processes() {
    let hub = Hub::start(options()).await;
    let other =
        ihub::nats::Bus::connect(&crate::support::nats_url(), &hub.cfg.nats_prefix, "test-b")
            .await
            .unwrap();
    let open_for = Duration::from_millis(200);
    let breaker = |bus: &ihub::nats::Bus| {
        let bus = bus.clone();
        async move {
            SharedBreaker::new(
                bus.kv("breakers").await.unwrap(),
                "probe-test",
                2,
                open_for,
                Duration::from_secs(30),
            )
        }
    };
    let (a, b) = (breaker(&hub.bus).await, breaker(&other).await);
    assert_eq!(a.failed().await.unwrap(), State::Closed);
    assert_eq!(
        b.failed().await.unwrap(),
        State::Open,
        "two failures, two processes"
    );
    assert_eq!(a.allow().await.unwrap(), Err(State::Open));
    eventually("the open time passes", Duration::from_secs(10), || async {
        (a.state().await.unwrap() == State::HalfOpen).then_some(())
    })
    .await;
    let (from_a, from_b) = tokio::join!(a.allow(), b.allow());
    let mut permits = [from_a.unwrap(), from_b.unwrap()];
    permits.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        permits,
        [Err(State::HalfOpen), Ok(Permit::Probe)],
        "one probe"
    );
    b.succeeded().await.unwrap();
    assert_eq!(a.allow().await.unwrap(), Ok(Permit::Call));
    hub.stop().await;
}

/// Reads `TXN-1..=count` past the cache, all at once: whether each answered 200.
async fn read_at_once(hub: &Hub, count: u32) -> bool {
    let reads = (1..=count).map(|n| async move {
        fresh(hub, &format!("/max/transactions/TXN-{n}"))
            .await
            .status
    });
    futures::future::join_all(reads)
        .await
        .iter()
        .all(|s| *s == 200)
}

/// Two `ihub consume` processes share one OAuth2 token; nothing the processes log (JSON lines
/// at debug, span fields included), store (audit, operations, notices) or dead-letter, nor
/// what the partners saw, holds a configured secret.
#[tokio::test]
async fn two_processes_share_the_token_and_no_secret_is_written_anywhere() {
    let mut hub = Hub::start(Options {
        no_consumers: true,
        no_ingress: true,
        ..options()
    })
    .await;
    let mut env = hub.env();
    env.push(("LOG_FORMAT".into(), "json".into()));
    env.push(("RUST_LOG".into(), "ihub=debug,info".into()));
    let mut ingress_env = env.clone();
    let port = crate::support::outage::free_port();
    ingress_env.push(("HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
    let mut ingress = Ihub::spawn(&["ingress", "--integrations", "max"], &ingress_env);
    ingress.wait_for_line("listening on").await;
    hub.url = format!("http://127.0.0.1:{port}");
    let mut first = Ihub::spawn(&["consume", "--integrations", "max"], &env);
    first.wait_for_line("consumers running").await;
    let mut second = Ihub::spawn(&["consume", "--integrations", "max"], &env);
    second.wait_for_line("consumers running").await;

    let txns = hub.mock::<TransactionsMock>();
    assert!(read_at_once(&hub, 20).await);
    assert_eq!(
        txns.token_requests(),
        1,
        "one token for twenty reads in two processes"
    );
    txns.expire_tokens();
    assert!(read_at_once(&hub, 10).await);
    assert_eq!(
        txns.token_requests(),
        2,
        "one re-authentication however many saw the 401"
    );

    // Some failures too: their errors and dead letters are written as well.
    hub.mock::<TicketingMock>().faults.down();
    let down = post(
        &hub,
        "/max/tickets",
        json!({"customer_id": "CUST-1", "subject": "s", "description": "d"}),
        &[],
    )
    .await;
    assert!(down.status == 502 || down.status == 202, "{}", down.body);
    eventually(
        "the failed write is dead-lettered",
        Duration::from_secs(20),
        || async { (!hub.stream_messages("DLQ").await.is_empty()).then_some(()) },
    )
    .await;
    let draft = post(
        &hub,
        "/max/transactions/drafts",
        json!({"customer_id": "CUST-1", "amount": "1.00", "description": "d"}),
        &[],
    )
    .await;
    assert_eq!(draft.status, 201);

    let logged = |log: &std::path::Path| std::fs::read_to_string(log).unwrap();
    let served = |log: &std::path::Path| logged(log).contains("integration_request");
    assert!(
        served(&first.log) && served(&second.log),
        "both processes served reads"
    );
    // The audit line is structured: adapter, operation, duration, status, conversation.
    let line: Value = logged(&first.log)
        .lines()
        .chain(logged(&second.log).lines())
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "integration_request")
        .expect("a JSON integration_request line");
    for field in ["adapter", "operation", "duration_ms", "status"] {
        assert!(line["fields"].get(field).is_some(), "{field} in {line}");
    }
    let mut written = String::new();
    for log in [&ingress.log, &first.log, &second.log] {
        written.push_str(&logged(log));
    }
    for (table, query) in [
        ("integration_log", "SELECT t::text FROM integration_log t"),
        ("max_operations", "SELECT t::text FROM max_operations t"),
        (
            "max_supervisor_notices",
            "SELECT t::text FROM max_supervisor_notices t",
        ),
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(query).fetch_all(&hub.db).await.unwrap();
        assert!(!rows.is_empty(), "{table} has rows");
        rows.into_iter().for_each(|(row,)| written.push_str(&row));
    }
    for (subject, payload, headers) in hub.stream_messages("DLQ").await {
        written.push_str(&format!("{subject} {payload} {headers:?}"));
    }
    for mock in &hub.mocks {
        let seen = hub
            .http
            .get(format!("{}/_mock/requests", mock.url))
            .send()
            .await
            .unwrap();
        written.push_str(&seen.text().await.unwrap());
    }
    for secret in [
        API_KEY,
        CLIENT_SECRET,
        SALES_SECRET,
        SALES_HMAC,
        SUPERVISOR_SECRET,
        MAX_TOKEN,
        WEBHOOK_SECRET,
    ] {
        assert!(!written.contains(secret), "{secret} was written");
    }
    assert!(first.terminate().await && second.terminate().await && ingress.terminate().await);
    hub.stop().await;
}

/// A write's command redelivered after its process died mid-call runs again, with the same
/// `Idempotency-Key` (its operation id): the partner files one ticket.
#[tokio::test]
async fn a_write_run_twice_files_one_ticket() {
    use ihub::integrations::max::adapter::{Adapters, Outcome, Progress, Step};
    use ihub::integrations::max::config::AdapterConfig;
    use ihub::integrations::max::operations::Operation;
    let hub = Hub::start(options()).await;
    let adapters = Adapters::new(
        AdapterConfig::from_env(&hub.cfg.env).unwrap(),
        &hub.bus,
        hub.db.clone(),
        hub.http.clone(),
    )
    .await
    .unwrap();
    let ticket = Operation::CreateTicket {
        customer_id: "CUST-1".into(),
        subject: "Twice".into(),
        description: "a crash between the call and its record".into(),
        priority: "normal".into(),
    };
    // One delivery of the write's command: its partner call.
    let deliver = |key: String| {
        let (adapters, ticket) = (&adapters, &ticket);
        async move {
            let mut progress = Progress::default();
            match adapters
                .step(ticket, None, Some(&key), 1, &mut progress)
                .await
                .unwrap()
            {
                Step::Ended(outcome) => outcome,
                other => panic!("{other:?}"),
            }
        }
    };
    let operation_id = uuid::Uuid::now_v7().to_string();
    let first = deliver(operation_id.clone()).await;
    let again = deliver(operation_id).await;
    let Outcome::Answered { status: 201, body } = &first else {
        panic!("{first:?}");
    };
    assert_eq!(first, again, "the same answer");
    assert_eq!(hub.mock::<TicketingMock>().tickets(), 1, "{body}");
    // Another operation is another ticket.
    deliver(uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(hub.mock::<TicketingMock>().tickets(), 2);
    hub.stop().await;
}
