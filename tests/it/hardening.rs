//! Input and outages as an attacker and an operator met them (issue 8): each defect found, as
//! a test that failed before its fix; then a storm of malformed requests over every route.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::outage::{NatsServer, Proxy};
use crate::support::{Hub, Options, eventually};
use crate::wallet::{self, debit_body};
use crate::wavegate::{self, ADMIN_TOKEN, PARTNERS};

const WAIT: Duration = Duration::from_secs(20);

fn operator_callback(transaction_id: &str) -> Value {
    json!({
        "event": "transaction.completed", "transaction_id": transaction_id,
        "external_transaction_id": "x-1", "player_id": "p1", "type": "withdraw",
        "amount": "1.00", "currency": "EUR", "occurred_at": "2026-01-01T00:00:00Z"
    })
}

/// POSTs raw bytes (what a signed helper cannot send: broken JSON, repeated keys).
async fn post_raw(
    hub: &Hub,
    path: &str,
    body: &'static [u8],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = hub.http.post(format!("{}{path}", hub.url)).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the ingress answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn get(hub: &Hub, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = hub.http.get(format!("{}{path}", hub.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the ingress answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

fn acme() -> [(&'static str, &'static str); 2] {
    [
        ("x-partner-id", PARTNERS[0].0),
        ("x-partner-token", PARTNERS[0].1),
    ]
}

/// Defect 1: `\r\n` in an id went into the `Nats-Msg-Id` header and panicked the task.
#[tokio::test]
async fn line_breaks_in_operator_callback_ids_are_refused_not_a_crash() {
    let hub = Hub::start(wallet::options()).await;
    for (field, value) in [
        ("transaction_id", "op_1\r\nX-Evil: 1"),
        ("event", "transaction.completed\n"),
        ("transaction_id", "op_1\r"),
    ] {
        let mut callback = operator_callback("op_1");
        callback[field] = json!(value);
        let (status, body) = hub
            .post_signed("/webhooks/incoming", None, &callback, &[])
            .await;
        assert_eq!(status, 422, "{field}={value:?}: {body}");
        assert_eq!(body["error"], "invalid_body");
    }
    let (status, _) = hub
        .post_signed("/webhooks/incoming", None, &operator_callback("op_2"), &[])
        .await;
    assert_eq!(status, 202, "the ingress still takes callbacks");
    assert_eq!(hub.messages_in("INBOUND").await, 1, "only the good one");
    hub.stop().await;
}

/// Defect 2: a NUL was accepted with 201, then retried for minutes against Postgres.
#[tokio::test]
async fn text_postgres_cannot_store_is_refused_at_the_edge() {
    let hub = Hub::start(wavegate::options()).await;
    let callback = format!(
        "{}/callbacks/nul",
        hub.mock::<ihub::integrations::wavegate::mocks::ota::OtaMock>()
            .url
    );
    for buyer in [
        json!({"name": "A\u{0}B"}),
        json!({"note": "\u{1b}[2J"}),
        json!({"n\u{0}": 1}),
    ] {
        let order = json!({
            "external_order_id": "EXT-NUL", "callback_url": callback,
            "items": [{"sku": "A", "qty": 1, "unit_price_minor": 100, "currency": "THB"}],
            "buyer": buyer,
        });
        let (status, body) = post_json_as_acme(&hub, &order).await;
        assert_eq!(status, 400, "{buyer}");
        assert_eq!(body["error"], "invalid_text", "{body}");
        assert!(
            body["message"].as_str().unwrap().starts_with("/buyer/"),
            "{body}"
        );
    }
    let (status, listed) = get(&hub, "/orders", &acme()).await;
    assert_eq!(
        (status, listed["orders"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(hub.messages_in("INBOUND").await, 0);
    hub.stop().await;

    let hub = Hub::start(wallet::options()).await;
    let mut callback = operator_callback("op_3");
    callback["occurred_at"] = json!("2026-01-01\u{0}");
    let (status, body) = hub
        .post_signed("/webhooks/incoming", None, &callback, &[])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_text"))
    );
    assert_eq!(hub.messages_in("INBOUND").await, 0);
    hub.stop().await;
}

/// Defect 3: an out-of-range filter reached the database and came back as 503 "retry".
#[tokio::test]
async fn out_of_range_queries_are_400() {
    let hub = Hub::start(wavegate::options()).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    for query in [
        "stuck_secs=9223372036854775807",
        "stuck_secs=-1",
        "since=-100000-01-01T00:00:00Z",
        "limit=abc",
    ] {
        let (status, body) = get(
            &hub,
            &format!("/admin/orders?{query}"),
            &[("authorization", &admin)],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{query}: {body}"
        );
    }
    for query in [
        "limit=abc",
        "before=not-a-uuid",
        "limit=99999999999999999999",
    ] {
        let (status, body) = get(&hub, &format!("/orders?{query}"), &acme()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{query}: {body}"
        );
    }
    let (status, _) = get(
        &hub,
        "/admin/orders?stuck_secs=3600",
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, 200);
    hub.stop().await;
}

/// Defect 7: ids made of whitespace, zero-width or bidi-override characters, and repeated keys.
#[tokio::test]
async fn player_ids_have_a_character_set_and_keys_come_once() {
    let hub = Hub::start(wallet::options()).await;
    for player in [
        " ",
        "p 1",
        "\u{200b}",
        "p\u{200b}1",
        "p\u{202e}1",
        "\u{2066}p1",
        "\t",
        "../p1",
        "p1/x",
        "é",
    ] {
        let (status, body) = hub
            .post_signed(
                "/wallet/debit",
                Some("k-ids"),
                &debit_body(player, 100, "EUR"),
                &[],
            )
            .await;
        assert_eq!(status, 422, "{player:?}: {body}");
        assert!(
            body["details"].to_string().contains("player_id"),
            "{player:?}: {body}"
        );
    }
    let (status, body) = post_raw(
        &hub,
        "/wallet/debit",
        br#"{"player_id":"p1","amount":100,"currency":"EUR","amount":100000}"#,
        &[("idempotency-key", "k-dup")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("\"amount\" appears twice")
    );
    assert_eq!(hub.messages_in("INBOUND").await, 0, "nothing was published");
    hub.stop().await;
}

/// Defect 8: with private callbacks allowed, the metadata address was allowed and called.
/// Asserted at the validation step: nothing is ever sent there.
#[tokio::test]
async fn metadata_and_link_local_callbacks_are_refused_whatever_the_setting() {
    for setting in ["loopback", "1"] {
        let hub =
            Hub::start(wavegate::options().with(vec![("ALLOW_PRIVATE_CALLBACKS", setting.into())]))
                .await;
        for url in [
            "http://169.254.169.254/latest/meta-data/iam/",
            "http://[fe80::1]:8080/cb",
            "http://100.100.100.200/latest/meta-data/",
        ] {
            let order = json!({
                "external_order_id": "EXT-MD", "callback_url": url,
                "items": [{"sku": "A", "qty": 1, "unit_price_minor": 100, "currency": "THB"}],
            });
            let (status, body) = post_json_as_acme(&hub, &order).await;
            assert_eq!(status, 400, "{setting} {url}");
            assert_eq!(
                body["details"][0], "private_address",
                "{setting} {url}: {body}"
            );
        }
        if setting == "loopback" {
            let order = json!({
                "external_order_id": "EXT-LAN", "callback_url": "http://10.0.0.8/cb",
                "items": [{"sku": "A", "qty": 1, "unit_price_minor": 100, "currency": "THB"}],
            });
            let (status, body) = post_json_as_acme(&hub, &order).await;
            assert_eq!(
                (status, body["details"][0].as_str()),
                (400, Some("private_address"))
            );
        }
        assert_eq!(hub.messages_in("INBOUND").await, 0);
        hub.stop().await;
    }
}

async fn post_json_as_acme(hub: &Hub, body: &Value) -> (u16, Value) {
    let response = hub
        .http
        .post(format!("{}/orders", hub.url))
        .header("x-partner-id", PARTNERS[0].0)
        .header("x-partner-token", PARTNERS[0].1)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The router's own refusals are JSON like every other, and the body limit is enforced.
#[tokio::test]
async fn not_found_wrong_method_and_too_large_are_json() {
    let hub = Hub::start(wallet::options()).await;
    let (status, body) = get(&hub, "/no/such/route", &[]).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let response = hub
        .http
        .delete(format!("{}/wallet/debit", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    let big = vec![b' '; ihub::ingress::BODY_LIMIT + 1];
    let response = hub
        .http
        .post(format!("{}/wallet/debit", hub.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");
    hub.stop().await;
}

/// Defect 6: with NATS down, requests hung 12–21 s. Now: 503 with `Retry-After` at once,
/// `/ready` says why, and once NATS is back the same request goes through, no restart.
#[tokio::test]
async fn with_nats_down_the_ingress_refuses_at_once_and_recovers_by_itself() {
    let mut nats = NatsServer::start().await;
    let hub = Hub::start(wallet::options().with(vec![("NATS_URL", nats.url())])).await;
    let (status, first) = hub
        .transact("debit", "k-before", &debit_body("p1", 100, "EUR"))
        .await;
    assert_eq!(
        (status, first["status"].as_str()),
        (200, Some("completed")),
        "{first}"
    );

    nats.kill().await;
    let ready = eventually("/ready to notice NATS is gone", WAIT, || async {
        let (status, body) = get(&hub, "/ready", &[]).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(ready["nats"], "unreachable");
    assert!(
        ready["reasons"][0].as_str().unwrap().contains("NATS"),
        "{ready}"
    );

    // A client that would give up after 10 s gets its answer: the refusal, not a hang.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = debit_body("p1", 200, "EUR");
    let mut request = impatient
        .post(format!("{}/wallet/debit", hub.url))
        .header("idempotency-key", "k-during")
        .json(&body);
    for (name, value) in hub.signer().headers_for(&body) {
        request = request.header(name, value);
    }
    let refused = request
        .send()
        .await
        .expect("an answer before the client gives up");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"], "unavailable");

    nats.restart().await;
    let done = eventually(
        "the retried debit to complete once NATS is back",
        WAIT,
        || async {
            let (status, answer) = hub.transact("debit", "k-during", &body).await;
            (status == 200).then_some(answer)
        },
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        hub.operator()
            .transactions_for(done["transaction_id"].as_str().unwrap())
            .len(),
        1
    );
    let (status, _) = get(&hub, "/ready", &[]).await;
    assert_eq!(status, 200);
    hub.stop().await;
    drop(nats);
}

/// Defect 5: a Postgres outage counted against the operator's breaker, which then held
/// deliveries back after the database was up. Now the message is held and retried in place,
/// the breaker (one failure opens it here, for ten minutes) never opens.
#[tokio::test]
async fn a_database_outage_is_not_the_partners_failure() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let hub = Hub::start(Options {
        database_addr: Some(proxy.addr.to_string()),
        ..wallet::options().with(vec![
            ("BREAKER_FAILURES", "1".into()),
            ("BREAKER_OPEN_MS", "600000".into()),
        ])
    })
    .await;
    let operator = hub.operator();
    operator.faults.latency(Duration::from_millis(1500));
    let (status, accepted) = hub
        .post_signed(
            "/wallet/debit",
            Some("k-db"),
            &debit_body("p1", 300, "EUR"),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["transaction_id"].as_str().unwrap().to_string();

    // The operator has the call (and answers it 1.5 s later): the database goes away now,
    // before the outcome can be recorded.
    eventually("the operator call", WAIT, || async {
        (operator.faults.requests() >= 1).then_some(())
    })
    .await;
    proxy.cut();
    operator.faults.reset();
    // Held, not parked behind an open breaker: the delivery keeps trying.
    eventually(
        "the delivery to try again through the outage",
        WAIT,
        || async { (operator.faults.requests() >= 2).then_some(()) },
    )
    .await;
    proxy.restore().await;
    eventually(
        "the debit to complete once the database is back",
        WAIT,
        || async {
            (hub.transaction_status(&id).await.as_deref() == Some("completed")).then_some(())
        },
    )
    .await;
    assert_eq!(operator.transactions_for(&id).len(), 1, "booked once");
    hub.stop().await;
}

/// Every route, a few thousand malformed requests: no 5xx, every refusal a JSON body, the
/// ingress alive, and ordinary traffic afterwards booked exactly once each.
#[tokio::test]
async fn a_storm_of_malformed_requests_changes_nothing() {
    let mut options = wallet::options();
    options.integrations.push("wavegate");
    options.env.extend(wavegate::options().env);
    options.integrations.push("newstore");
    options.env.extend(crate::newstore::options().env);
    let hub = Hub::start(options).await;
    let storm = crate::storm::requests(&hub);
    let total = storm.len();
    let answers: Vec<(String, u16, Option<Value>)> = futures::stream::iter(storm)
        .map(|(what, request)| async move {
            let response = request
                .send()
                .await
                .unwrap_or_else(|err| panic!("{what}: no answer ({err})"));
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.ok();
            (what, status, body)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(total >= 2000, "{total} requests");
    let server_errors: Vec<_> = answers.iter().filter(|(_, s, _)| *s >= 500).collect();
    assert!(server_errors.is_empty(), "5xx: {server_errors:?}");
    for (what, status, body) in &answers {
        if *status >= 400 {
            let error = body.as_ref().and_then(|b| b["error"].as_str());
            assert!(
                error.is_some(),
                "{what}: {status} without a JSON error body"
            );
        }
    }
    eprintln!(
        "storm: {total} requests, {} refused (4xx), {} accepted",
        answers
            .iter()
            .filter(|(_, s, _)| (400..500).contains(s))
            .count(),
        answers.iter().filter(|(_, s, _)| *s < 300).count(),
    );

    let (status, _) = get(&hub, "/health", &[]).await;
    assert_eq!(status, 200);
    for n in 0..10 {
        let (status, done) = hub
            .transact(
                "debit",
                &format!("after-{n}"),
                &debit_body(&format!("after-{n}"), 10, "EUR"),
            )
            .await;
        assert_eq!(
            (status, done["status"].as_str()),
            (200, Some("completed")),
            "{done}"
        );
        let id = done["transaction_id"].as_str().unwrap();
        assert_eq!(hub.operator().transactions_for(id).len(), 1);
    }
    hub.stop().await;
}
