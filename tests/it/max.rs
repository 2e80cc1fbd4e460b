//! MAX's partner mocks and the adapters' shared parts (the OAuth2 token, the supervisor): each
//! mock answers as its partner would, behind its credentials, and lists what it received with
//! the secrets masked. The hub's API for MAX is tested in `max_adapters`.

use serde_json::{Value, json};

use ihub::config::Secret;
use ihub::integrations::max::mocks::supervisor::{SIGNATURE_HEADER, SupervisorMock};
use ihub::integrations::max::mocks::ticketing::TicketingMock;
use ihub::integrations::max::mocks::transactions::TransactionsMock;
use ihub::signatures::body_signature;

use crate::support::{Hub, Options};

pub const API_KEY: &str = "test-ticketing-key";
pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-client-secret";
pub const SUPERVISOR_SECRET: &str = "test-supervisor-secret";
pub const SALES_SECRET: &str = "test-sales-secret";
pub const SALES_HMAC: &str = "test-sales-hmac";
pub const MAX_TOKEN: &str = "test-max-token";
pub const WEBHOOK_SECRET: &str = "test-max-webhook-secret";

pub fn options() -> Options {
    Options::new(
        "max",
        &[
            ("MAX_TICKETING_API_KEY", API_KEY),
            ("MAX_TRANSACTIONS_CLIENT_ID", CLIENT_ID),
            ("MAX_TRANSACTIONS_CLIENT_SECRET", CLIENT_SECRET),
            ("SUPERVISOR_WEBHOOK_SECRET", SUPERVISOR_SECRET),
            ("MAX_SALES_CLIENT_ID", "test-sales-client"),
            ("MAX_SALES_CLIENT_SECRET", SALES_SECRET),
            ("MAX_SALES_HMAC_SECRET", SALES_HMAC),
            ("MAX_API_TOKEN", MAX_TOKEN),
            ("MAX_WEBHOOK_SECRET", WEBHOOK_SECRET),
            // The seed's retry table, a hundred times faster.
            ("MAX_RETRY_BASE_MS", "20"),
        ],
    )
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_ticketing_mock_files_tickets_behind_its_api_key() {
    let hub = Hub::start(options()).await;
    let ticketing = hub.mock::<TicketingMock>();
    let post = |path: &str, key: Option<&str>, body: Value| {
        let mut request = hub
            .http
            .post(format!("{}{path}", ticketing.url))
            .json(&body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };
    let ticket = json!({"subject": "Refund", "description": "twice charged", "priority": "high",
                        "custom_fields": {"customer_id": "CUST-1"}});
    let (status, _) = json_of(post("/tickets", None, ticket.clone()).await.unwrap()).await;
    assert_eq!(status, 401);
    let (status, _) = json_of(
        post("/tickets", Some("wrong"), ticket.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, created) = json_of(post("/tickets", Some(API_KEY), ticket).await.unwrap()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["id"].as_str(), created["status"].as_str()),
        (Some("TICKET-1"), Some("open"))
    );

    let (status, comment) = json_of(
        post(
            "/tickets/TICKET-1/comments",
            Some(API_KEY),
            json!({"body": "on it", "public": true}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{comment}");
    let (status, _) = json_of(
        post(
            "/tickets/TICKET-9/comments",
            Some(API_KEY),
            json!({"body": "x", "public": true}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 404);

    // An agent takes it; the status shows it.
    hub.http
        .post(format!("{}/_mock/tickets/TICKET-1", ticketing.url))
        .json(&json!({"status": "in_progress", "assignee": "agent@example.com"}))
        .send()
        .await
        .unwrap();
    let (status, ticket) = json_of(
        hub.http
            .get(format!("{}/tickets/TICKET-1", ticketing.url))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ticket["status"], "in_progress");
    assert_eq!(ticket["assignee"]["email"], "agent@example.com");

    let (_, logged) = json_of(
        hub.http
            .get(format!("{}/_mock/requests", ticketing.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let statuses: Vec<u64> = logged
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 401, 201, 201, 404, 200]);
    hub.stop().await;
}

#[tokio::test]
async fn the_transaction_status_mock_wants_a_live_oauth_token() {
    let hub = Hub::start(options()).await;
    let txns = hub.mock::<TransactionsMock>();
    let token = |secret: &'static str| {
        hub.http
            .post(format!("{}/oauth/token", txns.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={secret}"
            ))
            .send()
    };
    let (status, _) = json_of(token("wrong").await.unwrap()).await;
    assert_eq!(status, 401);
    let (status, granted) = json_of(token(CLIENT_SECRET).await.unwrap()).await;
    assert_eq!(status, 200, "{granted}");
    assert!(granted["expires_in"].as_u64().unwrap() > 0);
    let bearer = granted["access_token"].as_str().unwrap().to_string();
    let get = |path: String, bearer: Option<String>| {
        let mut request = hub.http.get(format!("{}{path}", txns.url));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };
    let (status, _) = json_of(get("/transactions/TXN-3".into(), None).await.unwrap()).await;
    assert_eq!(status, 401);
    let (status, txn) = json_of(
        get("/transactions/TXN-3".into(), Some(bearer.clone()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{txn}");
    assert_eq!(
        (
            txn["amount"].as_str(),
            txn["currency"].as_str(),
            txn["customer_id"].as_str(),
            txn["status"].as_str()
        ),
        (
            Some("75.00"),
            Some("USD"),
            Some("CUST-3"),
            Some("completed")
        )
    );
    let (status, _) = json_of(
        get("/transactions/TXN-99".into(), Some(bearer.clone()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, history) = json_of(
        get(
            "/customers/CUST-1/transactions?limit=2".into(),
            Some(bearer.clone()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["TXN-17", "TXN-13"], "newest first, limited");

    // Revoked tokens are refused; a new one works.
    hub.http
        .post(format!("{}/_mock/expire_tokens", txns.url))
        .send()
        .await
        .unwrap();
    let (status, _) = json_of(
        get("/transactions/TXN-3".into(), Some(bearer))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(txns.token_requests(), 2);
    let (_, logged) = json_of(
        hub.http
            .get(format!("{}/_mock/requests", txns.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!logged.to_string().contains(CLIENT_SECRET), "{logged}");
    hub.stop().await;
}

#[tokio::test]
async fn the_supervisor_takes_signed_notices_only() {
    let hub = Hub::start(options()).await;
    let supervisor = hub.mock::<SupervisorMock>();
    let body = json!({"adapter": "ticketing", "error": "breaker open"}).to_string();
    let send = |signature: String| {
        hub.http
            .post(format!("{}/notices", supervisor.url))
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
    };
    let (status, _) = json_of(send("00".into()).await.unwrap()).await;
    assert_eq!(status, 401);
    let signature = body_signature(&Secret::new(SUPERVISOR_SECRET), body.as_bytes());
    let (status, _) = json_of(send(signature).await.unwrap()).await;
    assert_eq!(status, 202);
    assert_eq!(
        supervisor.notices(),
        [json!({"adapter": "ticketing", "error": "breaker open"})]
    );
    hub.stop().await;
}

const SALES_ID: &str = "test-sales-client";

#[tokio::test]
async fn the_sales_mock_commits_a_signed_draft_once_and_the_status_system_knows_it() {
    use ihub::integrations::max::mocks::sales::{HMAC_HEADER, SalesMock};
    use ihub::signatures::canonical_json;
    let hub = Hub::start(options()).await;
    let sales = hub.mock::<SalesMock>();
    let txns = hub.mock::<TransactionsMock>();
    let token = |url: String, id: &str, secret: &str| {
        let body = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
        let http = hub.http.clone();
        async move {
            let (_, granted) = json_of(
                http.post(format!("{url}/oauth/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            granted["access_token"].as_str().unwrap().to_string()
        }
    };
    let bearer = token(sales.url.clone(), SALES_ID, SALES_SECRET).await;
    let signed = |path: String, body: Value, key: Option<&str>, sign: bool| {
        let mut request = hub
            .http
            .post(format!("{}{path}", sales.url))
            .bearer_auth(&bearer)
            .json(&body);
        if sign {
            let signature =
                body_signature(&Secret::new(SALES_HMAC), canonical_json(&body).as_bytes());
            request = request.header(HMAC_HEADER, signature);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    let draft = json!({"customer_id": "CUST-2", "amount": "500.00", "description": "upgrade", "metadata": {}});
    let (status, _) = json_of(
        signed("/transactions/drafts".into(), draft.clone(), None, false)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "unsigned");
    let (status, created) = json_of(
        signed("/transactions/drafts".into(), draft.clone(), None, true)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "pending_confirmation");
    let id = created["id"].as_str().unwrap().to_string();
    let commit = format!("/transactions/drafts/{id}/commit");
    let body = json!({"draft_id": id});
    let (status, _) = json_of(
        signed(commit.clone(), body.clone(), None, true)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "no Idempotency-Key");
    let (status, first) = json_of(
        signed(commit.clone(), body.clone(), Some("k-1"), true)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["status"].as_str(), first["amount"].as_str()),
        (Some("completed"), Some("500.00"))
    );
    let (status, again) = json_of(
        signed(commit.clone(), body.clone(), Some("k-1"), true)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "the same key, the same answer"
    );
    let (status, other) = json_of(
        signed(commit.clone(), body, Some("k-2"), true)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, other["error"].as_str()),
        (409, Some("already_committed"))
    );
    assert_eq!(sales.commits(), 1);

    // The transaction status system knows the committed transaction.
    let status_bearer = token(txns.url.clone(), CLIENT_ID, CLIENT_SECRET).await;
    let txn = first["id"].as_str().unwrap();
    let (status, known) = json_of(
        hub.http
            .get(format!("{}/transactions/{txn}", txns.url))
            .bearer_auth(status_bearer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{known}");
    assert_eq!(
        (known["customer_id"].as_str(), known["amount"].as_str()),
        (Some("CUST-2"), Some("500.00"))
    );

    // A cancelled draft does not commit.
    let (_, second) = json_of(
        signed("/transactions/drafts".into(), draft, None, true)
            .await
            .unwrap(),
    )
    .await;
    let second = second["id"].as_str().unwrap().to_string();
    let (status, cancelled) = json_of(
        hub.http
            .post(format!("{}/transactions/drafts/{second}/cancel", sales.url))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = json_of(
        signed(
            format!("/transactions/drafts/{second}/commit"),
            json!({"draft_id": second}),
            Some("k-3"),
            true,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 409);
    let (_, logged) = json_of(
        hub.http
            .get(format!("{}/_mock/requests", sales.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let logged = logged.to_string();
    assert!(
        !logged.contains(SALES_SECRET) && !logged.contains(SALES_HMAC),
        "{logged}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn processes_share_one_oauth_token_and_replace_it_once_after_a_401() {
    use ihub::integrations::max::oauth::SharedToken;
    let hub = Hub::start(options()).await;
    let txns = hub.mock::<TransactionsMock>();
    // Two processes: two NATS connections, each with its own view of the token.
    let other =
        ihub::nats::Bus::connect(&crate::support::nats_url(), &hub.cfg.nats_prefix, "test-b")
            .await
            .unwrap();
    let process = |bus: &ihub::nats::Bus| {
        let bus = bus.clone();
        let url = format!("{}/oauth/token", txns.url);
        let http = hub.http.clone();
        async move {
            SharedToken::new(
                bus.kv("tokens").await.unwrap(),
                http,
                "transaction_status",
                url,
                CLIENT_ID.into(),
                Secret::new(CLIENT_SECRET),
            )
        }
    };
    let (a, b) = (process(&hub.bus).await, process(&other).await);
    let calls = (0..20).map(|n| if n % 2 == 0 { a.bearer() } else { b.bearer() });
    let tokens: Vec<Secret> = futures::future::try_join_all(calls).await.unwrap();
    assert!(
        tokens.iter().all(|t| t.expose() == tokens[0].expose()),
        "one token for all"
    );
    assert_eq!(
        txns.token_requests(),
        1,
        "one token request for twenty callers in two processes"
    );

    // The partner revokes it: a call gets 401, every caller replaces it, one request is made.
    txns.expire_tokens();
    let stale = tokens[0].clone();
    let (status, _) = json_of(
        hub.http
            .get(format!("{}/transactions/TXN-1", txns.url))
            .bearer_auth(stale.expose())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let (from_a, from_b) = tokio::join!(a.replace(&stale), b.replace(&stale));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    assert_eq!(from_a.expose(), from_b.expose());
    assert_ne!(from_a.expose(), stale.expose());
    assert_eq!(txns.token_requests(), 2);
    let (status, _) = json_of(
        hub.http
            .get(format!("{}/transactions/TXN-1", txns.url))
            .bearer_auth(from_a.expose())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    hub.stop().await;
}

#[tokio::test]
async fn the_supervisor_hears_of_an_outage_once_per_adapter_per_window() {
    use ihub::integrations::max::supervisor::{Notice, Supervisor};
    let hub = Hub::start(options()).await;
    let mock = hub.mock::<SupervisorMock>();
    let supervisor = Supervisor {
        url: format!("{}/notices", mock.url),
        secret: Secret::new(SUPERVISOR_SECRET),
        window: std::time::Duration::from_secs(300),
    };
    let fail = |adapter: &'static str| {
        supervisor.failed(&hub.db, &hub.http, adapter, "op", "503 from the partner")
    };
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(fail("ticketing").await.unwrap());
    }
    assert_eq!(
        outcomes,
        [
            Notice::Sent(Some(202)),
            Notice::Suppressed,
            Notice::Suppressed
        ]
    );
    assert_eq!(
        fail("transaction_status").await.unwrap(),
        Notice::Sent(Some(202)),
        "its own outage"
    );
    // Many failures at once still notify once.
    let burst = futures::future::try_join_all((0..10).map(|_| fail("transaction_create")))
        .await
        .unwrap();
    assert_eq!(
        burst
            .iter()
            .filter(|n| matches!(n, Notice::Sent(_)))
            .count(),
        1,
        "{burst:?}"
    );
    assert_eq!(mock.notices().len(), 3);
    assert_eq!(mock.notices()[0]["adapter"], "ticketing");
    let (rows, notified): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE notified) FROM max_supervisor_notices",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!((rows, notified), (14, 3), "every failure recorded");

    // A window of zero: each failure is its own notice.
    let eager = Supervisor {
        window: std::time::Duration::ZERO,
        ..supervisor
    };
    let again = eager
        .failed(&hub.db, &hub.http, "ticketing", "op", "still down")
        .await
        .unwrap();
    assert_eq!(again, Notice::Sent(Some(202)));
    hub.stop().await;
}
