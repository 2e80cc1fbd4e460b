//! WaveGate (seed 3) end to end: OTA partner → ingress → NATS → ticketing mock → OTA mock.

use std::time::Duration;

use ihub::runtime::dlq;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use ihub::integrations::wavegate::mocks::ota::OtaMock;
use ihub::integrations::wavegate::mocks::ticketing::TicketingMock;
use ihub::mocks::Mocked;

use crate::support::process::Ihub;
use crate::support::{Hub, Options, eventually};

const WAIT: Duration = Duration::from_secs(20);

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const CALLBACK_SECRET: &str = "test-callback-signing-secret";
/// The partners every test hub knows: `acme` may call from anywhere, `globex` only from
/// 10.0.0.0/8 (so from this machine only through a trusted proxy).
pub const PARTNERS: &[(&str, &str)] = &[("acme", "acme-token-1"), ("globex", "globex-token-1")];

/// A hub running WaveGate, retrying within milliseconds, calling back to the local OTA mock.
pub fn options() -> Options {
    let partners = json!([
        {"id": PARTNERS[0].0, "name": "Acme Travel", "token": PARTNERS[0].1,
         "allowlist_cidrs": ["0.0.0.0/0", "::/0"]},
        {"id": PARTNERS[1].0, "name": "Globex Tours", "token": PARTNERS[1].1,
         "allowlist_cidrs": ["10.0.0.0/8"]},
    ])
    .to_string();
    Options::new(
        "wavegate",
        &[
            ("PARTNERS_JSON", &partners),
            ("APP_HMAC_SECRET", "test-app-hmac-secret"),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("CALLBACK_SIGNING_SECRET", CALLBACK_SECRET),
            ("ALLOW_PRIVATE_CALLBACKS", "loopback"),
            ("REQUIRE_HTTPS_CALLBACKS", "0"),
            ("ALLOWED_CALLBACK_PORTS", "*"),
            ("WAVEGATE_RETRY_OFFSETS_MS", "0,20,50,90,140"),
            ("RATE_LIMIT_CAPACITY", "1000"),
            ("RATE_LIMIT_PER_SEC", "1000"),
        ],
    )
}
const ACME: (&str, &str) = PARTNERS[0];
const GLOBEX: (&str, &str) = PARTNERS[1];

fn order(external_id: &str, callback_url: &str) -> Value {
    json!({
        "external_order_id": external_id,
        "callback_url": callback_url,
        "items": [
            {"sku": "ADULT-DAY", "qty": 2, "unit_price_minor": 129900, "currency": "THB"},
            {"sku": "CHILD-DAY", "qty": 1, "unit_price_minor": 69900, "currency": "THB"}
        ],
        "buyer": {"name": "Alex"}
    })
}

struct Answer {
    status: u16,
    body: Value,
    headers: HeaderMap,
}

impl Hub {
    fn ticketing(&self) -> Mocked<TicketingMock> {
        self.mock()
    }

    fn ota(&self) -> Mocked<OtaMock> {
        self.mock()
    }

    /// A callback URL on the OTA mock, one path per test order.
    fn callback_url(&self, name: &str) -> String {
        format!("{}/callbacks/{name}", self.ota().url)
    }

    async fn post_order(
        &self,
        partner: (&str, &str),
        key: Option<&str>,
        body: &Value,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .http
            .post(format!("{}/orders", self.url))
            .header("x-partner-id", partner.0)
            .header("x-partner-token", partner.1)
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        answer(request).await
    }

    async fn get_as(&self, partner: (&str, &str), path: &str) -> Answer {
        answer(
            self.http
                .get(format!("{}{path}", self.url))
                .header("x-partner-id", partner.0)
                .header("x-partner-token", partner.1),
        )
        .await
    }

    async fn order_status(&self, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT pipeline_status FROM orders WHERE id::text = $1")
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .expect("query")
    }

    async fn wait_for_status(&self, id: &str, status: &str) {
        eventually(&format!("order {id} to be {status}"), WAIT, || async {
            (self.order_status(id).await.as_deref() == Some(status)).then_some(())
        })
        .await;
    }

    async fn auth_events(&self) -> Vec<(Option<String>, String, String)> {
        sqlx::query_as("SELECT partner_id, reason, ip FROM auth_events ORDER BY occurred_at")
            .fetch_all(&self.db)
            .await
            .expect("query")
    }

    async fn orders_published(&self) -> usize {
        self.stream_messages("INBOUND")
            .await
            .iter()
            .filter(|(subject, _, _)| subject == "in.wavegate.order_accepted")
            .count()
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the ingress answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        headers,
    }
}

fn id_of(answer: &Answer) -> String {
    answer.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no order id in {}", answer.body))
        .to_string()
}

#[tokio::test]
async fn an_order_is_ticketed_and_the_partner_called_back_signed() {
    let hub = Hub::start(options()).await;
    let body = order("EXT-42", &hub.callback_url("happy"));
    let accepted = hub.post_order(ACME, Some("abc123"), &body, &[]).await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
    let id = id_of(&accepted);
    assert_eq!(accepted.body["partner_id"], "acme");
    assert_eq!(accepted.body["external_order_id"], "EXT-42");
    assert_eq!(accepted.body["pipeline_status"], "accepted");
    let trace_id = accepted.body["trace_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&trace_id).is_ok(), "{trace_id}");
    assert!(accepted.body["created_at"].is_string());

    hub.wait_for_status(&id, "ota_callback_delivered").await;

    // Ticketing got the mapped order once, with the trace id as its idempotency key.
    let ticketing = hub.ticketing().orders();
    assert_eq!(ticketing.len(), 1);
    let sent = &ticketing[0];
    assert_eq!(sent.idempotency_key, trace_id);
    assert_eq!(sent.headers.get("x-trace-id"), Some(&trace_id));
    assert_eq!(sent.headers.get("x-origin-partner-id").unwrap(), "acme");
    assert_eq!(sent.headers.get("x-external-order-id").unwrap(), "EXT-42");
    assert_eq!(sent.tickets.len(), 3, "one ticket per unit of qty");
    // The outbound trace is the order's trace.
    let traceparent = sent.headers.get("traceparent").expect("traceparent");
    assert_eq!(
        traceparent.split('-').nth(1).unwrap(),
        trace_id.replace('-', "")
    );

    // The partner got one callback, verifiable with an off-the-shelf Standard Webhooks library
    // and with X-Callback-Signature.
    let callbacks = hub.ota().for_order(&id);
    assert_eq!(callbacks.len(), 1);
    let callback = &callbacks[0];
    assert_eq!(callback.body["status"], "ticketed");
    assert_eq!(callback.body["order"]["external_order_id"], "EXT-42");
    assert_eq!(callback.body["tickets"].as_array().unwrap().len(), 3);
    assert_eq!(callback.headers.get("x-trace-id"), Some(&trace_id));
    assert_eq!(callback.headers.get("idempotency-key"), Some(&trace_id));
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &callback.headers {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    standardwebhooks::Webhook::from_bytes(CALLBACK_SECRET.as_bytes().to_vec())
        .unwrap()
        .verify(callback.raw_body.as_bytes(), &headers)
        .expect("the Standard Webhooks signature verifies");
    let expected = hex::encode(ihub::signatures::hmac_sha256(
        CALLBACK_SECRET.as_bytes(),
        callback.raw_body.as_bytes(),
    ));
    assert_eq!(
        callback.headers.get("x-callback-signature"),
        Some(&expected)
    );
    assert_eq!(hub.ota().rejected(), 0);

    // The partner's view of it.
    let detail = hub.get_as(ACME, &format!("/orders/{id}")).await;
    assert_eq!(detail.status, 200);
    let d = &detail.body;
    assert_eq!(d["status"], "ota_callback_delivered");
    assert_eq!(d["items"].as_array().unwrap().len(), 2);
    assert_eq!(d["items"][0]["unit_price_minor"], 129900);
    assert_eq!(d["total_minor"], 2 * 129900 + 69900);
    assert_eq!(d["tickets"].as_array().unwrap().len(), 3);
    assert_eq!(d["ticketing_job"]["status"], "succeeded");
    assert_eq!(d["ticketing_job"]["attempts"][0]["no"], 1);
    assert_eq!(d["ticketing_job"]["attempts"][0]["code"], 201);
    assert_eq!(d["ota_callback_job"]["status"], "succeeded");
    assert_eq!(d["ota_callback_job"]["last_status_code"], 200);

    let list = hub.get_as(ACME, "/orders").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["orders"][0]["id"], id.as_str());
    assert_eq!(list.body["orders"][0]["status"], "ota_callback_delivered");

    // Every event the order caused matches the schema of its subject.
    let seen = hub.assert_events_match_schemas().await;
    assert_eq!(
        seen,
        [
            "in.wavegate.order_accepted",
            "out.ticketing.order",
            "out.ota.callback"
        ]
    );
    hub.stop().await;
}

#[tokio::test]
async fn callbacks_in_flight_stay_within_the_concurrency_limit() {
    let hub = Hub::start(options().with(vec![("CALLBACK_CONCURRENCY", "2".into())])).await;
    hub.ota().faults.latency(Duration::from_millis(150));
    let mut ids = Vec::new();
    for n in 0..6 {
        let body = order(&format!("EXT-C{n}"), &hub.callback_url("slow"));
        ids.push(id_of(&hub.post_order(ACME, None, &body, &[]).await));
    }
    for id in &ids {
        hub.wait_for_status(id, "ota_callback_delivered").await;
    }
    assert_eq!(hub.ota().faults.max_in_flight(), 2);
    hub.stop().await;
}

#[tokio::test]
async fn replays_return_the_original_order_and_changes_conflict() {
    let hub = Hub::start(options()).await;
    let body = order("EXT-1", &hub.callback_url("replay"));
    let first = hub.post_order(ACME, Some("key-1"), &body, &[]).await;
    assert_eq!(first.status, 201, "{}", first.body);

    // Same key, same order: the original answer.
    let again = hub.post_order(ACME, Some("key-1"), &body, &[]).await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    // Same key, another order: 409.
    let mut changed = body.clone();
    changed["items"][0]["qty"] = json!(5);
    let conflict = hub.post_order(ACME, Some("key-1"), &changed, &[]).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["error"], "idempotency_conflict");
    // Same external order id under another key (or none): the original when it matches...
    let by_external = hub.post_order(ACME, Some("key-2"), &body, &[]).await;
    assert_eq!((by_external.status, &by_external.body), (201, &first.body));
    let no_key = hub.post_order(ACME, None, &body, &[]).await;
    assert_eq!((no_key.status, &no_key.body), (201, &first.body));
    // ...and 409 when it does not; the refused key stays free for a real order.
    let conflict = hub.post_order(ACME, Some("key-3"), &changed, &[]).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["error"], "external_order_id_conflict");
    let other = order("EXT-2", &hub.callback_url("replay"));
    let fresh = hub.post_order(ACME, Some("key-3"), &other, &[]).await;
    assert_eq!(fresh.status, 201, "{}", fresh.body);
    assert_ne!(fresh.body["id"], first.body["id"]);
    // Another partner may use the same key and external id: its own order.
    let globex = hub
        .post_order(GLOBEX, Some("key-1"), &body, &[])
        .await
        .status;
    assert_eq!(globex, 403, "globex may only call from 10.0.0.0/8");

    let id = id_of(&first);
    hub.wait_for_status(&id, "ota_callback_delivered").await;
    hub.wait_for_status(&id_of(&fresh), "ota_callback_delivered")
        .await;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&hub.db)
        .await
        .unwrap();
    assert_eq!(orders, 2);
    assert_eq!(hub.ticketing().orders().len(), 2);
    assert_eq!(hub.ota().for_order(&id).len(), 1);
    let key_owner: String = sqlx::query_scalar(
        "SELECT order_id::text FROM idempotency_keys WHERE partner_id = 'acme' AND idempotency_key = 'key-1'",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(key_owner, id);
    hub.stop().await;
}

#[tokio::test]
async fn refused_calls_get_their_status_and_are_recorded() {
    let hub = Hub::start(options()).await;
    let body = order("EXT-9", &hub.callback_url("auth"));
    // No credentials, an unknown partner, a wrong token: 401.
    let none = answer(hub.http.post(format!("{}/orders", hub.url)).json(&body)).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.body["error"], "unauthorized");
    let unknown = hub
        .post_order(("nobody", "whatever-token"), None, &body, &[])
        .await;
    assert_eq!(unknown.status, 401);
    let wrong = hub
        .post_order((ACME.0, "not-the-token"), None, &body, &[])
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        unknown.body["message"], wrong.body["message"],
        "no hint which part was wrong"
    );
    // globex may call only from 10.0.0.0/8; X-Forwarded-For is not believed from an
    // untrusted peer.
    let outside = hub
        .post_order(GLOBEX, None, &body, &[("x-forwarded-for", "10.1.2.3")])
        .await;
    assert_eq!(outside.status, 403, "{}", outside.body);
    assert_eq!(outside.body["error"], "ip_not_allowed");
    // Malformed input: 400/422 with what to fix.
    let broken = answer(
        hub.http
            .post(format!("{}/orders", hub.url))
            .header("x-partner-id", ACME.0)
            .header("x-partner-token", ACME.1)
            .body("{not json"),
    )
    .await;
    assert_eq!(broken.status, 400);
    assert_eq!(broken.body["error"], "invalid_json");
    let mut zero_qty = body.clone();
    zero_qty["items"][0]["qty"] = json!(0);
    let invalid = hub.post_order(ACME, None, &zero_qty, &[]).await;
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    assert!(
        invalid.body["details"][0]
            .as_str()
            .unwrap()
            .contains("/items/0/qty")
    );
    let mut two_currencies = body.clone();
    two_currencies["items"][1]["currency"] = json!("EUR");
    let mixed = hub.post_order(ACME, None, &two_currencies, &[]).await;
    assert_eq!(mixed.status, 422, "{}", mixed.body);
    assert_eq!(mixed.body["error"], "invalid_items");

    let events = eventually("the refusals in auth_events", WAIT, || async {
        let events = hub.auth_events().await;
        (events.len() >= 4).then_some(events)
    })
    .await;
    let reasons: Vec<&str> = events.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "missing_credentials",
            "unknown_partner",
            "invalid_token",
            "ip_not_allowed"
        ]
    );
    assert_eq!(events[2].0.as_deref(), Some("acme"));
    assert_eq!(events[3].2, "127.0.0.1");
    assert_eq!(
        hub.orders_published().await,
        0,
        "nothing refused is published"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address() {
    let hub = Hub::start(options().with(vec![("TRUSTED_PROXIES", "127.0.0.1/32".into())])).await;
    let body = order("EXT-P", &hub.callback_url("proxy"));
    let inside = hub
        .post_order(GLOBEX, None, &body, &[("x-forwarded-for", "10.1.2.3")])
        .await;
    assert_eq!(inside.status, 201, "{}", inside.body);
    let outside = hub
        .post_order(GLOBEX, None, &body, &[("x-forwarded-for", "192.0.2.7")])
        .await;
    assert_eq!(outside.status, 403);
    assert!(
        outside.body["message"]
            .as_str()
            .unwrap()
            .contains("192.0.2.7")
    );
    hub.stop().await;
}

#[tokio::test]
async fn over_the_token_bucket_is_429_with_retry_after() {
    let hub = Hub::start(options().with(vec![
        ("RATE_LIMIT_CAPACITY", "2".into()),
        ("RATE_LIMIT_PER_SEC", "0.01".into()),
    ]))
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for n in 0..3 {
        let body = order(&format!("EXT-R{n}"), &hub.callback_url("rate"));
        let answer = hub.post_order(ACME, None, &body, &[]).await;
        statuses.push(answer.status);
        if answer.status == 429 {
            limited = Some(answer);
        }
    }
    assert_eq!(statuses, [201, 201, 429]);
    let limited = limited.unwrap();
    assert_eq!(limited.body["error"], "rate_limited");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    eventually("the 429 in auth_events", WAIT, || async {
        hub.auth_events()
            .await
            .iter()
            .any(|(p, r, _)| p.as_deref() == Some("acme") && r == "rate_limited")
            .then_some(())
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn the_rate_limit_holds_across_two_ingress_processes() {
    let hub = Hub::start(Options {
        no_ingress: true,
        ..options().with(vec![
            ("RATE_LIMIT_CAPACITY", "3".into()),
            ("RATE_LIMIT_PER_SEC", "0.001".into()),
            ("HTTP_ADDR", "127.0.0.1:0".into()),
        ])
    })
    .await;
    let mut urls = Vec::new();
    let mut processes = Vec::new();
    for _ in 0..2 {
        let mut ingress = Ihub::spawn(&["ingress", "--integrations", "wavegate"], &hub.env());
        let line = ingress.wait_for_line("listening on").await;
        urls.push(line.rsplit(' ').next().unwrap().to_string());
        processes.push(ingress);
    }
    let mut accepted = 0;
    let mut limited = 0;
    for n in 0..8 {
        let url = &urls[n % 2];
        let body = order(&format!("EXT-M{n}"), &hub.callback_url("multi"));
        let status = answer(
            hub.http
                .post(format!("{url}/orders"))
                .header("x-partner-id", ACME.0)
                .header("x-partner-token", ACME.1)
                .json(&body),
        )
        .await
        .status;
        match status {
            201 => accepted += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted, limited), (3, 5), "one bucket for both processes");
    for ingress in processes {
        assert!(ingress.terminate().await);
    }
    hub.stop().await;
}

#[tokio::test]
async fn ticketing_failing_three_times_is_retried_into_one_ticketing_order() {
    let hub = Hub::start(options()).await;
    hub.ticketing().faults.fail_next(3, 500);
    let accepted = hub
        .post_order(
            ACME,
            None,
            &order("EXT-500", &hub.callback_url("retry")),
            &[],
        )
        .await;
    let id = id_of(&accepted);
    hub.wait_for_status(&id, "ota_callback_delivered").await;
    assert_eq!(hub.ticketing().orders().len(), 1, "one ticketing order");
    let attempts = hub.attempts("ticketing", &id).await;
    assert_eq!(
        attempts,
        [
            (1, Some(500)),
            (2, Some(500)),
            (3, Some(500)),
            (4, Some(201))
        ]
    );
    let detail = hub.get_as(ACME, &format!("/orders/{id}")).await.body;
    let codes: Vec<i64> = detail["ticketing_job"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 500, 201]);
    assert_eq!(detail["ticketing_job"]["attempt_count"], 4);
    hub.stop().await;
}

#[tokio::test]
async fn ticketing_refusing_blocks_the_order_into_the_dlq() {
    let hub = Hub::start(options()).await;
    hub.ticketing().faults.fail_next(1, 400);
    let accepted = hub
        .post_order(
            ACME,
            None,
            &order("EXT-400", &hub.callback_url("blocked")),
            &[],
        )
        .await;
    let id = id_of(&accepted);
    hub.wait_for_status(&id, "ticketing_blocked").await;
    let letters = dlq::list(&hub.bus, Some("deliver-ticketing"))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .original_subject
            .ends_with(".out.ticketing.order"),
        "{}",
        letters[0].original_subject
    );
    assert!(
        letters[0].error.contains("HTTP 400"),
        "{}",
        letters[0].error
    );
    assert_eq!(hub.attempts("ticketing", &id).await, [(1, Some(400))]);
    let detail = hub.get_as(ACME, &format!("/orders/{id}")).await.body;
    assert_eq!(detail["ticketing_job"]["status"], "blocked");
    assert!(detail["blocked_reason"].as_str().unwrap().contains("400"));
    assert!(hub.ota().for_order(&id).is_empty());

    // The admin view finds it.
    let admin = answer(
        hub.http
            .get(format!("{}/admin/orders?status=ticketing_blocked", hub.url))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_eq!(admin.body["orders"].as_array().unwrap().len(), 1);
    assert_eq!(admin.body["orders"][0]["id"], id.as_str());
    let unauthorized = answer(hub.http.get(format!("{}/admin/orders", hub.url))).await;
    assert_eq!(unauthorized.status, 401);
    let bad = answer(
        hub.http
            .get(format!("{}/admin/orders?status=lost", hub.url))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(bad.status, 400);

    // Ticketing fixed: a replay moves the order on.
    dlq::replay(&hub.bus, letters[0].seq).await.unwrap();
    hub.wait_for_status(&id, "ota_callback_delivered").await;
    hub.stop().await;
}

#[tokio::test]
async fn a_callback_endpoint_down_past_its_attempts_is_dead_lettered_then_replayed() {
    let hub = Hub::start(options()).await;
    hub.ota().faults.down();
    let accepted = hub
        .post_order(
            ACME,
            None,
            &order("EXT-DOWN", &hub.callback_url("down")),
            &[],
        )
        .await;
    let id = id_of(&accepted);
    hub.wait_for_status(&id, "ota_callback_blocked").await;
    let attempts = hub.attempts("ota_callback", &id).await;
    assert_eq!(attempts.len(), 5, "the whole schedule: {attempts:?}");
    assert!(attempts.iter().all(|(_, code)| *code == Some(503)));
    let letters = dlq::list(&hub.bus, Some("deliver-ota-callback"))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);

    // The partner is back: `ihub dlq replay` delivers it.
    hub.ota().faults.reset();
    let (ok, out) = Ihub::run(&["dlq", "replay", &letters[0].seq.to_string()], &hub.env()).await;
    assert!(ok, "{out}");
    hub.wait_for_status(&id, "ota_callback_delivered").await;
    assert_eq!(hub.ota().for_order(&id).len(), 1);
    assert!(dlq::list(&hub.bus, None).await.unwrap().is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn partners_see_only_their_own_orders() {
    let hub = Hub::start(options().with(vec![("TRUSTED_PROXIES", "127.0.0.1/32".into())])).await;
    let from_10 = [("x-forwarded-for", "10.0.0.5")];
    let mut acme_ids = Vec::new();
    for n in 0..3 {
        let body = order(&format!("EXT-A{n}"), &hub.callback_url("iso"));
        acme_ids.push(id_of(&hub.post_order(ACME, None, &body, &[]).await));
    }
    let globex = hub
        .post_order(
            GLOBEX,
            None,
            &order("EXT-G", &hub.callback_url("iso")),
            &from_10,
        )
        .await;
    let globex_id = id_of(&globex);
    for id in acme_ids.iter().chain([&globex_id]) {
        hub.wait_for_status(id, "ota_callback_delivered").await;
    }

    // Another partner's order is not found, not forbidden.
    let hidden = hub.get_as(ACME, &format!("/orders/{globex_id}")).await;
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    let request = hub
        .http
        .get(format!("{}/orders/{}", hub.url, acme_ids[0]))
        .header("x-partner-id", GLOBEX.0)
        .header("x-partner-token", GLOBEX.1)
        .header("x-forwarded-for", "10.0.0.5");
    assert_eq!(answer(request).await.status, 404);
    assert_eq!(hub.get_as(ACME, "/orders/not-a-uuid").await.status, 404);
    assert_eq!(
        hub.get_as((ACME.0, "bad-token"), "/orders").await.status,
        401
    );

    // Newest first, paginated with the cursor.
    let page = hub.get_as(ACME, "/orders?limit=2").await.body;
    let ids: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme_ids[2].as_str(), acme_ids[1].as_str()]);
    let next = page["next_before"].as_str().unwrap();
    let rest = hub
        .get_as(ACME, &format!("/orders?limit=2&before={next}"))
        .await
        .body;
    assert_eq!(rest["orders"].as_array().unwrap().len(), 1);
    assert_eq!(rest["orders"][0]["id"], acme_ids[0].as_str());
    assert!(rest["next_before"].is_null());
    hub.stop().await;
}

/// A hub whose callbacks must be https on 443 to public addresses (the production rules).
/// It runs no consumers: these tests look at the validation step only, and an order accepted
/// with a public callback URL must never be called back from a test.
async fn strict_hub(extra: Vec<(&'static str, String)>) -> Hub {
    let mut env = vec![
        ("ALLOW_PRIVATE_CALLBACKS", "0".into()),
        ("REQUIRE_HTTPS_CALLBACKS", "1".into()),
        ("ALLOWED_CALLBACK_PORTS", "443".into()),
    ];
    env.extend(extra);
    Hub::start(Options {
        no_consumers: true,
        ..options().with(env)
    })
    .await
}

#[tokio::test]
async fn callback_urls_that_could_reach_inside_are_refused() {
    let hub = strict_hub(vec![]).await;
    let cases = [
        ("http://93.184.216.34/cb", "https_required"),
        ("https://93.184.216.34:8443/cb", "port_not_allowed"),
        ("https://localhost/cb", "private_address"),
        ("https://127.0.0.1/cb", "private_address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "private_address",
        ),
        ("https://10.0.0.8/cb", "private_address"),
        ("https://192.168.1.1/cb", "private_address"),
        ("https://100.64.0.1/cb", "private_address"),
        ("https://[::1]/cb", "private_address"),
        ("https://[fd00::1]/cb", "private_address"),
        ("https://[::ffff:127.0.0.1]/cb", "private_address"),
        ("not a url", "invalid_url"),
        ("https://user:pw@93.184.216.34/cb", "invalid_url"),
    ];
    for (n, (url, rule)) in cases.iter().enumerate() {
        let body = order(&format!("EXT-S{n}"), url);
        let refused = hub.post_order(ACME, None, &body, &[]).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert_eq!(refused.body["error"], "invalid_callback_url", "{url}");
        assert_eq!(refused.body["details"][0], *rule, "{url}: {}", refused.body);
    }
    // A public address passes these rules (nothing is sent at accept time).
    let ok = hub
        .post_order(
            ACME,
            None,
            &order("EXT-OK", "https://93.184.216.34/cb"),
            &[],
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    hub.stop().await;

    let hub = strict_hub(vec![(
        "ALLOWED_CALLBACK_HOSTS",
        "partner.example.com".into(),
    )])
    .await;
    let refused = hub
        .post_order(ACME, None, &order("EXT-H", "https://93.184.216.34/cb"), &[])
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["details"][0], "host_not_allowed");
    hub.stop().await;
}

#[tokio::test]
async fn the_callback_consumer_checks_the_url_again_at_send_time() {
    // The ingress (in the test process) allows private callbacks; the consumer process does
    // not: the callback to 127.0.0.1 is refused at send time and never reaches the partner.
    let hub = Hub::start(Options {
        no_consumers: true,
        ..options()
    })
    .await;
    let mut env = hub.env();
    env.retain(|(k, _)| k != "ALLOW_PRIVATE_CALLBACKS");
    env.push(("ALLOW_PRIVATE_CALLBACKS".into(), "0".into()));
    let consumers = Ihub::spawn(&["consume", "--integrations", "wavegate"], &env);
    let accepted = hub
        .post_order(
            ACME,
            None,
            &order("EXT-SSRF", &hub.callback_url("ssrf")),
            &[],
        )
        .await;
    let id = id_of(&accepted);
    hub.wait_for_status(&id, "ota_callback_blocked").await;
    assert!(
        hub.ota().callbacks().is_empty(),
        "nothing reached the partner"
    );
    let detail = hub.get_as(ACME, &format!("/orders/{id}")).await.body;
    let error = detail["ota_callback_job"]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("refused at send time"), "{error}");
    assert!(consumers.terminate().await);
    hub.stop().await;
}

/// The value of metric `name` in Prometheus text: the sum over its series whose labels
/// include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, set) = series.split_once('{').unwrap_or((series, ""));
        if metric != name
            || !labels
                .iter()
                .all(|(k, v)| set.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    found
}

#[tokio::test]
async fn metrics_move_with_the_traffic() {
    let hub = Hub::start(options().with(vec![("METRICS_SAMPLE_MS", "100".into())])).await;
    let scrape = || async {
        hub.http
            .get(format!("{}/metrics", hub.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let counter =
        |text: &str, name: &str, labels: &[(&str, &str)]| metric(text, name, labels).unwrap_or(0.0);

    // One order retried once, then ticketed and called back; its key replayed and misused.
    hub.ticketing().faults.fail_next(1, 500);
    let body = order("EXT-METRICS", &hub.callback_url("metrics"));
    let accepted = hub.post_order(ACME, Some("metrics-key"), &body, &[]).await;
    let id = id_of(&accepted);
    hub.wait_for_status(&id, "ota_callback_delivered").await;
    assert_eq!(
        hub.post_order(ACME, Some("metrics-key"), &body, &[])
            .await
            .status,
        201,
        "the replay"
    );
    let other = order("EXT-METRICS-2", &hub.callback_url("metrics"));
    assert_eq!(
        hub.post_order(ACME, Some("metrics-key"), &other, &[])
            .await
            .status,
        409
    );

    let after = eventually(
        "the sampler to report the durables",
        Duration::from_secs(10),
        || async {
            let text = scrape().await;
            metric(
                &text,
                "ihub_jetstream_consumer_pending",
                &[("consumer", "deliver-ticketing")],
            )
            .is_some()
            .then_some(text)
        },
    )
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        counter(&after, name, labels) - counter(&before, name, labels)
    };
    let route = [
        ("method", "POST"),
        ("route", "/orders"),
        ("status_class", "2xx"),
    ];
    assert!(moved("ihub_http_requests_total", &route) >= 2.0);
    assert!(moved("ihub_http_request_duration_seconds_count", &route) >= 2.0);
    assert!(
        moved(
            "ihub_http_requests_total",
            &[("route", "/orders"), ("status_class", "4xx")]
        ) >= 1.0
    );
    let ticketing = [("consumer", "deliver-ticketing")];
    assert!(
        moved("ihub_consumer_naks_total", &ticketing) >= 1.0,
        "{after}"
    );
    assert!(moved("ihub_consumer_nak_delay_seconds_count", &ticketing) >= 1.0);
    assert!(moved("ihub_consumer_acks_total", &ticketing) >= 1.0);
    assert!(moved("ihub_consumer_handle_duration_seconds_count", &ticketing) >= 2.0);
    assert!(
        moved(
            "ihub_partner_calls_total",
            &[("target", "ticketing"), ("outcome", "retry")]
        ) >= 1.0
    );
    assert!(
        moved(
            "ihub_partner_calls_total",
            &[("target", "ticketing"), ("outcome", "success")]
        ) >= 1.0
    );
    assert!(moved("ihub_idempotency_repeats_total", &[("outcome", "replay")]) >= 1.0);
    assert!(moved("ihub_idempotency_repeats_total", &[("outcome", "conflict")]) >= 1.0);
    assert!(
        metric(
            &after,
            "ihub_breaker_state",
            &[("target", "deliver-ticketing")]
        )
        .is_some()
    );
    assert!(metric(&after, "ihub_consumer_in_flight", &ticketing).is_some());
    // Labels stay bounded: no order id, key or partner token in any series.
    assert!(!after.contains(&id) && !after.contains("metrics-key") && !after.contains(ACME.1));
    hub.stop().await;
}

#[tokio::test]
async fn a_consumers_breaker_reports_its_changes_for_ihub_status() {
    let hub = Hub::start(options().with(vec![
        ("BREAKER_FAILURES", "1".into()),
        ("BREAKER_OPEN_MS", "200".into()),
    ]))
    .await;
    hub.ticketing().faults.fail_next(1, 500);
    let accepted = hub
        .post_order(
            ACME,
            None,
            &order("EXT-BREAKER", &hub.callback_url("breaker")),
            &[],
        )
        .await;
    hub.wait_for_status(&id_of(&accepted), "ota_callback_delivered")
        .await;
    // Opened by the failure, closed by the retry that got through: both reported.
    let (ok, out, err) =
        crate::support::process::Ihub::run_full(&["status", "--json"], &hub.env()).await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(out.trim()).unwrap();
    let reported: Vec<&Value> = status["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b[0].as_str()
                .unwrap()
                .starts_with("consumer.deliver-ticketing.")
        })
        .collect();
    assert_eq!(reported.len(), 1, "{status}");
    assert!(
        reported[0][1]
            .as_str()
            .unwrap()
            .starts_with("closed since "),
        "{status}"
    );
    hub.stop().await;
}
