//! Operating the hub: `ihub status`, dead letters replayed by range and filters.

use bytes::Bytes;
use serde_json::Value;

use std::time::Duration;

use ihub::nats::headers;
use ihub::runtime::shared_breaker::SharedBreaker;

use crate::support::Hub;
use crate::support::process::Ihub;

/// Stores a dead letter of `consumer` whose original subject is `subject` (before the
/// prefix), as the runtime does; returns its DLQ sequence.
async fn dead_letter(hub: &Hub, consumer: &str, subject: &str, n: u32) -> u64 {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::DLQ_CONSUMER, consumer);
    h.insert(
        headers::ORIGINAL_SUBJECT,
        hub.bus.names.subject(subject).as_str(),
    );
    h.insert(
        headers::ORIGINAL_STREAM,
        hub.bus.names.stream("INBOUND").as_str(),
    );
    h.insert(headers::ORIGINAL_SEQ, n.to_string().as_str());
    h.insert(headers::DELIVERIES, "3");
    h.insert(headers::ERROR, "HTTP 503: down");
    h.insert(headers::FAILED_AT, chrono::Utc::now().to_rfc3339().as_str());
    h.insert(
        "traceparent",
        format!("00-{:032x}-{:016x}-01", n + 1, n + 1).as_str(),
    );
    h.insert("X-Letter", n.to_string().as_str());
    hub.bus
        .publish(
            &format!("dlq.{consumer}"),
            None,
            h,
            Bytes::from(format!("{{\"n\":{n}}}")),
        )
        .await
        .unwrap()
        .sequence
}

/// `(subject, X-Letter, traceparent)` of what arrived on INBOUND's `in.ops.>`.
async fn replayed(hub: &Hub) -> Vec<(String, String, String)> {
    hub.stream_messages("INBOUND")
        .await
        .into_iter()
        .filter(|(subject, _, _)| subject.starts_with("in.ops."))
        .map(|(subject, _, h)| {
            let get = |name: &str| {
                h.get(name)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default()
            };
            (subject, get("X-Letter"), get("traceparent"))
        })
        .collect()
}

#[tokio::test]
async fn dead_letters_are_replayed_by_range_and_filter_with_a_dry_run_first() {
    let hub = Hub::start(crate::max::options()).await;
    let mut seqs = Vec::new();
    for (n, (consumer, subject)) in [
        ("c1", "in.ops.a"),
        ("c1", "in.ops.b"),
        ("c1", "in.ops.a"),
        ("c1", "in.ops.b"),
        ("c2", "in.ops.b"),
        ("c2", "in.ops.a"),
    ]
    .into_iter()
    .enumerate()
    {
        seqs.push(dead_letter(&hub, consumer, subject, n as u32).await);
    }
    let env = hub.env();
    let dlq = |args: &[&str]| {
        let all: Vec<String> = std::iter::once("dlq")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let env = env.clone();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            Ihub::run_full(&all, &env).await
        }
    };

    let (ok, _, err) = dlq(&["replay"]).await;
    assert!(!ok && err.contains("--all"), "say which: {err}");

    let (from, to) = (seqs[1].to_string(), seqs[2].to_string());
    let (from, to) = (from.as_str(), to.as_str());
    let (ok, out, err) = dlq(&["replay", "--consumer", "c1", "--from", from, "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("dry run: 3 dead letter(s)"), "{out}");
    assert!(replayed(&hub).await.is_empty(), "a dry run changes nothing");
    assert_eq!(hub.messages_in("DLQ").await, 6);

    let (ok, out, err) = dlq(&[
        "replay",
        "--consumer",
        "c1",
        "--from",
        from,
        "--to",
        to,
        "--rate",
        "200/s",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("[2/2]") && out.contains("replayed 2 of 2"),
        "{out}"
    );
    let arrived = replayed(&hub).await;
    assert_eq!(
        arrived,
        [
            (
                "in.ops.b".to_string(),
                "1".to_string(),
                format!("00-{:032x}-{:016x}-01", 2, 2)
            ),
            (
                "in.ops.a".to_string(),
                "2".to_string(),
                format!("00-{:032x}-{:016x}-01", 3, 3)
            ),
        ],
        "original subjects, headers and trace, in order"
    );
    assert_eq!(hub.messages_in("DLQ").await, 4);

    // By subject and age: the b letters left (c1's 3 and c2's 4).
    let (ok, out, err) = dlq(&["replay", "--subject", "in.ops.b", "--since", "1h"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("replayed 2 of 2"), "{out}");
    let letters: Vec<String> = replayed(&hub)
        .await
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    assert_eq!(letters, ["1", "2", "3", "4"]);
    let (ok, out, _) = dlq(&["list", "--json"]).await;
    assert!(ok);
    let left: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|l| {
        l["original_subject"]
            .as_str()
            .unwrap()
            .ends_with("in.ops.a")
    }));
    hub.stop().await;
}

#[tokio::test]
async fn status_shows_readiness_streams_durables_dead_letters_and_breakers() {
    let hub = Hub::start(crate::max::options()).await;
    // Some work, a dead letter and a breaker to show.
    let draft = hub
        .http
        .post(format!("{}/max/transactions/drafts", hub.url))
        .bearer_auth(crate::max::MAX_TOKEN)
        .json(&serde_json::json!({"customer_id": "CUST-1", "amount": "1.00", "description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(draft.status(), 201);
    dead_letter(&hub, "operate-max", "in.ops.a", 1).await;
    dead_letter(&hub, "operate-max", "in.ops.a", 2).await;
    dead_letter(&hub, "deliver-rgs", "in.ops.a", 3).await;
    let breakers = hub.bus.kv(SharedBreaker::BUCKET).await.unwrap();
    let breaker = |key: &str, threshold| {
        SharedBreaker::new(
            breakers.clone(),
            key,
            threshold,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
    };
    breaker("test.flaky", 5).failed().await.unwrap();
    breaker("test.down", 1).failed().await.unwrap();

    let (ok, out, err) = Ihub::run_full(&["status", "--json"], &hub.env()).await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(status["nats"]["ready"], true);
    assert_eq!(status["postgres"]["ready"], true);
    let stream = |name: &str| {
        status["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    assert!(stream("INBOUND")["messages"].as_u64().unwrap() >= 1);
    assert_eq!(stream("DLQ")["messages"], 3);
    let durable = stream("INBOUND")["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "operate-max")
        .cloned()
        .expect("operate-max listed");
    assert_eq!(durable["pending"], 0);
    assert!(durable["last_active"].is_string(), "{durable}");
    assert_eq!(
        status["dlq"],
        serde_json::json!([["deliver-rgs", 1], ["operate-max", 2]])
    );
    assert_eq!(
        status["breakers"],
        serde_json::json!([["test.down", "open"], ["test.flaky", "closed"]])
    );

    let (ok, text, err) = Ihub::run_full(&["status"], &hub.env()).await;
    assert!(ok, "{err}");
    for shown in [
        "NATS      ready",
        "Postgres  ready",
        "operate-max",
        "dead letters: 3",
        "test.down",
    ] {
        assert!(text.contains(shown), "{shown} in\n{text}");
    }

    // Postgres unreachable: said, with the rest still shown, and a failing exit.
    let env: Vec<(String, String)> = hub
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "DATABASE_URL" => (k, "postgres://postgres@127.0.0.1:1/ihub".to_string()),
            _ => (k, v),
        })
        .collect();
    let (ok, text, _) = Ihub::run_full(&["status"], &env).await;
    assert!(!ok);
    assert!(
        text.contains("Postgres  NOT READY") && text.contains("NATS      ready"),
        "{text}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_mocks_answer_errors_as_json_too() {
    let hub = Hub::start(crate::max::options()).await;
    for mock in &hub.mocks {
        let missing = hub
            .http
            .get(format!("{}/no/such/route", mock.url))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{}", mock.name);
        let body: Value = missing.json().await.expect("a JSON 404");
        assert_eq!(body["error"], "not_found", "{}", mock.name);
        let not_json = hub
            .http
            .post(format!("{}/_mock/faults", mock.url))
            .body("down")
            .send()
            .await
            .unwrap();
        assert!(not_json.status().is_client_error(), "{}", mock.name);
        let body: Value = not_json.json().await.expect("a JSON refusal");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
        let wrong_method = hub
            .http
            .put(format!("{}/_mock/faults", mock.url))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_method.status(), 405);
        let body: Value = wrong_method.json().await.expect("a JSON 405");
        assert_eq!(body["error"], "method_not_allowed");
    }
    hub.stop().await;
}
