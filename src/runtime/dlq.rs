//! Dead letters: the `DLQ` stream, subjects `dlq.<consumer>`.
//!
//! A dead letter keeps the original payload and headers; the runtime adds where it came from
//! (`Ihub-Original-Subject`, `-Stream`, `-Seq`), how often it was delivered and the last error.
//! `ihub dlq replay` republishes it to the original subject with the original headers (so the
//! trace continues), then removes it from the DLQ; if it fails again it comes back under a new
//! sequence.

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::Delivery;
use crate::nats::{Bus, headers};

pub const STREAM: &str = "DLQ";
const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// Publishes `delivery` to `dlq.<consumer>`; resolves once the DLQ stream has stored it.
pub(super) async fn publish(
    bus: &Bus,
    consumer: &str,
    delivery: &Delivery,
    error: &str,
) -> anyhow::Result<()> {
    let mut dlq_headers = delivery.carried_headers(bus);
    dlq_headers.insert(headers::DLQ_CONSUMER, consumer);
    dlq_headers.insert(headers::DELIVERIES, delivery.delivered.to_string().as_str());
    dlq_headers.insert(headers::ERROR, header_safe(error).as_str());
    dlq_headers.insert(headers::FAILED_AT, chrono::Utc::now().to_rfc3339().as_str());
    // Dead-lettering the same stream message twice (a crash before the term) stores it once.
    let msg_id = format!("{}:{}", delivery.stream, delivery.stream_seq);
    bus.publish(
        &format!("dlq.{consumer}"),
        Some(&msg_id),
        dlq_headers,
        Bytes::copy_from_slice(delivery.payload()),
    )
    .await?;
    Ok(())
}

/// Header values are one line of printable text.
pub(super) fn header_safe(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(1000).collect()
}

/// A dead letter as `ihub dlq` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub seq: u64,
    pub consumer: String,
    pub original_subject: String,
    pub original_stream: String,
    pub original_seq: Option<u64>,
    pub deliveries: Option<u64>,
    pub error: String,
    pub failed_at: String,
    pub headers: Vec<(String, String)>,
    pub payload: String,
}

impl DeadLetter {
    fn from_parts(seq: u64, subject: &str, headers: Option<&HeaderMap>, payload: &[u8]) -> Self {
        let get = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let mut all: Vec<(String, String)> = headers
            .map(|h| {
                h.iter()
                    .flat_map(|(name, values)| {
                        values.iter().map(move |v| {
                            (
                                AsRef::<str>::as_ref(name).to_string(),
                                v.as_str().to_string(),
                            )
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.sort();
        let consumer = match get(headers::DLQ_CONSUMER) {
            c if c.is_empty() => subject.rsplit('.').next().unwrap_or_default().to_string(),
            c => c,
        };
        DeadLetter {
            seq,
            consumer,
            original_subject: get(headers::ORIGINAL_SUBJECT),
            original_stream: get(headers::ORIGINAL_STREAM),
            original_seq: get(headers::ORIGINAL_SEQ).parse().ok(),
            deliveries: get(headers::DELIVERIES).parse().ok(),
            error: get(headers::ERROR),
            failed_at: get(headers::FAILED_AT),
            headers: all,
            payload: String::from_utf8_lossy(payload).into_owned(),
        }
    }
}

/// Every dead letter (of one consumer, when given), oldest first.
pub async fn list(bus: &Bus, consumer: Option<&str>) -> anyhow::Result<Vec<DeadLetter>> {
    let stream = bus.stream(STREAM).await?;
    let filter = bus
        .names
        .subject(&format!("dlq.{}", consumer.unwrap_or(">")));
    let info = stream.get_info().await?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let ordered = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("could not read the DLQ")?;
    let mut messages = ordered.messages().await?;
    let mut letters = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(2), messages.next()).await;
        let Ok(Some(message)) = next else { break };
        let message = message?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let pending = info.pending;
        letters.push(DeadLetter::from_parts(
            info.stream_sequence,
            &message.subject,
            message.headers.as_ref(),
            &message.payload,
        ));
        if pending == 0 {
            break;
        }
    }
    Ok(letters)
}

async fn fetch(bus: &Bus, seq: u64) -> anyhow::Result<StreamMessage> {
    bus.stream(STREAM)
        .await?
        .get_raw_message(seq)
        .await
        .with_context(|| format!("no dead letter at sequence {seq}: see `ihub dlq list`"))
}

/// One dead letter by its DLQ sequence.
pub async fn show(bus: &Bus, seq: u64) -> anyhow::Result<DeadLetter> {
    let message = fetch(bus, seq).await?;
    Ok(DeadLetter::from_parts(
        seq,
        &message.subject,
        Some(&message.headers),
        &message.payload,
    ))
}

/// Republishes dead letter `seq` to its original subject with its original headers, then
/// removes it from the DLQ. Returns the new stream sequence.
pub async fn replay(bus: &Bus, seq: u64) -> anyhow::Result<u64> {
    let message = fetch(bus, seq).await?;
    let Some(subject) = message
        .headers
        .get(headers::ORIGINAL_SUBJECT)
        .map(|v| v.as_str().to_string())
    else {
        bail!(
            "dead letter {seq} has no {} header",
            headers::ORIGINAL_SUBJECT
        );
    };
    let mut replay_headers = HeaderMap::new();
    for (name, values) in message.headers.iter() {
        let name: &str = name.as_ref();
        let skip = headers::DLQ_ONLY
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
            || name.eq_ignore_ascii_case(NATS_MSG_ID);
        if !skip {
            for value in values {
                replay_headers.append(name, value.as_str());
            }
        }
    }
    replay_headers.insert(headers::REPLAYED_FROM, seq.to_string().as_str());
    // A second replay of the same dead letter within the duplicate window is stored once.
    replay_headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("replay:{}:{seq}", bus.names.stream(STREAM)).as_str(),
    );
    let ack = bus
        .js
        .publish_with_headers(subject.clone(), replay_headers, message.payload.clone())
        .await?
        .await
        .with_context(|| format!("could not republish to {subject}"))?;
    bus.stream(STREAM)
        .await?
        .delete_message(seq)
        .await
        .with_context(|| format!("replayed, but could not remove dead letter {seq}"))?;
    Ok(ack.sequence)
}
