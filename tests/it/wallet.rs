//! The wallet hub end to end: RGS → ingress → NATS → consumers → operator mock → RGS mock.

use std::time::Duration;

use serde_json::{Value, json};

use ihub::integrations::wallet::mocks::operator::OperatorMock;
use ihub::integrations::wallet::mocks::rgs::RgsMock;
use ihub::mocks::Mocked;
use ihub::signatures::TimestampedHmac;

use crate::support::process::Ihub;
use crate::support::{Hub, Options, eventually};

const WAIT: Duration = Duration::from_secs(15);

pub const SECRET: &str = "test-wallet-secret";
pub const RECONCILIATION_TOKEN: &str = "test-reconciliation-token";

/// A hub running the wallet, its partners retried within milliseconds.
pub fn options() -> Options {
    Options::new(
        "wallet",
        &[
            ("WALLET_HMAC_SECRET", SECRET),
            ("RECONCILIATION_TOKEN", RECONCILIATION_TOKEN),
            ("OPERATOR_RETRY_BASE_MS", "20"),
            ("OPERATOR_RETRY_MAX_MS", "100"),
            ("OPERATOR_RETRY_ATTEMPTS", "5"),
            ("RGS_RETRY_BASE_MS", "20"),
            ("RGS_RETRY_MAX_MS", "100"),
            ("RGS_RETRY_ATTEMPTS", "4"),
        ],
    )
}

pub fn debit_body(player: &str, amount: i64, currency: &str) -> Value {
    json!({"player_id": player, "amount": amount, "currency": currency})
}

impl Hub {
    pub fn operator(&self) -> Mocked<OperatorMock> {
        self.mock()
    }

    pub fn rgs(&self) -> Mocked<RgsMock> {
        self.mock()
    }

    pub fn signer(&self) -> TimestampedHmac {
        TimestampedHmac::new(ihub::config::Secret::new(SECRET), Duration::from_secs(300))
    }

    /// POSTs `body` signed now, with an Idempotency-Key when given, plus `extra` headers.
    pub async fn post_signed(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        for (name, value) in self.signer().headers_for(body) {
            request = request.header(name, value);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the ingress answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A debit or credit that waits for its outcome.
    pub async fn transact(&self, kind: &str, key: &str, body: &Value) -> (u16, Value) {
        self.post_signed(
            &format!("/wallet/{kind}"),
            Some(key),
            body,
            &[("prefer", "wait=10")],
        )
        .await
    }

    pub async fn transaction_status(&self, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM wallet_transactions WHERE id::text = $1")
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .expect("query")
    }
}

#[tokio::test]
async fn debit_and_credit_complete_end_to_end() {
    let hub = Hub::start(options()).await;

    let (status, debit) = hub
        .transact("debit", "d-1", &debit_body("p1", 1050, "EUR"))
        .await;
    assert_eq!(status, 200, "{debit}");
    assert_eq!(debit["status"], "completed");
    assert_eq!(debit["balance"], 100_000 - 1050);
    let debit_id = debit["transaction_id"].as_str().unwrap().to_string();
    assert!(
        debit["operator_transaction_id"]
            .as_str()
            .unwrap()
            .starts_with("op_")
    );

    let (status, credit) = hub
        .transact(
            "credit",
            "c-1",
            &json!({"player_id": "p1", "amount": 250, "currency": "EUR",
                                           "round_id": "r-9", "game_id": "g-1"}),
        )
        .await;
    assert_eq!(status, 200, "{credit}");
    assert_eq!(credit["status"], "completed");
    assert_eq!(credit["balance"], 100_000 - 1050 + 250);
    let credit_id = credit["transaction_id"].as_str().unwrap().to_string();

    // The operator saw one withdraw of "10.50" and one deposit of "2.50".
    let withdraw = hub.operator().transactions_for(&debit_id);
    assert_eq!(withdraw.len(), 1);
    assert_eq!(
        (withdraw[0].operation.as_str(), withdraw[0].amount.as_str()),
        ("withdraw", "10.50")
    );
    let deposit = hub.operator().transactions_for(&credit_id);
    assert_eq!(
        (deposit[0].operation.as_str(), deposit[0].amount.as_str()),
        ("deposit", "2.50")
    );
    assert_eq!(hub.operator().balance("p1", "EUR"), 100_000 - 1050 + 250);

    // The RGS mock checks signatures: what it stored was signed by the hub.
    let webhooks = eventually("both RGS webhooks", WAIT, || async {
        let received = hub.rgs().received();
        (received.len() == 2).then_some(received)
    })
    .await;
    let credit_hook = webhooks
        .iter()
        .map(|r| &r.body)
        .find(|b| b["transaction_id"] == credit_id.as_str())
        .expect("the credit webhook");
    assert_eq!(credit_hook["status"], "completed");
    assert_eq!(credit_hook["type"], "credit");
    assert_eq!(credit_hook["round_id"], "r-9");
    assert_eq!(credit_hook["balance"], 100_000 - 1050 + 250);

    assert_eq!(
        hub.transaction_status(&debit_id).await.as_deref(),
        Some("completed")
    );
    assert_eq!(
        hub.transaction_status(&credit_id).await.as_deref(),
        Some("completed")
    );

    // The operator's asynchronous callbacks arrive signed and are recorded.
    let callbacks: i64 = eventually("the operator callbacks recorded", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM operator_callbacks WHERE transaction_id IN ($1, $2)",
        )
        .bind(&debit_id)
        .bind(&credit_id)
        .fetch_one(&hub.db)
        .await
        .unwrap();
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(callbacks, 2);
    hub.stop().await;
}

#[tokio::test]
async fn every_published_event_matches_its_schema() {
    let hub = Hub::start(options()).await;
    hub.transact("debit", "s-1", &debit_body("p1", 100, "EUR"))
        .await;
    hub.transact("debit", "s-2", &debit_body("p1", 100, "GBP"))
        .await;
    eventually("webhooks out", WAIT, || async {
        (hub.rgs().received().len() == 2).then_some(())
    })
    .await;
    let seen = hub.assert_events_match_schemas().await;
    for subject in [
        "in.wallet.debit",
        "out.operator.withdraw",
        "out.rgs.webhook",
    ] {
        assert!(
            seen.iter().any(|s| s == subject),
            "nothing on {subject}: {seen:?}"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_replay_returns_the_same_response_and_books_once() {
    let hub = Hub::start(options()).await;
    let body = debit_body("p2", 500, "USD");

    // Without waiting: 202 pending, and the replay names the same transaction.
    let (status, first) = hub
        .post_signed("/wallet/debit", Some("r-1"), &body, &[])
        .await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "pending");
    let id = first["transaction_id"].as_str().unwrap().to_string();

    // Once it completed, a replay returns the outcome.
    eventually("the debit to complete", WAIT, || async {
        (hub.transaction_status(&id).await.as_deref() == Some("completed")).then_some(())
    })
    .await;
    let (status, replay) = eventually("the outcome to be stored", WAIT, || async {
        let (status, replay) = hub
            .post_signed("/wallet/debit", Some("r-1"), &body, &[])
            .await;
        (status == 200).then_some((status, replay))
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(replay["transaction_id"], id.as_str());
    assert_eq!(replay["status"], "completed");
    assert_eq!(replay["balance"], 100_000 - 500);

    let (_, again) = hub
        .post_signed("/wallet/debit", Some("r-1"), &body, &[])
        .await;
    assert_eq!(again, replay, "every replay answers the same");
    assert_eq!(hub.operator().transactions_for(&id).len(), 1);
    assert_eq!(hub.operator().balance("p2", "USD"), 100_000 - 500);

    // The key is scoped per endpoint: the same key on /credit is a new transaction.
    let (status, credit) = hub.transact("credit", "r-1", &body).await;
    assert_eq!(status, 200);
    assert_ne!(credit["transaction_id"], id.as_str());
    hub.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_body_conflicts_and_changes_nothing() {
    let hub = Hub::start(options()).await;
    let (status, _) = hub
        .transact("debit", "k-1", &debit_body("p3", 100, "EUR"))
        .await;
    assert_eq!(status, 200);
    let published = hub.messages_in("INBOUND").await;

    let (status, body) = hub
        .transact("debit", "k-1", &debit_body("p3", 999, "EUR"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "idempotency_conflict");
    assert_eq!(
        hub.messages_in("INBOUND").await,
        published,
        "nothing more was published"
    );
    assert_eq!(hub.operator().balance("p3", "EUR"), 100_000 - 100);
    hub.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_publish_nothing() {
    let hub = Hub::start(options()).await;
    let body = debit_body("p4", 100, "EUR");
    let url = format!("{}/wallet/debit", hub.url);
    let signer = hub.signer();
    let now = ihub::signatures::unix_now();
    let canonical = ihub::signatures::canonical_json(&body);

    let send = |headers: Vec<(&'static str, String)>, raw: String| {
        let mut request = hub.http.post(&url).body(raw);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // A signature over another body.
    let (status, err) = send(
        vec![
            ("idempotency-key", "b-1".into()),
            ("x-timestamp", now.to_string()),
            (
                "x-signature",
                signer.sign(now, &canonical.replace("100", "101")),
            ),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("unauthorized")),
        "{err}"
    );

    // No signature at all.
    let (status, err) = send(vec![("idempotency-key", "b-2".into())], body.to_string()).await;
    assert_eq!(status, 401, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("X-Timestamp"),
        "{err}"
    );

    // A correct signature on a stale timestamp.
    let stale = now - 301;
    let (status, err) = send(
        vec![
            ("idempotency-key", "b-3".into()),
            ("x-timestamp", stale.to_string()),
            ("x-signature", signer.sign(stale, &canonical)),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(status, 401, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("tolerance"),
        "{err}"
    );

    // Signed, but no Idempotency-Key.
    let (status, err) = hub.post_signed("/wallet/debit", None, &body, &[]).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("missing_idempotency_key"))
    );

    // A currency outside WALLET_CURRENCIES.
    let (status, err) = hub
        .post_signed(
            "/wallet/debit",
            Some("b-5"),
            &debit_body("p4", 100, "JPY"),
            &[],
        )
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (422, Some("currency_not_accepted"))
    );

    // Malformed JSON.
    let (status, err) = send(
        vec![("idempotency-key", "b-6".into())],
        "{\"player_id\":".into(),
    )
    .await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_json")));

    // Wrong types and unknown fields: the schema error, per field.
    let (status, err) = hub
        .post_signed(
            "/wallet/debit",
            Some("b-7"),
            &json!({"player_id": "p4", "amount": "1.00", "currency": "EUR", "bonus": true}),
            &[],
        )
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (422, Some("invalid_body")),
        "{err}"
    );
    let details = err["details"].to_string();
    assert!(
        details.contains("/amount") && details.contains("bonus"),
        "{details}"
    );

    // Zero and negative amounts.
    let (status, _) = hub
        .post_signed(
            "/wallet/debit",
            Some("b-8"),
            &debit_body("p4", 0, "EUR"),
            &[],
        )
        .await;
    assert_eq!(status, 422);

    assert_eq!(hub.messages_in("INBOUND").await, 0, "nothing was published");
    assert_eq!(
        hub.messages_in("KV_idempotency").await,
        0,
        "no key was claimed"
    );
    hub.stop().await;
}

#[tokio::test]
async fn an_operator_failing_three_times_is_retried_and_books_once() {
    let hub = Hub::start(options()).await;
    hub.operator().faults.fail_next(3, 500);

    let (status, outcome) = hub
        .transact("debit", "f-1", &debit_body("p5", 700, "EUR"))
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["status"], "completed");
    let id = outcome["transaction_id"].as_str().unwrap();

    assert_eq!(
        hub.operator().transactions_for(id).len(),
        1,
        "exactly one withdraw"
    );
    assert_eq!(hub.operator().faults.requests(), 4);
    assert_eq!(
        hub.attempts("operator", id).await,
        [
            (1, Some(500)),
            (2, Some(500)),
            (3, Some(500)),
            (4, Some(200))
        ]
    );
    hub.stop().await;
}

#[tokio::test]
async fn an_operator_refusal_rejects_and_the_rgs_is_told() {
    let hub = Hub::start(options()).await;
    // GBP is accepted by the hub but not by the operator mock (EUR, USD).
    let (status, outcome) = hub
        .transact("debit", "g-1", &debit_body("p6", 100, "GBP"))
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["status"], "rejected");
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap()
            .contains("currency_not_supported"),
        "{outcome}"
    );
    let id = outcome["transaction_id"].as_str().unwrap().to_string();

    // More than the balance: insufficient funds.
    let (_, poor) = hub
        .transact("debit", "g-2", &debit_body("p6", 100_001, "EUR"))
        .await;
    assert_eq!(poor["status"], "rejected");
    assert!(
        poor["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds"),
        "{poor}"
    );

    let hook = eventually("the rejection webhook", WAIT, || async {
        hub.rgs().for_transaction(&id).into_iter().next()
    })
    .await;
    assert_eq!(hook["status"], "rejected");
    assert_eq!(hook["event"], "transaction.rejected");
    assert_eq!(
        hub.transaction_status(&id).await.as_deref(),
        Some("rejected")
    );
    assert_eq!(
        hub.attempts("operator", &id).await,
        [(1, Some(422))],
        "a 4xx is not retried"
    );
    assert!(hub.operator().transactions_for(&id).is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn an_rgs_down_past_its_attempts_dead_letters_and_a_replay_delivers() {
    let hub = Hub::start(options()).await;
    hub.rgs().faults.down();

    let (_, outcome) = hub
        .transact("debit", "dl-1", &debit_body("p7", 100, "EUR"))
        .await;
    let id = outcome["transaction_id"].as_str().unwrap().to_string();

    let letters = eventually("the webhook in the DLQ", WAIT, || async {
        let letters = ihub::runtime::dlq::list(&hub.bus, Some("deliver-rgs"))
            .await
            .unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.consumer, "deliver-rgs");
    assert!(
        letter.original_subject.ends_with(".out.rgs.webhook"),
        "{letter:?}"
    );
    assert_eq!(letter.deliveries, Some(4), "RGS_RETRY_ATTEMPTS");
    assert!(letter.error.contains("503"), "{letter:?}");
    assert!(letter.headers.iter().any(|(k, _)| k == "traceparent"));
    assert_eq!(hub.rgs().faults.requests(), 4);
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM rgs_webhooks WHERE transaction_id::text = $1")
            .bind(&id)
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("dead_lettered", 4));
    assert_eq!(hub.attempts("rgs", &id).await.len(), 4);

    // The RGS is back: `ihub dlq list` shows it, `ihub dlq replay` delivers it.
    hub.rgs().faults.reset();
    let (ok, listing) = Ihub::run(&["dlq", "list"], &hub.env()).await;
    assert!(ok);
    assert!(
        listing.contains("deliver-rgs") && listing.contains(&letter.seq.to_string()),
        "{listing}"
    );
    let (ok, replayed) = Ihub::run(&["dlq", "replay", &letter.seq.to_string()], &hub.env()).await;
    assert!(ok, "{replayed}");
    assert!(replayed.contains("replayed dead letter"), "{replayed}");

    let hook = eventually("the replayed webhook", WAIT, || async {
        hub.rgs().for_transaction(&id).into_iter().next()
    })
    .await;
    assert_eq!(hook["status"], "completed");
    eventually("the webhook marked delivered", WAIT, || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM rgs_webhooks WHERE transaction_id::text = $1")
                .bind(&id)
                .fetch_one(&hub.db)
                .await
                .unwrap();
        (status == "delivered").then_some(())
    })
    .await;
    assert!(
        ihub::runtime::dlq::list(&hub.bus, None)
            .await
            .unwrap()
            .is_empty(),
        "the DLQ is empty"
    );
    // Nothing of deliver-rgs is pending or in hand: no delivery can follow.
    eventually("deliver-rgs idle", WAIT, || async {
        hub.is_idle("OUTBOUND", "deliver-rgs").await.then_some(())
    })
    .await;
    assert_eq!(hub.rgs().for_transaction(&id).len(), 1, "delivered once");
    hub.stop().await;
}

#[tokio::test]
async fn an_operator_out_of_attempts_fails_the_transaction_until_replayed() {
    let hub = Hub::start(options()).await;
    hub.operator().faults.down();
    let (_, outcome) = hub
        .transact("debit", "x-1", &debit_body("p8", 100, "EUR"))
        .await;
    assert_eq!(outcome["status"], "failed", "{outcome}");
    let id = outcome["transaction_id"].as_str().unwrap().to_string();
    assert_eq!(
        hub.attempts("operator", &id).await.len(),
        5,
        "OPERATOR_RETRY_ATTEMPTS"
    );

    hub.operator().faults.reset();
    let letters = ihub::runtime::dlq::list(&hub.bus, Some("deliver-operator"))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    ihub::runtime::dlq::replay(&hub.bus, letters[0].seq)
        .await
        .unwrap();
    eventually("the replayed debit to complete", WAIT, || async {
        (hub.transaction_status(&id).await.as_deref() == Some("completed")).then_some(())
    })
    .await;
    // The RGS heard "failed" first, then "completed"; a replay of the request says completed.
    let statuses = eventually("both webhooks", WAIT, || async {
        let hooks = hub.rgs().for_transaction(&id);
        (hooks.len() == 2).then_some(hooks)
    })
    .await;
    assert_eq!(
        (
            statuses[0]["status"].as_str(),
            statuses[1]["status"].as_str()
        ),
        (Some("failed"), Some("completed"))
    );
    let (_, replay) = hub
        .transact("debit", "x-1", &debit_body("p8", 100, "EUR"))
        .await;
    assert_eq!(replay["status"], "completed");
    hub.stop().await;
}

#[tokio::test]
async fn waiting_longer_than_the_outcome_takes_answers_202() {
    let hub = Hub::start(options()).await;
    hub.operator().faults.latency(Duration::from_millis(1500));
    let (status, body) = hub
        .post_signed(
            "/wallet/debit",
            Some("w-1"),
            &debit_body("p9", 100, "EUR"),
            &[("prefer", "wait=1")],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    hub.stop().await;
}

#[tokio::test]
async fn reconciliation_counts_what_differs() {
    let hub = Hub::start(options()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, outcome) = hub
            .transact("debit", &format!("rc-{i}"), &debit_body("p10", 100, "EUR"))
            .await;
        ids.push(outcome["transaction_id"].as_str().unwrap().to_string());
    }
    let (_, rejected) = hub
        .transact("debit", "rc-gbp", &debit_body("p10", 100, "GBP"))
        .await;
    assert_eq!(rejected["status"], "rejected");
    eventually("all webhooks", WAIT, || async {
        (hub.rgs().received().len() == 6).then_some(())
    })
    .await;

    let report = |token: Option<&'static str>| {
        let mut request = hub.http.get(format!("{}/reconciliation_data", hub.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.text().await.unwrap())
        }
    };

    let (status, _, _) = report(None).await;
    assert_eq!(status, 401);
    let (status, _, _) = report(Some("wrong")).await;
    assert_eq!(status, 401);

    let (status, headers, csv) = report(Some(RECONCILIATION_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("reconciliation.csv")
    );
    assert_eq!(headers["x-mismatch-count"], "0", "{csv}");
    assert_eq!(
        csv.lines().count(),
        1 + 6,
        "a header and one row per transaction:\n{csv}"
    );

    // Two transactions lost at the operator, one at the RGS.
    assert!(hub.operator().forget(&ids[0]));
    assert!(hub.operator().forget(&ids[1]));
    hub.rgs().forget(&ids[2]);
    let (_, headers, csv) = report(Some(RECONCILIATION_TOKEN)).await;
    assert_eq!(headers["x-mismatch-count"], "3", "{csv}");
    let result_of = |id: &str| {
        csv.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.rsplit(',').next())
            .map(str::to_string)
    };
    assert_eq!(result_of(&ids[0]).as_deref(), Some("missing_at_operator"));
    assert_eq!(result_of(&ids[2]).as_deref(), Some("missing_at_rgs"));
    assert_eq!(result_of(&ids[3]).as_deref(), Some("match"));
    hub.stop().await;
}

#[tokio::test]
async fn operator_callbacks_must_be_signed() {
    let hub = Hub::start(options()).await;
    let callback = json!({
        "event": "transaction.completed", "transaction_id": "op_9", "external_transaction_id": "x",
        "player_id": "p", "type": "withdraw", "amount": "1.00", "currency": "EUR",
        "occurred_at": "2026-01-01T00:00:00Z"
    });
    let response = hub
        .http
        .post(format!("{}/webhooks/incoming", hub.url))
        .json(&callback)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let (status, _) = hub
        .post_signed("/webhooks/incoming", None, &callback, &[])
        .await;
    assert_eq!(status, 202);
    eventually("the callback recorded", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM operator_callbacks WHERE operator_transaction_id = 'op_9'",
        )
        .fetch_one(&hub.db)
        .await
        .unwrap();
        (n == 1).then_some(())
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let hub = Hub::start(options()).await;
    let health: Value = hub
        .http
        .get(format!("{}/health", hub.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = hub
        .http
        .get(format!("{}/ready", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["nats"].as_str(), ready["postgres"].as_str()),
        (Some("ok"), Some("ok"))
    );
    hub.stop().await;
}
