//! NewStore → Hail end to end: signed webhooks → ingress → NATS → stage → Hail mock.

use std::time::Duration;

use serde_json::{Value, json};

use ihub::config::Secret;
use ihub::integrations::newstore::domain::EventKind;
use ihub::integrations::newstore::mocks::hail::HailMock;
use ihub::integrations::newstore::{signature, simulate};
use ihub::mocks::Mocked;

use crate::support::{Hub, Options, eventually};

const WAIT: Duration = Duration::from_secs(20);
pub const SECRET: &str = "test-newstore-secret";
const HAIL_KEY: &str = "test-hail-key";
const ADMIN: &str = "test-admin-token";

pub fn options() -> Options {
    Options::new(
        "newstore",
        &[
            ("NEWSTORE_WEBHOOK_SECRET", SECRET),
            ("HAIL_API_KEY", HAIL_KEY),
            ("ADMIN_TOKEN", ADMIN),
            ("NEWSTORE_SIMULATE", "1"),
            ("NEWSTORE_HAIL_RETRY_BASE_MS", "20"),
            ("NEWSTORE_HAIL_RETRY_MAX_MS", "100"),
            ("NEWSTORE_HAIL_RETRY_ATTEMPTS", "4"),
        ],
    )
}

impl Hub {
    fn hail(&self) -> Mocked<HailMock> {
        self.mock()
    }

    /// POSTs `event` signed with `secret` to `path`.
    async fn webhook_to(&self, path: &str, secret: &str, event: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(event).unwrap();
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(&Secret::new(secret), &raw),
            )
            .body(raw)
            .send()
            .await
            .expect("the ingress answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn webhook(&self, event: &Value) -> (u16, Value) {
        self.webhook_to("/webhooks/newstore", SECRET, event).await
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.get_with_bearer(path, ADMIN).await
    }

    async fn event_status(&self, id: &str) -> Option<String> {
        let (status, body) = self.admin_get(&format!("/newstore/events/{id}")).await;
        (status == 200).then(|| body["status"].as_str().unwrap_or_default().to_string())
    }

    async fn wait_for_event(&self, id: &str, status: &str) -> Value {
        eventually(&format!("event {id} to be {status}"), WAIT, || async {
            let (code, body) = self.admin_get(&format!("/newstore/events/{id}")).await;
            (code == 200 && body["status"] == status).then_some(body)
        })
        .await
    }

    /// The transaction ids Hail received, in arrival order.
    fn hail_ids(&self) -> Vec<String> {
        self.hail()
            .received()
            .iter()
            .map(|r| r.idempotency_key.clone())
            .collect()
    }
}

fn event(kind: EventKind, order: &str, n: u64) -> Value {
    simulate::event(kind, order, n)
}

#[tokio::test]
async fn a_completed_order_becomes_one_hail_sale() {
    let hub = Hub::start(options()).await;
    let completed = event(EventKind::OrderCompleted, "ord-1", 0);
    let id = completed["id"].as_str().unwrap().to_string();
    let (status, answer) = hub.webhook(&completed).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"event_id": id, "status": "accepted"}));
    let done = hub.wait_for_event(&id, "delivered").await;
    assert_eq!(done["hail_transaction_id"], "ord-1-sale");
    assert_eq!(done["attempts"][0]["status_code"], 201);

    let received = hub.hail().received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].idempotency_key, "ord-1-sale");
    let sale = &received[0].body;
    assert_eq!(sale["type"], "sale");
    assert_eq!(sale["source"]["event_id"], id.as_str());
    assert_eq!(sale["source"]["order_id"], "ord-1");
    assert!(
        received[0].traceparent.is_some(),
        "the trace goes on to Hail"
    );

    // The same event again: 202 duplicate, nothing sent twice.
    let (status, again) = hub.webhook(&completed).await;
    assert_eq!((status, again["status"].as_str()), (202, Some("duplicate")));
    hub.assert_events_match_schemas().await;
    assert_eq!(hub.hail_ids(), ["ord-1-sale"]);
    hub.stop().await;
}

#[tokio::test]
async fn bad_webhooks_get_their_4xx_and_change_nothing() {
    let hub = Hub::start(options()).await;
    let good = event(EventKind::OrderCompleted, "ord-bad", 0);

    let (status, body) = hub.webhook_to("/webhooks/newstore", "wrong", &good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let response = hub
        .http
        .post(format!("{}/webhooks/newstore", hub.url))
        .body("{")
        .header(
            signature::SIGNATURE_HEADER,
            signature::sign(&Secret::new(SECRET), b"{"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let mut missing = good.clone();
    missing["payload"]["items"][0]
        .as_object_mut()
        .unwrap()
        .remove("quantity");
    let (status, body) = hub.webhook(&missing).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"].to_string().contains("/items/0"), "{body}");

    let mut decimals = good.clone();
    decimals["payload"]["items"][0]["price"] = json!("29.905");
    let (status, body) = hub.webhook(&decimals).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["details"].to_string().contains("/items/0/price"),
        "{body}"
    );

    let (status, _) = hub
        .webhook_to("/webhooks/newstore/nobody", SECRET, &good)
        .await;
    assert_eq!(status, 404);
    assert_eq!(hub.messages_in("INBOUND").await, 0, "nothing was published");
    hub.stop().await;
}

#[tokio::test]
async fn an_opened_order_is_recorded_and_an_irrelevant_event_ignored() {
    let hub = Hub::start(options()).await;
    let mut other = event(EventKind::OrderOpened, "ord-ign", 0);
    other["name"] = json!("fulfillment.shipped");
    let id = other["id"].as_str().unwrap().to_string();
    let (status, answer) = hub.webhook(&other).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
    hub.wait_for_event(&id, "ignored").await;
    // order.opened is recorded; nothing goes to Hail.
    let opened = event(EventKind::OrderOpened, "ord-ign", 1);
    let (status, answer) = hub.webhook(&opened).await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")));
    hub.wait_for_event(opened["id"].as_str().unwrap(), "recorded")
        .await;
    assert!(hub.hail_ids().is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn a_return_before_its_sale_waits_and_goes_after_it() {
    let hub = Hub::start(options()).await;
    let ret = event(EventKind::ReturnProcessed, "ord-ooo", 1);
    let ret_id = ret["id"].as_str().unwrap().to_string();
    assert_eq!(hub.webhook(&ret).await.0, 202);
    hub.wait_for_event(&ret_id, "parked").await;
    let (_, order) = hub.admin_get("/newstore/orders/ord-ooo").await;
    assert_eq!(order["parked"], 1, "{order}");
    assert!(hub.hail_ids().is_empty(), "nothing before the sale");

    // Another order is not held up by this one.
    let other = event(EventKind::OrderCompleted, "ord-free", 0);
    assert_eq!(hub.webhook(&other).await.0, 202);
    hub.wait_for_event(other["id"].as_str().unwrap(), "delivered")
        .await;

    let completed = event(EventKind::OrderCompleted, "ord-ooo", 0);
    assert_eq!(hub.webhook(&completed).await.0, 202);
    hub.wait_for_event(&ret_id, "delivered").await;
    let ids: Vec<String> = hub
        .hail_ids()
        .into_iter()
        .filter(|id| id.starts_with("ord-ooo"))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "ord-ooo-sale");
    assert!(ids[1].starts_with("ord-ooo-return-"), "{ids:?}");
    let (_, order) = hub.admin_get("/newstore/orders/ord-ooo").await;
    assert_eq!(order["parked"], 0, "{order}");
    hub.stop().await;
}

#[tokio::test]
async fn a_cancellation_stops_an_unsent_sale_and_voids_a_sent_one() {
    let hub = Hub::start(options()).await;
    // Cancelled first: the late completion is recorded as cancelled, nothing is sent.
    let cancelled = event(EventKind::OrderCancelled, "ord-c1", 1);
    assert_eq!(hub.webhook(&cancelled).await.0, 202);
    hub.wait_for_event(cancelled["id"].as_str().unwrap(), "recorded")
        .await;
    let late = event(EventKind::OrderCompleted, "ord-c1", 0);
    assert_eq!(hub.webhook(&late).await.0, 202);
    hub.wait_for_event(late["id"].as_str().unwrap(), "cancelled")
        .await;

    // Sold, then cancelled: the void follows the sale.
    let completed = event(EventKind::OrderCompleted, "ord-c2", 0);
    assert_eq!(hub.webhook(&completed).await.0, 202);
    hub.wait_for_event(completed["id"].as_str().unwrap(), "delivered")
        .await;
    let cancel = event(EventKind::OrderCancelled, "ord-c2", 1);
    assert_eq!(hub.webhook(&cancel).await.0, 202);
    hub.wait_for_event(cancel["id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(hub.hail_ids(), ["ord-c2-sale", "ord-c2-void"]);
    hub.stop().await;
}

#[tokio::test]
async fn hail_failures_are_retried_and_a_refusal_is_replayed_from_the_dlq() {
    let hub = Hub::start(options()).await;
    hub.hail().faults.fail_next(2, 503);
    let first = event(EventKind::OrderCompleted, "ord-f1", 0);
    assert_eq!(hub.webhook(&first).await.0, 202);
    let done = hub
        .wait_for_event(first["id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 3, "{done}");
    assert_eq!(hub.hail_ids(), ["ord-f1-sale"]);

    // A 4xx is permanent: blocked, dead-lettered at once.
    hub.hail().faults.fail_next(1, 400);
    let second = event(EventKind::OrderCompleted, "ord-f2", 0);
    let id = second["id"].as_str().unwrap().to_string();
    assert_eq!(hub.webhook(&second).await.0, 202);
    hub.wait_for_event(&id, "blocked").await;
    let letters = eventually("the dead letter", WAIT, || async {
        let letters = ihub::runtime::dlq::list(&hub.bus, Some("deliver-hail"))
            .await
            .unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    ihub::runtime::dlq::replay(&hub.bus, letters[0].seq)
        .await
        .unwrap();
    hub.wait_for_event(&id, "delivered").await;
    assert_eq!(hub.hail_ids(), ["ord-f1-sale", "ord-f2-sale"]);
    hub.stop().await;
}

#[tokio::test]
async fn tenants_have_their_own_secret_and_stores() {
    let sale = event(EventKind::OrderCompleted, "ord-eu", 0);
    let store = sale["payload"]["store_id"].as_str().unwrap().to_string();
    // No hail_url: the tenant sends to HAIL_URL, which the test wires to the Hail mock.
    let tenants = json!([{
        "tenant": "eu", "webhook_secret": "eu-secret", "hail_api_key": HAIL_KEY,
        "store_map": {store.clone(): "HAIL-EU-1"}
    }]);
    let hub =
        Hub::start(options().with(vec![("NEWSTORE_TENANTS_JSON", tenants.to_string())])).await;
    let (status, _) = hub.webhook_to("/webhooks/newstore/eu", SECRET, &sale).await;
    assert_eq!(
        status, 401,
        "the default tenant's secret does not sign for eu"
    );
    let (status, _) = hub
        .webhook_to("/webhooks/newstore/eu", "eu-secret", &sale)
        .await;
    assert_eq!(status, 202);
    let id = sale["id"].as_str().unwrap();
    eventually("the eu sale", WAIT, || async {
        let (code, body) = hub
            .admin_get(&format!("/newstore/events/{id}?tenant=eu"))
            .await;
        (code == 200 && body["status"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(hub.event_status(id).await, None, "not the default tenant's");
    let received = hub.hail().received();
    assert_eq!(received[0].body["store_id"], "HAIL-EU-1");
    hub.stop().await;
}

#[tokio::test]
async fn simulate_sends_a_signed_event_through_the_same_path() {
    let hub = Hub::start(options()).await;
    let response = hub
        .http
        .post(format!("{}/webhooks/newstore/simulate", hub.url))
        .json(&json!({"name": "order.completed", "order_id": "sim-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["answer"]["event_id"].as_str().unwrap().to_string();
    hub.wait_for_event(&id, "delivered").await;
    assert_eq!(hub.hail_ids(), ["sim-1-sale"]);
    hub.stop().await;

    let hub = Hub::start(options().with(vec![("NEWSTORE_SIMULATE", "0".into())])).await;
    let response = hub
        .http
        .post(format!("{}/webhooks/newstore/simulate", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    hub.stop().await;
}

#[tokio::test]
async fn returns_of_every_unit_add_up_to_the_sale() {
    // An order whose first line has exactly two units: two returns of one unit each.
    let order_id = (0..100)
        .map(|n| format!("ord-two-{n}"))
        .find(|id| simulate::order(id).items[0].quantity == 2)
        .expect("a simulated order with two units on its first line");
    let hub = Hub::start(options()).await;
    let completed = event(EventKind::OrderCompleted, &order_id, 0);
    assert_eq!(hub.webhook(&completed).await.0, 202);
    hub.wait_for_event(completed["id"].as_str().unwrap(), "delivered")
        .await;
    for n in [1, 2] {
        let ret = event(EventKind::ReturnProcessed, &order_id, n);
        assert_eq!(hub.webhook(&ret).await.0, 202);
        hub.wait_for_event(ret["id"].as_str().unwrap(), "delivered")
            .await;
    }
    let received = hub.hail().received();
    assert_eq!(received.len(), 3);
    let sale_line = &received[0].body["lines"][0];
    for field in ["discount", "tax", "total"] {
        let returned: i64 = received[1..]
            .iter()
            .map(|r| r.body["lines"][0][field].as_i64().unwrap())
            .sum();
        assert_eq!(returned, sale_line[field].as_i64().unwrap(), "{field}");
    }
    hub.stop().await;
}

/// Events of many orders at once, each order's three in whatever order they arrive and
/// whatever batches the stage decides them in: every event ends in a final status, and each
/// order is consistent at Hail (the sale first; a void and a return exactly when the sale
/// went out; nothing twice).
#[tokio::test]
async fn events_arriving_together_keep_every_order_consistent() {
    let hub = Hub::start(options()).await;
    let orders: Vec<String> = (0..12).map(|n| format!("ord-burst-{n}")).collect();
    let mut events = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let mut kinds = vec![
            EventKind::OrderCompleted,
            EventKind::ReturnProcessed,
            EventKind::OrderCancelled,
        ];
        kinds.rotate_left(n % 3);
        events.extend(kinds.into_iter().map(|kind| event(kind, order, n as u64)));
    }
    let answers = futures::future::join_all(events.iter().map(|e| hub.webhook(e))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
    }
    for e in &events {
        let id = e["id"].as_str().unwrap();
        eventually(
            &format!(
                "event {id} ({}, {}) to settle",
                e["name"], e["payload"]["id"]
            ),
            WAIT,
            || async {
                let (_, body) = hub.admin_get(&format!("/newstore/events/{id}")).await;
                eprintln!("DBG {id} {body}");
                hub.event_status(id).await.filter(|s| {
                    ["delivered", "recorded", "cancelled", "blocked"].contains(&s.as_str())
                })
            },
        )
        .await;
    }
    let received = hub.hail_ids();
    for order in &orders {
        let ids: Vec<&String> = received
            .iter()
            .filter(|id| id.starts_with(&format!("{order}-")))
            .collect();
        let count = |suffix: &str| ids.iter().filter(|id| id.contains(suffix)).count();
        let (sale, void, ret) = (count("-sale"), count("-void"), count("-return-"));
        assert!(sale <= 1 && void <= 1 && ret <= 1, "{order}: {ids:?}");
        assert_eq!(
            void, sale,
            "{order}: a void exactly when the sale went out: {ids:?}"
        );
        assert_eq!(
            ret, sale,
            "{order}: a return exactly when the sale went out: {ids:?}"
        );
        if sale == 1 {
            assert_eq!(
                *ids[0],
                format!("{order}-sale"),
                "{order}: the sale first: {ids:?}"
            );
        }
    }
    hub.stop().await;
}

/// The value of the Prometheus series `name` whose labels include every one of `labels`
/// (summed when several match), in `text`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_partner_calls_and_consumed_messages() {
    let hub = Hub::start(options()).await;
    let scrape = || async {
        let response = hub
            .http
            .get(format!("{}/metrics", hub.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    // Other tests in this process share the registry: compare with what was there before.
    let before = scrape().await;
    let requests = [("route", "/webhooks/newstore"), ("status_class", "2xx")];
    let hail = [("target", "hail"), ("outcome", "success")];
    let acked = [("consumer", "deliver-hail"), ("outcome", "ack")];
    let sale = event(EventKind::OrderCompleted, "ord-metrics", 0);
    assert_eq!(hub.webhook(&sale).await.0, 202);
    hub.wait_for_event(sale["id"].as_str().unwrap(), "delivered")
        .await;
    let after = eventually("the delivery to be counted", WAIT, || async {
        let text = scrape().await;
        (series(&text, "ihub_consumer_messages_total", &acked)
            > series(&before, "ihub_consumer_messages_total", &acked))
        .then_some(text)
    })
    .await;
    for (name, labels) in [
        ("ihub_http_requests_total", &requests[..]),
        ("ihub_partner_calls_total", &hail[..]),
    ] {
        assert!(
            series(&after, name, labels) >= series(&before, name, labels) + 1.0,
            "{name} {labels:?} did not move:\n{after}"
        );
    }
    assert!(
        after.contains("ihub_http_request_duration_seconds_bucket"),
        "{after}"
    );
    assert!(!after.contains("ord-metrics"), "no ids in labels");
    hub.stop().await;
}
