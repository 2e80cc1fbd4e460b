//! `ihub bench --scenario newstore` against a test hub: briefly, for the shape of its summary
//! (no speed is asserted).

use serde_json::Value;

use ihub::integrations::newstore::mocks::hail::HailMock;

use crate::support::Hub;
use crate::support::process::Ihub;

#[tokio::test]
async fn the_newstore_scenario_reports_raw_accepted_delivered_and_e2e() {
    let hub = Hub::start(crate::newstore::options()).await;
    let hail = hub.mock::<HailMock>();
    // As `ihub dev` binds them: the bench finds the ingress and the mock from these.
    let mut env = hub.env_as_dev();
    env.push((
        "HAIL_MOCK_ADDR".into(),
        hail.url.trim_start_matches("http://").to_string(),
    ));
    let (ok, out, err) = Ihub::run_full(
        &[
            "bench",
            "--scenario",
            "newstore",
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
        "accepted_per_s",
        "delivered_per_s",
        "e2e_rate",
        "e2e_p50_ms",
        "e2e_p99_ms",
    ] {
        assert!(summary[key].is_number(), "{key} in {summary}\n{err}");
    }
    assert!(summary["raw_per_s"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(
        summary["accepted_per_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(
        summary["delivered_per_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    // Every accepted event's sale reached Hail, once.
    assert_eq!(summary["delivered"], summary["accepted"], "{summary}");
    assert_eq!(summary["e2e_rate"], 50.0, "{summary}");
    assert_eq!(summary["e2e_events"], 50, "{summary}");
    assert_eq!(summary["e2e_missing"], 0, "{summary}");
    let (p50, p99) = (
        summary["e2e_p50_ms"].as_f64().unwrap(),
        summary["e2e_p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{summary}");
    let sales = hail
        .mock
        .arrivals()
        .iter()
        .filter(|(key, _)| key.starts_with("bench-") && key.ends_with("-sale"))
        .count();
    assert_eq!(
        sales as u64,
        summary["accepted"].as_u64().unwrap() + 50,
        "{summary}"
    );
    hub.stop().await;
}
