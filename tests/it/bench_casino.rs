//! `ihub bench --scenario casino` against a test hub: briefly, for the shape of its summary and
//! that every debit it sent was booked (no speed is asserted).

use serde_json::Value;

use crate::support::Hub;
use crate::support::process::Ihub;

#[tokio::test]
async fn the_casino_scenario_reports_raw_sustained_hot_player_and_rate() {
    let hub = Hub::start(crate::casino::options("[]")).await;
    let env = hub.env_as_dev();
    let (ok, out, err) = Ihub::run_full(
        &[
            "bench",
            "--scenario",
            "casino",
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--e2e-rate",
            "50",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).expect("one JSON object on stdout");
    for key in [
        "raw_per_s",
        "raw_request_reply_per_s",
        "sustained_per_s",
        "p50_ms_at_500",
        "p99_ms_at_500",
        "hot_player_per_s",
        "hot_player_p99_ms",
    ] {
        assert!(summary[key].is_number(), "{key} in {summary}\n{err}");
    }
    assert!(
        summary["sustained_per_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert_eq!(summary["answered_at_rate"], 50, "{summary}");
    // Every debit answered 200 was booked once: balance = sum of entries everywhere.
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM casino_wallets w WHERE w.balance <> (SELECT sum(amount) FROM casino_ledger l WHERE l.user_id = w.user_id AND l.currency = w.currency)",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    hub.stop().await;
}
