//! `ihub` processes as operators run them: several consumers on one durable, a consumer killed
//! mid-call, and one trace across processes exported over OTLP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::Value;

use crate::support::process::Ihub;
use crate::support::{Hub, Options, eventually};
use crate::wallet::{debit_body, options};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_consumer_killed_mid_call_is_replaced_and_the_operator_books_once() {
    let hub = Hub::start(Options {
        no_consumers: true,
        ..options()
    })
    .await;
    let mut first = Ihub::spawn(&["consume", "--integrations", "wallet"], &hub.env());
    first.wait_for_line("consumers running").await;

    // The operator books at once but answers late: the consumer dies holding the call.
    hub.operator().faults.latency(Duration::from_millis(1500));
    let (status, accepted) = hub
        .post_signed(
            "/wallet/debit",
            Some("kill-1"),
            &debit_body("pk", 300, "EUR"),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["transaction_id"].as_str().unwrap().to_string();
    eventually("the operator to book it", WAIT, || async {
        (hub.operator().transactions_for(&id).len() == 1).then_some(())
    })
    .await;
    first.kill().await;
    hub.operator().faults.reset();

    let second = Ihub::spawn(&["consume", "--integrations", "wallet"], &hub.env());
    eventually("the redelivered call to complete it", WAIT, || async {
        (hub.transaction_status(&id).await.as_deref() == Some("completed")).then_some(())
    })
    .await;
    assert_eq!(
        hub.operator().faults.requests(),
        2,
        "the second consumer called again"
    );
    assert_eq!(
        hub.operator().transactions_for(&id).len(),
        1,
        "and the operator booked once"
    );
    assert_eq!(hub.operator().balance("pk", "EUR"), 100_000 - 300);
    eventually("the RGS told", WAIT, || async {
        (!hub.rgs().for_transaction(&id).is_empty()).then_some(())
    })
    .await;
    assert!(second.terminate().await, "a graceful stop exits 0");
    hub.stop().await;
}

#[tokio::test]
async fn two_consume_processes_share_one_durable() {
    let hub = Hub::start(Options {
        no_consumers: true,
        ..options().with(vec![("CONSUMER_CONCURRENCY", "1".into())])
    })
    .await;
    let mut a = Ihub::spawn(&["consume", "--integrations", "wallet"], &hub.env());
    let mut b = Ihub::spawn(&["consume", "--integrations", "wallet"], &hub.env());
    a.wait_for_line("consumers running").await;
    b.wait_for_line("consumers running").await;

    // Each process calls the operator one at a time; two calls at once means both work.
    hub.operator().faults.latency(Duration::from_millis(400));
    let mut ids = Vec::new();
    for i in 0..6 {
        let (status, accepted) = hub
            .post_signed(
                "/wallet/debit",
                Some(&format!("share-{i}")),
                &debit_body("ps", 10, "EUR"),
                &[],
            )
            .await;
        assert_eq!(status, 202);
        ids.push(accepted["transaction_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        eventually("every debit completed", WAIT, || async {
            (hub.transaction_status(id).await.as_deref() == Some("completed")).then_some(())
        })
        .await;
    }
    assert_eq!(
        hub.operator().faults.max_in_flight(),
        2,
        "both processes called the operator at once"
    );
    assert_eq!(hub.operator().transactions().len(), 6);
    assert!(a.terminate().await && b.terminate().await);
    hub.stop().await;
}

/// Receives OTLP/HTTP (protobuf) exports.
async fn otlp_listener() -> (String, Arc<Mutex<Vec<(String, Span)>>>) {
    let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource_spans in request.resource_spans {
                    let service = resource_spans
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            sink.lock().unwrap().push((service.clone(), span));
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = ihub::server::url_of(&listener);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test]
async fn one_trace_runs_from_the_ingress_through_nats_to_the_partner_call() {
    let hub = Hub::start(Options {
        no_consumers: true,
        no_ingress: true,
        ..options()
    })
    .await;
    let (otlp, spans) = otlp_listener().await;
    let mut env = hub.env();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp));
    env.push(("HTTP_ADDR".into(), "127.0.0.1:0".into()));

    let mut ingress_env = env.clone();
    ingress_env.push(("OTEL_SERVICE_NAME".into(), "ihub-ingress".into()));
    let mut consume_env = env.clone();
    consume_env.push(("OTEL_SERVICE_NAME".into(), "ihub-consume".into()));
    let mut ingress = Ihub::spawn(&["ingress", "--integrations", "wallet"], &ingress_env);
    let mut consume = Ihub::spawn(&["consume", "--integrations", "wallet"], &consume_env);
    let url = ingress
        .wait_for_line("listening on")
        .await
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    consume.wait_for_line("consumers running").await;

    let body = debit_body("pt", 100, "EUR");
    let mut request = reqwest::Client::new()
        .post(format!("{url}/wallet/debit"))
        .header("idempotency-key", "trace-1")
        .header("prefer", "wait=10")
        .json(&body);
    for (name, value) in hub.signer().headers_for(&body) {
        request = request.header(name, value);
    }
    let outcome: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(outcome["status"], "completed", "{outcome}");
    let id = outcome["transaction_id"].as_str().unwrap();

    // The operator received the trace in `traceparent`: 00-<trace id>-<parent span id>-01.
    let traceparent = hub.operator().transactions_for(id)[0]
        .traceparent
        .clone()
        .expect("traceparent sent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    let (trace_id, parent_span) = (parts[1].to_string(), parts[2].to_string());

    // A graceful stop flushes the spans.
    assert!(ingress.terminate().await && consume.terminate().await);
    let trace: Vec<(String, Span)> = eventually("the spans of the trace", WAIT, || async {
        let trace: Vec<(String, Span)> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        let kinds: Vec<i32> = trace.iter().map(|(_, s)| s.kind).collect();
        [
            SpanKind::Server,
            SpanKind::Producer,
            SpanKind::Consumer,
            SpanKind::Client,
        ]
        .iter()
        .all(|k| kinds.contains(&(*k as i32)))
        .then_some(trace)
    })
    .await;

    let find = |name: &str| {
        trace
            .iter()
            .find(|(_, s)| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span {name:?} in {:?}",
                    trace.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let (ingress_service, server) = find("POST /wallet/debit");
    assert!(
        ingress_service.contains("ihub-ingress"),
        "{ingress_service}"
    );
    assert_eq!(server.kind, SpanKind::Server as i32);
    let (consume_service, stage) = find("stage-wallet in.wallet.debit");
    assert!(
        consume_service.contains("ihub-consume"),
        "{consume_service}"
    );
    assert_eq!(stage.kind, SpanKind::Consumer as i32);
    // The hop through NATS, in the messaging conventions: ingress producer → consumer.
    let (publisher, publish) = find("publish in.wallet.debit");
    assert!(publisher.contains("ihub-ingress"), "{publisher}");
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(
        stage.parent_span_id, publish.span_id,
        "the stage continues the publish"
    );
    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
    };
    for (span, operation) in [(publish, "publish"), (stage, "process")] {
        assert_eq!(attribute(span, "messaging.system").as_deref(), Some("nats"));
        assert_eq!(
            attribute(span, "messaging.destination.name").as_deref(),
            Some("in.wallet.debit")
        );
        assert_eq!(
            attribute(span, "messaging.operation.type").as_deref(),
            Some(operation)
        );
    }
    let (_, delivery) = find("deliver-operator out.operator.withdraw");
    let (_, call) = find("POST operator");
    assert_eq!(call.kind, SpanKind::Client as i32);
    assert_eq!(
        hex(&call.span_id),
        parent_span,
        "the operator's parent is the client span"
    );
    assert_eq!(
        call.parent_span_id, delivery.span_id,
        "the call is inside the delivery"
    );
    hub.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn start_up_problems_say_where_and_what_to_do() {
    // Every integration's secrets, so that only the problem under test stops start-up.
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = ihub::integrations::ALL
            .iter()
            .flat_map(|i| i.secrets())
            .map(|s| (s.name, s.demo))
            .chain([("HTTP_ADDR", "127.0.0.1:0")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    };
    let (ok, _, err) =
        Ihub::run_full(&["ingress"], &env(&[("NATS_URL", "nats://127.0.0.1:1")])).await;
    assert!(!ok);
    assert!(
        err.contains("NATS not reachable at nats://127.0.0.1:1") && err.contains("nats-server -js"),
        "{err}"
    );

    let (ok, _, err) = Ihub::run_full(
        &["consume"],
        &env(&[("DATABASE_URL", "postgres://postgres:pw@127.0.0.1:1/ihub")]),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("Postgres not reachable at postgres://postgres:***@127.0.0.1:1/ihub"),
        "{err}"
    );
    assert!(!err.contains(":pw@"), "the password is not shown: {err}");

    let (ok, _, err) =
        Ihub::run_full(&["ingress"], &[("HTTP_ADDR".into(), "127.0.0.1:0".into())]).await;
    assert!(!ok);
    assert!(
        ihub::integrations::ALL
            .iter()
            .flat_map(|i| i.ingress.secrets)
            .all(|var| err.contains(var.name)),
        "{err}"
    );
    assert!(
        err.contains("WALLET_HMAC_SECRET, RECONCILIATION_TOKEN, APP_HMAC_SECRET"),
        "{err}"
    );

    let (ok, _, err) = Ihub::run_full(&["consume", "--only", "deliver-nowhere"], &env(&[])).await;
    assert!(!ok);
    assert!(
        err.contains("unknown consumer") && err.contains("deliver-rgs"),
        "{err}"
    );
}

#[tokio::test]
async fn a_process_asks_only_for_the_secrets_of_what_it_runs() {
    // A WaveGate hub's settings: no wallet secret anywhere.
    let hub = Hub::start(Options {
        no_consumers: true,
        ..crate::wavegate::options()
    })
    .await;
    assert!(!hub.vars.contains_key("WALLET_HMAC_SECRET"));
    let mut ticketing = Ihub::spawn(&["consume", "--only", "deliver-ticketing"], &hub.env());
    ticketing.wait_for_line("consumers running").await;
    assert!(ticketing.terminate().await);

    let (ok, _, err) = Ihub::run_full(&["consume", "--only", "deliver-rgs"], &hub.env()).await;
    assert!(!ok);
    assert!(err.contains("WALLET_HMAC_SECRET not set"), "{err}");
    let (ok, _, err) = Ihub::run_full(&["ingress", "--integrations", "wallet"], &hub.env()).await;
    assert!(!ok);
    assert!(
        err.contains("WALLET_HMAC_SECRET, RECONCILIATION_TOKEN not set") && !err.contains("ADMIN"),
        "{err}"
    );
    let (ok, _, err) =
        Ihub::run_full(&["ingress", "--integrations", "wallet,nowhere"], &hub.env()).await;
    assert!(!ok);
    assert!(err.contains("unknown integration \"nowhere\""), "{err}");
    hub.stop().await;
}

#[tokio::test]
async fn every_command_has_help() {
    // `ihub mocks --help` names every mock, where it listens and what points at it.
    let (ok, out, _) = Ihub::run_full(&["mocks", "--help"], &[]).await;
    assert!(ok);
    for integration in ihub::integrations::ALL {
        for mock in integration.mocks {
            assert!(
                out.contains(mock.name) && out.contains(mock.addr_var),
                "{} in {out}",
                mock.name
            );
        }
    }
    for command in [
        "setup", "ingress", "consume", "dev", "mocks", "status", "dlq", "parked", "sign",
        "simulate", "bench", "chaos",
    ] {
        let (ok, out, _) = Ihub::run_full(&[command, "--help"], &[]).await;
        assert!(ok && out.contains("Usage: ihub"), "{command}: {out}");
    }
    let (ok, out, _) = Ihub::run_full(
        &[
            "sign",
            "--body",
            "{\"b\":1,\"a\":2}",
            "--secret",
            "s3cret",
            "--timestamp",
            "1700000000",
        ],
        &[],
    )
    .await;
    assert!(ok);
    let expected = ihub::signatures::TimestampedHmac::new(
        ihub::config::Secret::new("s3cret"),
        Duration::from_secs(300),
    )
    .sign(1_700_000_000, "{\"a\":2,\"b\":1}");
    assert_eq!(
        out,
        format!("X-Timestamp: 1700000000\nX-Signature: {expected}\n")
    );
}

#[tokio::test]
async fn logs_to_a_file_or_a_pipe_have_no_colour_codes() {
    let hub = Hub::start(Options {
        no_consumers: true,
        no_ingress: true,
        ..options()
    })
    .await;
    let mut consume = Ihub::spawn(&["consume", "--integrations", "wallet"], &hub.env());
    consume.wait_for_line("consumers running").await;
    let log = consume.log.clone();
    assert!(consume.terminate().await);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("consumer running"), "it logged: {logged}");
    assert!(!logged.contains('\u{1b}'), "an escape code in: {logged:?}");
    hub.stop().await;
}
