//! The hub on a 3-node NATS JetStream cluster with R3 streams and KV, as a user who outgrows
//! one machine runs it: `ihub setup` with `NATS_REPLICAS=3`, two `ihub ingress` and two
//! `ihub consume` processes given every server in `NATS_URL`. The node leading INBOUND is
//! killed (SIGKILL) in the middle of a load of signed wallet transactions and restarted on its
//! store; clients retry 5xx and timeouts with the same Idempotency-Key, as an RGS does. Every
//! request answered 2xx is booked by the operator exactly once, and nothing else is booked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::ClusterInfo;
use serde_json::{Value, json};

use crate::support::cluster::NatsCluster;
use crate::support::process::Ihub;
use ihub::nats::{Bus, Names, provision};

use crate::support::{Hub, Options, eventually, unique};
use crate::wallet::options;

/// Transactions in the load, and the clients sending them at once.
const TRANSACTIONS: usize = 300;
const CLIENTS: usize = 8;
const PLAYERS: usize = 12;
/// What a client waits for an answer before it gives up and retries.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(30);

const STREAMS: [&str; 5] = [
    "INBOUND",
    "OUTBOUND",
    "DLQ",
    "KV_idempotency",
    "KV_ratelimit",
];

/// One HTTP attempt of a client.
#[derive(Clone, Debug)]
struct Attempt {
    sent: Instant,
    answered: Instant,
    /// The status, or None for a timeout or a refused connection.
    status: Option<u16>,
}

/// One transaction of the load, as the client ended it.
#[derive(Clone, Debug)]
struct Sent {
    key: String,
    kind: &'static str,
    player: String,
    amount: i64,
    /// The transaction id of every 2xx answer (one, unless a retry got another).
    ids: Vec<String>,
}

fn transaction(i: usize) -> (String, &'static str, Value) {
    let kind = if i % 3 == 2 { "credit" } else { "debit" };
    let body = json!({
        "player_id": format!("player-{}", i % PLAYERS),
        "amount": 1 + (i as i64 * 7) % 97,
        "currency": "EUR",
    });
    (format!("cluster-{i}"), kind, body)
}

async fn stream_cluster(bus: &Bus, name: &str) -> Option<(usize, ClusterInfo)> {
    let name = match name.strip_prefix("KV_") {
        Some(bucket) => format!("KV_{}", bus.names.kv_bucket(bucket)),
        None => bus.names.stream(name),
    };
    let info = bus.js.get_stream(&name).await.ok()?.get_info().await.ok()?;
    Some((info.config.num_replicas, info.cluster?))
}

/// A leader, and every other replica current.
fn settled(cluster: &ClusterInfo, replicas: usize) -> bool {
    cluster.leader.is_some()
        && cluster.replicas.len() == replicas - 1
        && cluster.replicas.iter().all(|p| p.current && !p.offline)
}

async fn consumer_cluster(bus: &Bus, stream: &str, durable: &str) -> Option<ClusterInfo> {
    let mut consumer: PullConsumer = bus
        .stream(stream)
        .await
        .ok()?
        .get_consumer(durable)
        .await
        .ok()?;
    consumer.info().await.ok()?.cluster.clone()
}

/// Every stream and bucket of `bus` has `replicas` replicas, a leader and the rest current; the
/// wallet's consumers (which inherit the stream's replicas) a leader and as many peers. (A
/// consumer's peers may read "not current" until they see activity; on NATS 2.9 one scaled up
/// in place may stay so for long.)
async fn assert_replicated(bus: &Bus, replicas: usize) {
    let prefix = bus.names.prefix();
    for name in STREAMS {
        let what = format!("{prefix} {name} on {replicas} current replicas");
        eventually(&what, WAIT, || async {
            stream_cluster(bus, name)
                .await
                .filter(|(n, cluster)| *n == replicas && settled(cluster, replicas))
        })
        .await;
    }
    for (stream, durable) in [
        ("INBOUND", "stage-wallet"),
        ("OUTBOUND", "deliver-operator"),
        ("OUTBOUND", "deliver-rgs"),
    ] {
        let what = format!("{prefix} {durable} on {replicas} replicas");
        eventually(&what, WAIT, || async {
            consumer_cluster(bus, stream, durable)
                .await
                .filter(|c| c.leader.is_some() && c.replicas.len() == replicas - 1)
        })
        .await;
    }
}

/// A free loopback port for an ingress process (the operator mock calls one back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_survives_the_loss_of_the_inbound_leader_on_a_three_node_cluster() {
    let started = Instant::now();
    // Dropped last: the servers outlive the hub's processes and its clean-up.
    let mut cluster = NatsCluster::start(3).await;
    let ingress_ports = [free_port(), free_port()];
    let hub = Hub::start(Options {
        no_consumers: true,
        no_ingress: true,
        ..options().with(vec![
            ("NATS_URL", cluster.url()),
            (
                "HUB_CALLBACK_URL",
                format!("http://127.0.0.1:{}/webhooks/incoming", ingress_ports[0]),
            ),
            ("NATS_REPLICAS", "3".into()),
            // Postgres is shared with every other test: 8 connections per consumer process.
            ("CONSUMER_CONCURRENCY", "8".into()),
        ])
    })
    .await;

    // The hub's setup made every stream R3 (NATS_REPLICAS=3), as a new deployment on a cluster
    // does; `ihub setup` run again keeps them so, without a warning.
    let (ok, out) = Ihub::run(&["setup"], &hub.env()).await;
    assert!(ok, "ihub setup failed: {out}");
    assert!(
        out.contains("INBOUND (") && out.contains("3 replicas") && !out.contains("warning"),
        "{out}"
    );
    assert_replicated(&hub.bus, 3).await;

    // An existing single-server deployment moved onto the cluster: `ihub setup` with
    // NATS_REPLICAS=3 turns its R1 streams and buckets into R3, and the consumers follow. (On a
    // scratch prefix: on NATS 2.9 such streams must not take the failover below, see
    // `scaling_up_loses_writes`.)
    let scratch = Bus::new(hub.bus.client.clone(), Names::new(unique('s')));
    let mut env = hub.env();
    env.retain(|(k, _)| k != "NATS_PREFIX" && k != "NATS_REPLICAS");
    env.push(("NATS_PREFIX".into(), scratch.names.prefix().to_string()));
    let (ok, out) = Ihub::run(&["setup"], &env).await;
    assert!(ok && out.contains("1 replica"), "{out}");
    assert_replicated(&scratch, 1).await;
    env.push(("NATS_REPLICAS".into(), "3".into()));
    let (ok, out) = Ihub::run(&["setup"], &env).await;
    assert!(ok && out.contains("3 replicas"), "{out}");
    let version = hub.bus.client.server_info().version;
    assert_eq!(
        out.contains("warning"),
        version.starts_with("2.9."),
        "{version}: {out}"
    );
    assert_replicated(&scratch, 3).await;
    provision::delete_all(&scratch.js, &scratch.names)
        .await
        .expect("delete the scratch streams");

    let set_up = started.elapsed();

    // Two ingress and two consumer processes, each given all three servers.
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    for port in ingress_ports {
        let mut env = hub.env();
        env.push(("HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
        let mut ingress = Ihub::spawn(&["ingress", "--integrations", "wallet"], &env);
        let line = ingress.wait_for_line("listening on").await;
        urls.push(line.rsplit(' ').next().unwrap().to_string());
        processes.push(ingress);
    }
    for _ in 0..2 {
        let mut consume = Ihub::spawn(&["consume", "--integrations", "wallet"], &hub.env());
        consume.wait_for_line("consumers running").await;
        processes.push(consume);
    }

    // The load: clients take the next transaction and send it until it is answered 2xx,
    // alternating between the ingresses, with the same Idempotency-Key every time.
    let http = ihub::http_client::client(CLIENT_TIMEOUT);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let load_started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (http, urls, next, accepted, attempts) = (
            http.clone(),
            urls.clone(),
            next.clone(),
            accepted.clone(),
            attempts.clone(),
        );
        let signer = hub.signer();
        clients.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TRANSACTIONS {
                    return sent;
                }
                let (key, kind, body) = transaction(i);
                let mut ids = Vec::new();
                for attempt in 0u32.. {
                    let url = &urls[(i + attempt as usize) % urls.len()];
                    let mut request = http
                        .post(format!("{url}/wallet/{kind}"))
                        .header("idempotency-key", &key)
                        .json(&body);
                    for (name, value) in signer.headers_for(&body) {
                        request = request.header(name, value);
                    }
                    let at = Instant::now();
                    let response = request.send().await;
                    let (status, answer) = match response {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            (Some(status), response.json::<Value>().await.ok())
                        }
                        Err(_) => (None, None),
                    };
                    attempts.lock().unwrap().push(Attempt {
                        sent: at,
                        answered: Instant::now(),
                        status,
                    });
                    match status {
                        Some(200..=299) => {
                            let answer = answer.unwrap_or_default();
                            let id = answer["transaction_id"].as_str().unwrap_or_default();
                            ids.push(id.to_string());
                            accepted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Some(status) if status < 500 => {
                            panic!("{key}: {status} {answer:?}")
                        }
                        // 5xx, timeout, refused: back off a little, as an RGS does, and retry.
                        _ => {
                            assert!(attempt < 200, "{key} never accepted");
                            let backoff = 20u64 << attempt.min(4);
                            tokio::time::sleep(Duration::from_millis(backoff)).await;
                        }
                    }
                }
                sent.push(Sent {
                    key,
                    kind,
                    player: body["player_id"].as_str().unwrap().to_string(),
                    amount: body["amount"].as_i64().unwrap(),
                    ids,
                });
            }
        });
    }

    // A third of the way in, kill the node that leads INBOUND; restart it on its store once
    // two thirds are accepted.
    eventually("a third of the load accepted", WAIT, || async {
        (accepted.load(Ordering::SeqCst) >= TRANSACTIONS / 3).then_some(())
    })
    .await;
    let (_, inbound) = stream_cluster(&hub.bus, "INBOUND")
        .await
        .expect("INBOUND info");
    let leader = inbound.leader.expect("INBOUND has a leader");
    let accepted_before_kill = accepted.load(Ordering::SeqCst);
    let killed_at = Instant::now();
    cluster.kill(&leader).await;
    eprintln!(
        "killed {leader} (INBOUND leader) after {accepted_before_kill} accepted, {} ms into the load",
        (killed_at - load_started).as_millis()
    );
    eventually("two thirds of the load accepted", WAIT, || async {
        (accepted.load(Ordering::SeqCst) >= 2 * TRANSACTIONS / 3).then_some(())
    })
    .await;
    let restarted_at = Instant::now();
    cluster.restart(&leader);

    let mut sent: Vec<Sent> = Vec::new();
    while let Some(result) = clients.join_next().await {
        sent.extend(result.expect("a client failed"));
    }
    let load_ended = Instant::now();
    assert_eq!(sent.len(), TRANSACTIONS);

    // The restarted node catches up.
    eventually(&format!("{leader} back"), WAIT, || async {
        cluster.is_up(&leader).await.then_some(())
    })
    .await;
    for name in STREAMS {
        eventually(&format!("{name} current on every node"), WAIT, || async {
            stream_cluster(&hub.bus, name)
                .await
                .filter(|(_, cluster)| settled(cluster, 3))
        })
        .await;
    }

    // Every accepted transaction is booked by the operator, once.
    let accepted_ids: HashSet<String> = sent.iter().flat_map(|s| s.ids.clone()).collect();
    let deadline = Instant::now() + WAIT;
    let booked = loop {
        let booked = hub.operator().transactions();
        let ids: HashSet<&str> = booked
            .iter()
            .map(|t| t.external_transaction_id.as_str())
            .collect();
        let missing: Vec<&String> = accepted_ids
            .iter()
            .filter(|id| !ids.contains(id.as_str()))
            .collect();
        if missing.is_empty() {
            break booked;
        }
        if Instant::now() > deadline {
            panic!(
                "{} accepted transactions not booked after {WAIT:?}: {}",
                missing.len(),
                diagnose(&hub, &missing).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let report = Report::of(
        &attempts.lock().unwrap(),
        killed_at,
        load_started,
        load_ended,
    );
    eprintln!(
        "cluster failover: {TRANSACTIONS} transactions over {CLIENTS} clients and 2 ingresses; \
         killed {leader}, restarted it {} ms later; {report}; set up {} ms, load {} ms, \
         all booked {} ms",
        (restarted_at - killed_at).as_millis(),
        set_up.as_millis(),
        (load_ended - load_started).as_millis(),
        started.elapsed().as_millis()
    );

    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for t in &booked {
        *per_id
            .entry(t.external_transaction_id.as_str())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "booked more than once: {twice:?}");
    let unasked: Vec<_> = per_id
        .keys()
        .filter(|id| !accepted_ids.contains(**id))
        .collect();
    assert!(
        unasked.is_empty(),
        "booked without a 2xx for it (a second transaction for one key): {unasked:?}"
    );
    for s in &sent {
        assert_eq!(s.ids.len(), 1, "{}: {:?}", s.key, s.ids);
    }
    assert_eq!(
        accepted_ids.len(),
        TRANSACTIONS,
        "one transaction id per key"
    );
    assert_eq!(booked.len(), TRANSACTIONS);

    // The operator's balances are what the accepted transactions make them.
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for s in &sent {
        let sign = if s.kind == "debit" { -1 } else { 1 };
        *expected.entry(s.player.as_str()).or_insert(100_000) += sign * s.amount;
    }
    for (player, balance) in expected {
        assert_eq!(hub.operator().balance(player, "EUR"), balance, "{player}");
    }

    // And the hub recorded each once, completed.
    let completed: i64 = eventually("every transaction completed in Postgres", WAIT, || async {
        let (rows, completed): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM wallet_transactions",
        )
        .fetch_one(&hub.db)
        .await
        .expect("query");
        assert!(rows <= TRANSACTIONS as i64, "{rows} rows for {TRANSACTIONS} keys");
        (completed == TRANSACTIONS as i64).then_some(completed)
    })
    .await;
    assert_eq!(completed, TRANSACTIONS as i64);

    for process in processes {
        assert!(process.terminate().await, "a graceful stop exits 0");
    }
    hub.stop().await;
}

/// Where the missing transactions are: their rows, the streams, the consumers.
async fn diagnose(hub: &Hub, missing: &[&String]) -> String {
    let mut out = String::new();
    for id in missing.iter().take(5) {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT status, kind FROM wallet_transactions WHERE id::text = $1")
                .bind(id.as_str())
                .fetch_optional(&hub.db)
                .await
                .unwrap_or(None);
        let inbound = hub
            .stream_messages("INBOUND")
            .await
            .iter()
            .filter(|(_, p, _)| p["transaction_id"] == id.as_str())
            .count();
        let outbound = hub
            .stream_messages("OUTBOUND")
            .await
            .iter()
            .filter(|(_, p, _)| p.to_string().contains(id.as_str()))
            .count();
        out.push_str(&format!(
            "\n  {id}: row {row:?}, {inbound} on INBOUND, {outbound} on OUTBOUND"
        ));
    }
    for name in ["INBOUND", "OUTBOUND"] {
        let info = hub.bus.stream(name).await.unwrap().get_info().await;
        out.push_str(&format!(
            "\n  {name}: {:?} {:?}",
            info.as_ref().map(|i| &i.state),
            info.as_ref().map(|i| &i.cluster)
        ));
    }
    for (stream, durable) in [
        ("INBOUND", "stage-wallet"),
        ("OUTBOUND", "deliver-operator"),
    ] {
        let consumer: Result<PullConsumer, _> = hub
            .bus
            .stream(stream)
            .await
            .unwrap()
            .get_consumer(durable)
            .await;
        let info = match consumer {
            Ok(mut c) => c.info().await.cloned().map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        out.push_str(&format!("\n  {durable}: {info:?}"));
    }
    out
}

/// The figures of a run: what the clients saw around the kill.
struct Report {
    attempts: usize,
    accepted: usize,
    unavailable: usize,
    timeouts: usize,
    statuses: BTreeMap<u16, usize>,
    /// From the first failed attempt's sending to the last failed attempt's answer.
    window: Option<Duration>,
    /// From the kill to the first 2xx of an attempt sent after the last failure.
    kill_to_recovery: Option<Duration>,
    before_per_sec: f64,
    during_per_sec: f64,
    after_per_sec: f64,
}

impl Report {
    fn of(attempts: &[Attempt], killed: Instant, started: Instant, ended: Instant) -> Report {
        let failed: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| !matches!(a.status, Some(200..=299)))
            .collect();
        let first = failed.iter().map(|a| a.sent).min();
        let last = failed.iter().map(|a| a.answered).max();
        let ok: Vec<Instant> = attempts
            .iter()
            .filter(|a| matches!(a.status, Some(200..=299)))
            .map(|a| a.answered)
            .collect();
        let rate = |from: Instant, to: Instant| {
            let n = ok.iter().filter(|t| **t >= from && **t < to).count();
            n as f64 / (to - from).as_secs_f64().max(0.001)
        };
        let window_end = last.unwrap_or(killed);
        let mut statuses = BTreeMap::new();
        for status in failed.iter().filter_map(|a| a.status) {
            *statuses.entry(status).or_default() += 1;
        }
        Report {
            attempts: attempts.len(),
            accepted: ok.len(),
            unavailable: failed.len(),
            timeouts: failed.iter().filter(|a| a.status.is_none()).count(),
            statuses,
            window: first.zip(last).map(|(f, l)| l - f),
            kill_to_recovery: ok
                .iter()
                .filter(|t| **t > window_end)
                .min()
                .map(|t| *t - killed),
            before_per_sec: rate(started, killed),
            during_per_sec: rate(killed, window_end.max(killed + Duration::from_millis(1))),
            after_per_sec: rate(window_end, ended),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| d.as_millis().to_string());
        write!(
            f,
            "{} attempts, {} accepted, {} unavailable (5xx by status {:?}, {} timeouts or refused); \
             5xx/unavailable window {} ms, kill to recovery {} ms; accepted/s before {:.0}, \
             during the window {:.0}, after {:.0}",
            self.attempts,
            self.accepted,
            self.unavailable,
            self.statuses,
            self.timeouts,
            ms(self.window),
            ms(self.kill_to_recovery),
            self.before_per_sec,
            self.during_per_sec,
            self.after_per_sec,
        )
    }
}
