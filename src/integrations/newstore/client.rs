//! NewStore as a client of the hub: signed webhook events, for `ihub simulate newstore` and
//! the benchmark.

use anyhow::Context as _;
use serde_json::Value;

use super::domain::EventKind;
use super::signature::{SIGNATURE_HEADER, sign};
use super::simulate;
use crate::config::Secret;

/// Sends signed events to `url` (the hub's `/webhooks/newstore`).
pub struct Sender {
    pub http: reqwest::Client,
    pub url: String,
    pub secret: Secret,
}

impl Sender {
    /// POSTs `event` signed; returns the status and the answer.
    pub async fn send(&self, event: &Value) -> anyhow::Result<(u16, Value)> {
        let raw = serde_json::to_vec(event)?;
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, &raw))
            .body(raw)
            .send()
            .await
            .with_context(|| format!("the hub at {} does not answer: start it with `cargo run --release -- dev`", self.url))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

/// `ihub simulate newstore`: `count` events of `kind` (for one order, or one order each).
pub async fn simulate(
    sender: &Sender,
    kind: EventKind,
    count: u64,
    order_id: Option<&str>,
) -> anyhow::Result<()> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    for n in 0..count {
        let order = match order_id {
            Some(id) => id.to_string(),
            None => format!("sim-{}-{n}", &run[20..]),
        };
        let event = simulate::event(kind, &order, n);
        let (status, answer) = sender.send(&event).await?;
        println!("{status} {answer}");
    }
    Ok(())
}
