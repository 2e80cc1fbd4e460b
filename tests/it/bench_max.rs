//! `ihub bench --scenario max` against a test hub: briefly, for the shape of its summary and
//! that the reads it timed were what it says (no speed is asserted).

use serde_json::Value;

use ihub::integrations::max::mocks::transactions::TransactionsMock;

use crate::support::Hub;
use crate::support::process::Ihub;

#[tokio::test]
async fn the_max_scenario_reports_cached_and_uncached_reads() {
    let hub = Hub::start(crate::max::options()).await;
    let txns = hub.mock::<TransactionsMock>();
    let (ok, out, err) = Ihub::run_full(
        &[
            "bench",
            "--scenario",
            "max",
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--e2e-rate",
            "40",
            "--json",
        ],
        &hub.env_as_dev(),
    )
    .await;
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).expect("one JSON object on stdout");
    for key in [
        "raw_request_reply_per_s",
        "cached_per_s",
        "cached_p99_ms",
        "uncached_p50_ms",
        "uncached_p99_ms",
    ] {
        assert!(summary[key].is_number(), "{key} in {summary}\n{err}");
    }
    assert_eq!(summary["answered_at_rate"], 40, "{summary}");
    // The uncached reads went to the partner, 20 ms late each; the cached ones did not.
    assert!(
        summary["uncached_p50_ms"].as_f64().unwrap() >= 20.0,
        "{summary}"
    );
    let (misses,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM integration_log WHERE operation = 'get_transaction_status' AND status_code = 200",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(
        misses,
        20 + 40,
        "the warm-up and the uncached phase, nothing else"
    );
    assert_eq!(
        txns.faults.requests() as i64,
        misses + 1,
        "and one token request"
    );
    hub.stop().await;
}
