//! `GET /reconciliation_data` at scale: the partners' lists read incrementally into the
//! mirror, one refresh shared by concurrent callers (within a process and across processes),
//! and the report streamed. The partners' lists are seeded straight into the mocks; every
//! report is checked against the in-memory reference (`compare::reconcile`) over the same
//! lists.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use ihub::integrations::wallet::mocks::listing::ListRequest;
use ihub::integrations::wallet::mocks::operator::Transaction;
use ihub::integrations::wallet::reconciliation::Reconciler;
use ihub::integrations::wallet::reconciliation::compare::{
    OperatorEntry, RgsEntry, reconcile, to_csv,
};
use ihub::integrations::wallet::reconciliation::mirror::Partners;

use crate::support::{Hub, eventually};
use crate::wallet::{RECONCILIATION_TOKEN, options};

const WAIT: Duration = Duration::from_secs(15);

fn booking(id: &str, operation: &str, amount: &str) -> Transaction {
    let now = chrono::Utc::now();
    Transaction {
        transaction_id: format!("op_{id}"),
        external_transaction_id: id.into(),
        player_id: "p1".into(),
        operation: operation.into(),
        amount: amount.into(),
        currency: "EUR".into(),
        balance_after: "0.00".into(),
        created_at: now,
        received_at_us: now.timestamp_micros(),
        traceparent: None,
    }
}

fn webhook(id: &str, kind: &str, status: &str, amount: i64) -> Value {
    json!({"id": format!("wh-{id}-{status}"), "transaction_id": id, "type": kind,
           "status": status, "amount": amount, "currency": "EUR"})
}

/// `n` transactions from `tx-<from>` on, listed by both partners, most agreeing: every 97th
/// differs in amount, every 101st is missing at the operator, every 103rd at the RGS, every
/// 107th was first told "failed" then "completed", every 109th has a deposit booked after
/// its withdraw.
fn seed(hub: &Hub, from: usize, n: usize) {
    let (mut hooks, mut bookings) = (Vec::new(), Vec::new());
    for i in from..from + n {
        let id = format!("tx-{i:06}");
        let amount = 100 + (i % 50) as i64;
        if i % 103 != 0 {
            if i % 107 == 0 {
                hooks.push(webhook(&id, "debit", "failed", amount));
            }
            hooks.push(webhook(&id, "debit", "completed", amount));
        }
        if i % 101 != 0 {
            let booked = if i % 97 == 0 { amount + 1 } else { amount };
            // Decimal major units, as the operator writes them.
            let major = format!("{}.{:02}", booked / 100, booked % 100);
            bookings.push(booking(&id, "withdraw", &major));
            if i % 109 == 0 {
                bookings.push(booking(&id, "deposit", "9.99"));
            }
        }
    }
    hub.rgs().seed(hooks);
    hub.operator().seed(bookings);
}

/// The report the reference computes in memory from the mocks' whole lists.
fn expected(hub: &Hub) -> (String, usize) {
    let rgs: Vec<RgsEntry> = hub
        .rgs()
        .received()
        .into_iter()
        .map(|r| serde_json::from_value(r.body).unwrap())
        .collect();
    let operator: Vec<OperatorEntry> = hub
        .operator()
        .transactions()
        .into_iter()
        .map(|t| serde_json::from_value(serde_json::to_value(t).unwrap()).unwrap())
        .collect();
    let rows = reconcile(&rgs, &operator);
    let mismatches = rows.iter().filter(|r| r.is_mismatch()).count();
    (
        String::from_utf8(to_csv(&rows).unwrap()).unwrap(),
        mismatches,
    )
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    chunks: usize,
}

impl Answer {
    fn mismatches(&self) -> usize {
        self.headers["x-mismatch-count"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

async fn report(http: &reqwest::Client, url: &str) -> Answer {
    let response = http
        .get(format!("{url}/reconciliation_data"))
        .bearer_auth(RECONCILIATION_TOKEN)
        .send()
        .await
        .expect("the ingress answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut response = response;
    let (mut body, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = response.chunk().await.expect("the body arrives whole") {
        body.extend_from_slice(&chunk);
        chunks += 1;
    }
    Answer {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
        chunks,
    }
}

/// The list requests made since the `seen` first ones.
fn since(requests: Vec<ListRequest>, seen: usize) -> Vec<ListRequest> {
    requests.into_iter().skip(seen).collect()
}

#[tokio::test]
async fn a_second_report_reads_only_what_is_new() {
    let hub = Hub::start(options().with(vec![("RECONCILIATION_PAGE_SIZE", "4".into())])).await;
    seed(&hub, 1, 10);

    let first = report(&hub.http, &hub.url).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let (csv, mismatches) = expected(&hub);
    assert_eq!(first.body, csv);
    assert_eq!(first.mismatches(), mismatches);
    // Ten transactions, four a page: three pages from the start at each partner.
    let operator = hub.operator().listing.requests();
    assert_eq!(
        operator
            .iter()
            .map(|r| (r.since.is_some(), r.returned))
            .collect::<Vec<_>>(),
        [(false, 4), (true, 4), (true, 2)]
    );
    let rgs_seen = hub.rgs().listing.requests().len();
    assert_eq!(rgs_seen, 3);

    // Nothing new: one request each, from the last cursor, answering nothing.
    let again = report(&hub.http, &hub.url).await;
    assert_eq!(again.body, csv);
    let last_cursor = operator[2].since.clone();
    let operator_again = since(hub.operator().listing.requests(), 3);
    assert_eq!(operator_again.len(), 1, "{operator_again:?}");
    assert_eq!(operator_again[0].returned, 0);
    assert_ne!(operator_again[0].since, last_cursor, "the cursor moved on");

    // Five more: only those five are read, from where the last read ended.
    seed(&hub, 11, 5);
    let third = report(&hub.http, &hub.url).await;
    let (csv, mismatches) = expected(&hub);
    assert_eq!(third.body, csv);
    assert_eq!(third.mismatches(), mismatches);
    assert_eq!(third.body.lines().count(), 1 + 15);
    let operator_third = since(hub.operator().listing.requests(), 4);
    assert_eq!(
        operator_third
            .iter()
            .map(|r| r.returned)
            .collect::<Vec<_>>(),
        [4, 1]
    );
    assert_eq!(operator_third[0].since, operator_again[0].since);
    let rgs_third = since(hub.rgs().listing.requests(), rgs_seen + 1);
    assert_eq!(rgs_third.iter().map(|r| r.returned).sum::<usize>(), 5);
    assert!(rgs_third.iter().all(|r| r.since.is_some()));
    hub.stop().await;
}

#[tokio::test]
async fn a_list_that_changed_is_read_again_and_a_partner_down_is_a_502() {
    let hub = Hub::start(options()).await;
    seed(&hub, 1, 30);
    let first = report(&hub.http, &hub.url).await;
    assert_eq!(first.status, 200);
    let operator_seen = hub.operator().listing.requests().len();

    // The operator loses a booking: its cursor expires (410), its list is read again whole.
    assert!(hub.operator().forget("tx-000005"));
    let second = report(&hub.http, &hub.url).await;
    let (csv, mismatches) = expected(&hub);
    assert_eq!(second.body, csv);
    assert_eq!(second.mismatches(), mismatches);
    assert!(
        second
            .body
            .lines()
            .any(|l| l.starts_with("tx-000005,") && l.ends_with(",missing_at_operator"))
    );
    let reread = since(hub.operator().listing.requests(), operator_seen);
    assert_eq!(
        reread
            .iter()
            .map(|r| (r.status, r.since.is_some()))
            .collect::<Vec<_>>(),
        [(410, true), (200, false)]
    );

    // The RGS is down: 502, as before; back up, the report is whole again.
    hub.rgs().faults.down();
    let down = report(&hub.http, &hub.url).await;
    assert_eq!(down.status, 502, "{}", down.body);
    let problem: Value = serde_json::from_str(&down.body).unwrap();
    assert_eq!(problem["error"], "partner_unavailable");
    hub.rgs().faults.reset();
    let back = report(&hub.http, &hub.url).await;
    assert_eq!((back.status, back.body.as_str()), (200, csv.as_str()));
    hub.stop().await;
}

fn reconciler(hub: &Hub) -> Arc<Reconciler> {
    reconciler_paging(hub, 2000)
}

fn reconciler_paging(hub: &Hub, page_size: usize) -> Arc<Reconciler> {
    Reconciler::new(
        hub.db.clone(),
        reqwest::Client::new(),
        Partners {
            rgs_url: format!("{}/webhooks", hub.rgs().url),
            operator_url: format!("{}/v2/transactions", hub.operator().url),
            page_size,
        },
    )
}

#[tokio::test]
async fn a_list_that_changes_while_it_is_read_is_read_again() {
    let hub = Hub::start(options()).await;
    seed(&hub, 1, 6);
    let reconciler = reconciler_paging(&hub, 2);
    // The first page is answered, the second waits; meanwhile the RGS loses a webhook.
    hub.rgs().listing.hold_after(1);
    let refresh = tokio::spawn({
        let reconciler = reconciler.clone();
        async move { reconciler.refresh().await }
    });
    eventually("the second page requested", WAIT, || async {
        (hub.rgs().listing.held() == 1).then_some(())
    })
    .await;
    hub.rgs().forget("tx-000002");
    hub.rgs().listing.release();
    let refreshed = refresh
        .await
        .unwrap()
        .expect("the refresh starts over and succeeds");
    assert_eq!(refreshed.reread, ["rgs"]);
    assert_eq!(refreshed.rgs_entries, 5);
    let rgs = hub.rgs().listing.requests();
    assert_eq!(
        rgs.iter()
            .map(|r| (r.status, r.since.is_some(), r.returned))
            .collect::<Vec<_>>(),
        [
            (200, false, 2),
            (410, true, 0),
            (200, false, 2),
            (200, true, 2),
            (200, true, 1)
        ]
    );
    let answer = report(&hub.http, &hub.url).await;
    let (csv, _) = expected(&hub);
    assert_eq!(answer.body, csv);
    assert!(answer.body.contains(",missing_at_rgs"));
    hub.stop().await;
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let hub = Hub::start(options()).await;
    seed(&hub, 1, 50);
    let reconciler = reconciler(&hub);

    // The first refresh is held at the RGS; nineteen callers arrive meanwhile.
    hub.rgs().listing.hold();
    let call = |reconciler: &Arc<Reconciler>| {
        let reconciler = reconciler.clone();
        tokio::spawn(async move { reconciler.refresh().await })
    };
    let first = call(&reconciler);
    eventually("the first refresh at the RGS", WAIT, || async {
        (hub.rgs().listing.held() == 1).then_some(())
    })
    .await;
    let others: Vec<_> = (0..19).map(|_| call(&reconciler)).collect();
    eventually("nineteen callers waiting", WAIT, || async {
        (reconciler.waiting() == 19).then_some(())
    })
    .await;
    hub.rgs().listing.release();

    let first = first.await.unwrap().expect("the first refresh");
    assert_eq!(first.rgs_entries, hub.rgs().received().len() as u64);
    let mut shared = Vec::new();
    for other in others {
        shared.push(other.await.unwrap().expect("the shared refresh"));
    }
    // One refresh for the first caller, one for the other nineteen, which found nothing new.
    assert!(shared.iter().all(|r| *r == shared[0]), "{shared:?}");
    assert_eq!((shared[0].rgs_entries, shared[0].operator_entries), (0, 0));
    assert_eq!(reconciler.refreshes(), 2);
    assert_eq!(hub.rgs().listing.requests().len(), 2);
    assert_eq!(hub.operator().listing.requests().len(), 2);

    // Over HTTP: twenty concurrent reports, all the same, with fewer refreshes than callers.
    hub.rgs().listing.hold();
    let before = hub.rgs().listing.requests().len();
    let answers: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (hub.http.clone(), hub.url.clone());
            tokio::spawn(async move { report(&http, &url).await })
        })
        .collect();
    eventually("a refresh at the RGS", WAIT, || async {
        (hub.rgs().listing.held() == 1).then_some(())
    })
    .await;
    hub.rgs().listing.release();
    let (csv, mismatches) = expected(&hub);
    for answer in answers {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.mismatches(), mismatches);
        assert_eq!(answer.body, csv);
    }
    let refreshes = hub.rgs().listing.requests().len() - before;
    assert!(refreshes < 20, "{refreshes} refreshes for 20 callers");
    hub.stop().await;
}

#[tokio::test]
async fn refreshes_in_two_processes_take_turns() {
    let hub = Hub::start(options()).await;
    seed(&hub, 1, 40);
    // Two reconcilers on one database stand for two ingress processes.
    let (one, two) = (reconciler(&hub), reconciler(&hub));
    hub.rgs().listing.hold();
    let first = tokio::spawn({
        let one = one.clone();
        async move { one.refresh().await }
    });
    eventually("the first refresh at the RGS", WAIT, || async {
        (hub.rgs().listing.held() == 1).then_some(())
    })
    .await;
    let second = tokio::spawn({
        let two = two.clone();
        async move { two.refresh().await }
    });
    eventually("the second refresh waiting for the lock", WAIT, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&hub.db)
        .await
        .unwrap();
        (waiting == 1).then_some(())
    })
    .await;
    hub.rgs().listing.release();
    let first = first.await.unwrap().expect("first");
    let second = second.await.unwrap().expect("second");
    assert_eq!(first.rgs_entries, hub.rgs().received().len() as u64);
    // The second read from where the first left off: nothing.
    assert_eq!((second.rgs_entries, second.operator_entries), (0, 0));
    let requests = hub.rgs().listing.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].since.is_some());
    hub.stop().await;
}

#[tokio::test]
async fn a_large_report_is_streamed_in_pages() {
    let hub = Hub::start(options()).await;
    seed(&hub, 1, 20_000);
    let answer = report(&hub.http, &hub.url).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers.get("content-length").is_none(),
        "streamed, not buffered: {:?}",
        answer.headers
    );
    assert!(answer.chunks > 1, "one chunk per page");
    let (csv, mismatches) = expected(&hub);
    // tx-010403 is missing on both sides: 19,999 rows.
    assert_eq!(answer.body.lines().count(), 1 + 19_999);
    assert_eq!(answer.mismatches(), mismatches);
    assert_eq!(
        answer
            .body
            .lines()
            .filter(|l| !l.ends_with(",match"))
            .count()
            - 1,
        mismatches
    );
    assert!(
        answer.body == csv,
        "the streamed report differs from the reference"
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_bench_scenario_reports_rows_time_and_memory() {
    let env = [(
        "DATABASE_URL".to_string(),
        "postgres://postgres@127.0.0.1:5432/ihub".to_string(),
    )];
    let (ok, out, err) = crate::support::process::Ihub::run_full(
        &[
            "bench",
            "--scenario",
            "reconciliation",
            "--transactions",
            "2000",
            "--increment",
            "100",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(summary["report"]["rows"], 2100);
    // Every 100th differs in amount, every 1000th (+1) is missing at the operator.
    assert_eq!(summary["report"]["mismatches"], 22);
    assert_eq!(summary["refresh"]["rgs_entries"], 100);
    assert!(summary["memory"]["peak_rss_mib_report"].as_f64().unwrap() > 0.0);
}
