//! The casino's seamless wallet end to end: signed calls → ingress → NATS request → wallet
//! service → Postgres, and the ledger relayed to JetStream.

use std::time::Duration;

use serde_json::{Value, json};

use ihub::config::Secret;
use ihub::integrations::casino::signature::{CASINO_HEADER, sign};

use crate::support::{Hub, Options, eventually};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "test-casino-secret";
const API_TOKEN: &str = "test-casino-api-token";
const ADMIN: &str = "test-admin-token";

pub fn options(players: &str) -> Options {
    Options::new(
        "casino",
        &[
            ("CASINO_SECRET", SECRET),
            ("PROVIDER_SECRET", "test-provider-secret"),
            ("CASINO_API_TOKEN", API_TOKEN),
            ("ADMIN_TOKEN", ADMIN),
            ("CASINO_PLAYERS_JSON", players),
        ],
    )
}

/// Player `p1` with 100.00 USD and 50.00 EUR, `p2` with 10.00 USD.
const PLAYERS: &str = r#"[{"userId":"p1","balances":{"USD":"100.00","EUR":"50.00"}},{"userId":"p2","balances":{"USD":"10.00"}}]"#;

impl Hub {
    /// POSTs `body` (exact bytes) to `/casino/<call>` signed with `secret`.
    async fn casino_signed(&self, call: &str, secret: &str, body: &str) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}/casino/{call}", self.url))
            .header("content-type", "application/json")
            .header(CASINO_HEADER, sign(&Secret::new(secret), body.as_bytes()))
            .body(body.to_string())
            .send()
            .await
            .expect("the ingress answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn casino(&self, call: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.casino_signed(call, SECRET, &body.to_string()).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A session of `user` playing in `currency`, as launchGame opens one.
    async fn session(&self, user: &str, currency: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO casino_sessions (session_id, user_id, game_id, currency) VALUES ($1, $2, '7', $3)",
        )
        .bind(&id)
        .bind(user)
        .bind(currency)
        .execute(&self.db)
        .await
        .unwrap();
        id
    }

    async fn balance(&self, user: &str, currency: &str) -> String {
        let (status, body) = self
            .casino("getBalance", &json!({"userId": user, "currency": currency}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["balance"].as_str().unwrap().to_string()
    }
}

/// An answer's status and error code.
fn refusal(status: u16, body: &Value) -> (u16, &str) {
    (status, body["error"].as_str().unwrap_or_default())
}

fn bet(user: &str, session: &str, id: &str, amount: &str, currency: &str) -> Value {
    json!({
        "userId": user, "sessionId": session, "roundId": "r-1", "gameId": 7,
        "externalTransactionId": id, "amount": amount, "currency": currency,
    })
}

fn rollback(user: &str, id: &str, original: &str) -> Value {
    json!({"userId": user, "externalTransactionId": id, "originalTransactionId": original, "roundId": "r-1"})
}

#[tokio::test]
async fn a_bet_and_a_win_move_the_balance_and_repeats_answer_the_same_bytes() {
    let hub = Hub::start(options(PLAYERS)).await;
    let session = hub.session("p1", "USD").await;
    assert_eq!(hub.balance("p1", "USD").await, "100.00");

    let debit = bet("p1", &session, "t-1", "10.50", "USD").to_string();
    let (status, first) = hub.casino_signed("debit", SECRET, &debit).await;
    assert_eq!(status, 200, "{first}");
    let answer: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["balance"], "89.50");
    assert_eq!(answer["currency"], "USD");
    assert!(answer["transactionId"].is_string());
    // The same call again: the first answer, byte for byte, and nothing moves twice.
    let (status, again) = hub.casino_signed("debit", SECRET, &debit).await;
    assert_eq!((status, again.as_str()), (200, first.as_str()));
    assert_eq!(hub.balance("p1", "USD").await, "89.50");
    // The same id with another body.
    let (status, body) = hub
        .casino("debit", &bet("p1", &session, "t-1", "1.00", "USD"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "idempotency_conflict");

    let mut win = bet("p1", &session, "w-1", "25.00", "USD");
    win["userId"] = json!("p1");
    let (status, body) = hub.casino("credit", &win).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["balance"], "114.50");
    // Ids are opaque: the integer 1 and the string "1" are one game.
    assert_eq!(hub.balance("p1", "EUR").await, "50.00");
    hub.stop().await;
}

#[tokio::test]
async fn concurrent_repeats_of_one_call_book_it_once_and_answer_alike() {
    // A provider that retries before the first try answered: every copy gets the one answer.
    let hub = Hub::start(options(PLAYERS)).await;
    let session = hub.session("p1", "USD").await;
    let debit = bet("p1", &session, "dup-1", "2.50", "USD").to_string();
    let copies = (0..20).map(|_| hub.casino_signed("debit", SECRET, &debit));
    let answers = futures::future::join_all(copies).await;
    let (status, first) = &answers[0];
    assert_eq!(*status, 200, "{first}");
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(hub.balance("p1", "USD").await, "97.50");
    hub.stop().await;
}

#[tokio::test]
async fn refusals_are_clear_and_kept_for_the_retry() {
    let hub = Hub::start(options(PLAYERS)).await;
    let session = hub.session("p2", "USD").await;

    // Insufficient funds: 402 with the balance; the retry gets the same refusal even after
    // the player could afford it.
    let big = bet("p2", &session, "big-1", "10.01", "USD");
    let (status, body) = hub.casino("debit", &big).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(
        body,
        json!({"error": "insufficient_funds", "balance": "10.00"})
    );
    let (status, _) = hub
        .casino("credit", &bet("p2", &session, "w-2", "5.00", "USD"))
        .await;
    assert_eq!(status, 200);
    let (status, again) = hub.casino("debit", &big).await;
    assert_eq!((status, again), (402, body));
    assert_eq!(hub.balance("p2", "USD").await, "15.00");

    let (status, body) = hub
        .casino("debit", &bet("nobody", &session, "u-1", "1.00", "USD"))
        .await;
    assert_eq!(refusal(status, &body), (404, "unknown_user"), "{body}");
    let (status, body) = hub
        .casino("debit", &bet("p2", "no-such-session", "s-1", "1.00", "USD"))
        .await;
    assert_eq!(refusal(status, &body), (404, "unknown_session"), "{body}");
    let (status, body) = hub
        .casino("debit", &bet("p2", &session, "c-1", "1.00", "EUR"))
        .await;
    assert_eq!(refusal(status, &body), (422, "wrong_currency"), "{body}");
    let (status, body) = hub
        .casino("getBalance", &json!({"userId": "p2", "currency": "EUR"}))
        .await;
    assert_eq!(refusal(status, &body), (422, "wrong_currency"), "{body}");

    // Checked at the edge, before anything is asked: signature, JSON, schema, decimals.
    let good = bet("p2", &session, "e-1", "1.00", "USD").to_string();
    let (status, _) = hub.casino_signed("debit", "wrong-secret", &good).await;
    assert_eq!(status, 401);
    let (status, _) = hub.casino_signed("debit", SECRET, "{not json").await;
    assert_eq!(status, 400);
    let (status, body) = hub.casino("debit", &json!({"userId": "p2"})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = hub
        .casino("debit", &bet("p2", &session, "e-2", "1.005", "USD"))
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = hub
        .casino("debit", &bet("p2", &session, "e-3", "-1.00", "USD"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        hub.balance("p2", "USD").await,
        "15.00",
        "no refusal moved money"
    );
    hub.stop().await;
}

#[tokio::test]
async fn rollbacks_refund_a_bet_once_and_tombstone_unknown_ones() {
    let hub = Hub::start(options(PLAYERS)).await;
    let session = hub.session("p1", "USD").await;
    let (status, _) = hub
        .casino("debit", &bet("p1", &session, "b-1", "20.00", "USD"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = hub.casino("rollback", &rollback("p1", "rb-1", "b-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["balance"], "100.00");
    // Again with the same id: the same answer; with another id: ok, refunded only once.
    let (status, again) = hub.casino("rollback", &rollback("p1", "rb-1", "b-1")).await;
    assert_eq!((status, &again), (200, &body));
    let (status, other) = hub.casino("rollback", &rollback("p1", "rb-2", "b-1")).await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["balance"], "100.00");
    assert_eq!(hub.balance("p1", "USD").await, "100.00");

    // A credit is not rolled back.
    let (status, _) = hub
        .casino("credit", &bet("p1", &session, "win-1", "5.00", "USD"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = hub
        .casino("rollback", &rollback("p1", "rb-3", "win-1"))
        .await;
    assert_eq!(refusal(status, &body), (422, "not_rollbackable"), "{body}");

    // A rollback of a bet not seen yet: ok, nothing moves, and the bet is refused later.
    let (status, body) = hub
        .casino("rollback", &rollback("p1", "rb-4", "late-bet"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    let (status, body) = hub
        .casino("debit", &bet("p1", &session, "late-bet", "7.00", "USD"))
        .await;
    assert_eq!(
        refusal(status, &body),
        (409, "transaction_rolled_back"),
        "{body}"
    );
    assert_eq!(hub.balance("p1", "USD").await, "105.00");
    hub.stop().await;
}

#[tokio::test]
async fn concurrent_bets_on_one_player_leave_the_exact_balance() {
    // 1,000 debits of 0.07 on 60.00: 857 fit; none may overdraw or be lost.
    // (The per-player rate limit and the ingress's wait are raised: this is one player's
    // storm on purpose, each debit waiting its turn at the wallet's row lock.)
    let hub = Hub::start(
        options(r#"[{"userId":"hot","balances":{"USD":"60.00"}}]"#).with(vec![
            ("CASINO_PLAYER_RATE_LIMIT_PER_SEC", "100000".into()),
            ("CASINO_WALLET_TIMEOUT_MS", "60000".into()),
        ]),
    )
    .await;
    let session = hub.session("hot", "USD").await;
    let calls = (0..1000).map(|n| {
        let body = bet("hot", &session, &format!("hot-{n}"), "0.07", "USD");
        let hub = &hub;
        async move { hub.casino("debit", &body).await }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let poor = answers.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(
        ok + poor,
        1000,
        "every call answered 200 or 402: {:?}",
        answers.iter().find(|(s, _)| *s != 200 && *s != 402)
    );
    assert_eq!(ok, 857);
    assert_eq!(hub.balance("hot", "USD").await, "0.01");
    let (status, report) = hub.admin("/casino/reconciliation").await;
    assert_eq!(status, 200);
    assert_eq!(report["mismatched"], 0, "{report}");
    assert_eq!(report["wallets"], 1, "{report}");
    assert_eq!(report["listed"][0]["balanceMinor"], 1, "{report}");
    hub.stop().await;
}

#[tokio::test]
async fn every_ledger_entry_reaches_jetstream_once() {
    let hub = Hub::start(options(PLAYERS)).await;
    let session = hub.session("p1", "USD").await;
    for n in 0..5 {
        let (status, _) = hub
            .casino(
                "debit",
                &bet("p1", &session, &format!("l-{n}"), "1.00", "USD"),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Three seed entries and five debits.
    let entries = eventually("the ledger on JetStream", WAIT, || async {
        let messages = hub.stream_messages("LEDGER").await;
        (messages.len() >= 8).then_some(messages)
    })
    .await;
    let debits: Vec<&Value> = entries
        .iter()
        .filter(|(subject, _, _)| subject == "ledger.casino.debit")
        .map(|(_, payload, _)| payload)
        .collect();
    assert_eq!(debits.len(), 5);
    assert_eq!(debits[4]["balanceAfter"], 9500);
    assert_eq!(debits[4]["amount"], -100);
    // The relay deletes a row right after the stream stored it.
    eventually("the relay to empty the outbox", WAIT, || async {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM casino_outbox")
            .fetch_one(&hub.db)
            .await
            .unwrap();
        (outbox == 0).then_some(())
    })
    .await;

    // A crash after publishing, before deleting: the rows come back, are published again, and
    // the stream keeps one copy of each.
    sqlx::query(
        "INSERT INTO casino_outbox (ledger_id, subject, payload)
         SELECT id, 'ledger.casino.' || kind, jsonb_build_object('id', id) FROM casino_ledger",
    )
    .execute(&hub.db)
    .await
    .unwrap();
    eventually("the outbox relayed again", WAIT, || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM casino_outbox")
            .fetch_one(&hub.db)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(
        hub.messages_in("LEDGER").await,
        entries.len() as u64,
        "no entry twice"
    );
    let (status, ledger) = hub.admin("/casino/ledger?userId=p1").await;
    assert_eq!(status, 200);
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 7, "{ledger}");
    hub.stop().await;
}

impl Hub {
    async fn admin(&self, path: &str) -> (u16, Value) {
        self.get_with_bearer(path, ADMIN).await
    }
}

#[tokio::test]
async fn a_wallet_process_killed_mid_debit_books_nothing_and_the_retry_books_once() {
    use crate::support::process::Ihub;
    let hub = Hub::start(Options {
        no_consumers: true,
        ..options(PLAYERS)
    })
    .await;
    let session = hub.session("p1", "USD").await;
    let mut first = Ihub::spawn(&["consume", "--integrations", "casino"], &hub.env());
    first.wait_for_line("consumers running").await;

    // Hold p1's wallet: the first process's debit waits on the row lock, mid-transaction.
    let mut holder = hub.db.begin().await.unwrap();
    sqlx::query("SELECT balance FROM casino_wallets WHERE user_id = 'p1' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let debit = bet("p1", &session, "kill-1", "30.00", "USD");
    let call = tokio::spawn({
        let (http, url, body) = (hub.http.clone(), hub.url.clone(), debit.to_string());
        async move {
            http.post(format!("{url}/casino/debit"))
                .header(CASINO_HEADER, sign(&Secret::new(SECRET), body.as_bytes()))
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    eventually("the debit to wait on the wallet's lock", WAIT, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&hub.db)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
    first.kill().await;
    let mut second = Ihub::spawn(&["consume", "--integrations", "casino"], &hub.env());
    second.wait_for_line("consumers running").await;
    holder.rollback().await.unwrap();

    // The provider saw a failure (503: the wallet did not answer) and retries the same call.
    let status = call.await.unwrap().unwrap();
    assert_eq!(status, 503, "the killed process never answered");
    let (status, body) = hub.casino("debit", &debit).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["balance"], "70.00");
    let (status, again) = hub.casino("debit", &debit).await;
    assert_eq!((status, &again), (200, &body));
    assert_eq!(hub.balance("p1", "USD").await, "70.00", "booked once");
    let (_, ledger) = hub.admin("/casino/ledger?userId=p1").await;
    let debits = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "debit")
        .count();
    assert_eq!(debits, 1, "{ledger}");
    assert!(second.terminate().await, "a graceful stop exits 0");
    hub.stop().await;
}

#[tokio::test]
async fn a_retry_storm_of_one_player_gets_429_and_others_go_on() {
    let hub =
        Hub::start(options(PLAYERS).with(vec![("CASINO_PLAYER_RATE_LIMIT_PER_SEC", "1".into())]))
            .await;
    let storm = (0..10).map(|_| {
        let body = json!({"userId": "p1", "currency": "USD"}).to_string();
        let hub = &hub;
        async move {
            let response = hub
                .http
                .post(format!("{}/casino/getBalance", hub.url))
                .header(CASINO_HEADER, sign(&Secret::new(SECRET), body.as_bytes()))
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (
                response.status().as_u16(),
                retry_after,
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    let answers = futures::future::join_all(storm).await;
    let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(
        limited
            .iter()
            .all(|(_, retry, body)| retry.is_some() && body["error"] == "rate_limited")
    );
    assert!(
        answers.iter().all(|(s, _, _)| *s == 200 || *s == 429),
        "{answers:?}"
    );
    // Another player is not held up.
    let (status, _) = hub
        .casino("getBalance", &json!({"userId": "p2", "currency": "USD"}))
        .await;
    assert_eq!(status, 200);
    hub.stop().await;
}

impl Hub {
    fn provider(
        &self,
    ) -> ihub::mocks::Mocked<ihub::integrations::casino::mocks::provider::ProviderMock> {
        self.mock()
    }

    /// The casino front end's call, with `token` as its bearer.
    async fn front(&self, call: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/casino/{call}", self.url))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_front_end_launches_a_game_and_plays_the_seeds_round() {
    let hub = Hub::start(options(PLAYERS)).await;
    let player = json!({"userId": "p1", "gameId": 1, "currency": "USD"});
    // A wallet's front door is not open.
    let (status, _) = hub.front("launchGame", None, &player).await;
    assert_eq!(status, 401);
    let (status, _) = hub.front("launchGame", Some("wrong"), &player).await;
    assert_eq!(status, 401);

    let (status, launched) = hub.front("launchGame", Some(API_TOKEN), &player).await;
    assert_eq!(status, 200, "{launched}");
    let session = launched["sessionId"].as_str().unwrap().to_string();
    assert!(
        launched["launchUrl"].as_str().unwrap().ends_with(&session),
        "{launched}"
    );
    let known = hub.provider().sessions();
    assert_eq!(known.len(), 1);
    assert_eq!(
        (
            known[0].session_id.as_str(),
            known[0].user_id.as_str(),
            known[0].game_id.as_str()
        ),
        (session.as_str(), "p1", "1")
    );
    // The session is the casino's too: the provider's bets in it are taken.
    let (status, body) = hub
        .casino("debit", &bet("p1", &session, "front-1", "1.00", "USD"))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = hub
        .front(
            "launchGame",
            Some(API_TOKEN),
            &json!({"userId": "nobody", "gameId": 1, "currency": "USD"}),
        )
        .await;
    assert_eq!(refusal(status, &body), (404, "unknown_user"), "{body}");
    let (status, body) = hub
        .front(
            "launchGame",
            Some(API_TOKEN),
            &json!({"userId": "p2", "gameId": 1, "currency": "EUR"}),
        )
        .await;
    assert_eq!(refusal(status, &body), (422, "wrong_currency"), "{body}");

    // The whole round: balance, two bets, the second rolled back, a win, balance.
    let (status, round) = hub.front("simulateRound", Some(API_TOKEN), &player).await;
    assert_eq!(status, 200, "{round}");
    let steps: Vec<&str> = round["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["balance", "bet", "bet", "rollback", "win", "balance"]
    );
    assert!(
        round["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == 200),
        "{round}"
    );
    assert_eq!(round["steps"][0]["response"]["balance"], "99.00");
    // 99.00 - 10.00 - 5.00 + 5.00 + 25.00
    assert_eq!(round["finalBalance"], "114.00");
    assert_eq!(hub.balance("p1", "USD").await, "114.00");
    let (_, report) = hub.admin("/casino/reconciliation").await;
    assert_eq!(report["mismatched"], 0, "{report}");

    // The provider down: the front end gets a 502 that says so, and no money moved.
    hub.provider().faults.down();
    let (status, body) = hub.front("simulateRound", Some(API_TOKEN), &player).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("provider_"),
        "{body}"
    );
    assert_eq!(hub.balance("p1", "USD").await, "114.00");
    hub.provider().faults.reset();
    hub.stop().await;
}
