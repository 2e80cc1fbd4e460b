//! The wallet as its partners see it, for the tools that drive a running hub (`ihub bench`,
//! `ihub chaos`): an RGS sending signed debits and credits, what the operator mock booked, and
//! the work the wallet's consumers still have.

use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Secret;
use crate::nats::Bus;
use crate::signatures::TimestampedHmac;

/// An RGS: signed `POST /wallet/{debit,credit}` with an Idempotency-Key.
pub struct Rgs {
    pub http: reqwest::Client,
    url: String,
    signer: TimestampedHmac,
}

/// The hub's answer to one request.
pub struct Answer {
    pub status: u16,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
    /// `Retry-After`, in seconds, when the hub sent one.
    pub retry_after: Option<Duration>,
}

impl Rgs {
    /// An RGS calling the ingress at `url`, signing with `secret`, with up to `in_flight`
    /// connections and `timeout` per request.
    pub fn new(
        url: &str,
        secret: Secret,
        in_flight: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        crate::tls::install_crypto();
        Ok(Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(in_flight * 2)
                .timeout(timeout)
                .build()?,
            url: url.trim_end_matches('/').to_string(),
            // The tolerance only matters to the side that verifies.
            signer: TimestampedHmac::new(secret, Duration::from_secs(300)),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `operation` is `debit` or `credit`; the body is signed as sent.
    pub async fn post(&self, operation: &str, key: &str, body: &Value) -> reqwest::Result<Answer> {
        let mut request = self
            .http
            .post(format!("{}/wallet/{operation}", self.url))
            .header("idempotency-key", key)
            .json(body);
        for (name, value) in self.signer.headers_for(body) {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.json().await.unwrap_or_default();
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }

    /// Whether the ingress answers `/health`; the error says how to start a hub.
    pub async fn check_health(&self) -> anyhow::Result<()> {
        self.http
            .get(format!("{}/health", self.url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| {
                format!(
                    "no hub answers at {}: start one with `cargo run --release -- dev`",
                    self.url
                )
            })?;
        Ok(())
    }
}

/// One transaction the operator mock booked (`GET /v2/transactions`).
#[derive(Deserialize)]
pub struct Booked {
    /// The hub's transaction id.
    pub external_transaction_id: String,
    pub player_id: String,
    /// `withdraw` or `deposit`.
    #[serde(rename = "type")]
    pub operation: String,
    /// When its first request arrived, unix microseconds.
    pub received_at_us: i64,
}

#[derive(Deserialize)]
struct BookedList {
    transactions: Vec<Booked>,
}

/// What the operator mock at `operator_url` booked after `since_us` (unix microseconds).
pub async fn booked_since(
    http: &reqwest::Client,
    operator_url: &str,
    since_us: i64,
) -> anyhow::Result<Vec<Booked>> {
    let url = format!(
        "{}/v2/transactions?received_after_us={since_us}",
        operator_url.trim_end_matches('/')
    );
    let list: BookedList = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("could not read the operator mock's transactions at {url}"))?
        .json()
        .await?;
    Ok(list.transactions)
}

/// Messages the wallet's debit path (`stage-wallet`, `deliver-operator`) has not finished:
/// pending plus in hand.
pub async fn backlog(bus: &Bus) -> anyhow::Result<u64> {
    let mut backlog = 0;
    for (stream_name, durable) in [
        ("INBOUND", "stage-wallet"),
        ("OUTBOUND", "deliver-operator"),
    ] {
        let stream = bus.stream(stream_name).await?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(durable)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let info = consumer.info().await?;
        backlog += info.num_pending + info.num_ack_pending as u64;
    }
    Ok(backlog)
}
