//! `ihub chaos` as anyone reruns it: a scenario on a hub of its own (its nats-server, its
//! database, the hub as processes), counted against the operator mock, and cleaned up.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// A bound on a hung run, not a speed requirement: the scenario takes seconds.
const HANG: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_consumer_killed_mid_load_loses_and_duplicates_nothing() {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ihub"));
    command
        .args([
            "chaos",
            "--scenario",
            "kill-consumer",
            "--requests",
            "200",
            "--down-secs",
            "1",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("ihub chaos starts");
    let pid = child.id().expect("running").to_string();
    let output = match tokio::time::timeout(HANG, child.wait_with_output()).await {
        Ok(output) => output.expect("ihub chaos runs"),
        Err(_) => {
            // ctrl-c, so that it stops what it started before the test fails.
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status();
            panic!("ihub chaos still ran after {HANG:?}");
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON object ({err}): {}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let scenario = &summary["scenarios"][0];
    assert_eq!(scenario["scenario"], "kill-consumer", "{summary}");
    assert!(
        scenario["accepted"].as_u64().unwrap_or_default() > 0,
        "{scenario}\n{stderr}"
    );
    assert_eq!(scenario["lost"], 0, "{scenario}\n{stderr}");
    assert_eq!(scenario["duplicated"], 0, "{scenario}\n{stderr}");
    assert_eq!(scenario["drained"], true, "{scenario}\n{stderr}");
    assert!(output.status.success(), "{stderr}");

    // Nothing is left behind: its directory (NATS store, logs) and its database are gone.
    let store = stderr
        .split_whitespace()
        .find(|word| word.contains("ihub-chaos-") && word.ends_with("/nats),"))
        .map(|word| word.trim_end_matches("/nats),"))
        .unwrap_or_else(|| panic!("no store directory in the progress:\n{stderr}"));
    assert!(!std::path::Path::new(store).exists(), "{store} is left");
    let database = store.rsplit("ihub-chaos-").next().unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
    .await
    .expect("Postgres");
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(format!("ihub_chaos_{database}"))
            .fetch_one(&mut admin)
            .await
            .expect("query");
    assert!(!left, "database ihub_chaos_{database} is left");
}
