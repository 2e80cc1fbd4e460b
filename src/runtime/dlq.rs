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

/// Which dead letters a command takes: all of them, or those that pass every filter given.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// DLQ sequences from this one...
    pub from: Option<u64>,
    /// ...up to this one, both included.
    pub to: Option<u64>,
    pub consumer: Option<String>,
    /// Failed at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Original subject (without the deployment's prefix) matching this NATS pattern
    /// (`in.wallet.*`, `out.>`).
    pub subject: Option<String>,
}

impl Filter {
    fn passes_names(&self, names: &crate::nats::Names, letter: &DeadLetter) -> bool {
        let failed_at = chrono::DateTime::parse_from_rfc3339(&letter.failed_at).ok();
        self.from.is_none_or(|from| letter.seq >= from)
            && self.to.is_none_or(|to| letter.seq <= to)
            && self
                .since
                .is_none_or(|since| failed_at.is_some_and(|at| at >= since))
            && self.subject.as_deref().is_none_or(|pattern| {
                crate::nats::subject_matches(pattern, names.unprefixed(&letter.original_subject))
            })
    }
}

/// `--since`: an RFC 3339 time, or how long ago (`90s`, `15m`, `2h`, `1d`).
pub fn parse_since(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number.parse().map_err(|_| {
        anyhow::anyhow!("--since {text:?}: an RFC 3339 time or a duration like 15m, 2h, 1d")
    })?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--since {text:?}: a duration ends in s, m, h or d"),
    };
    Ok(now - chrono::Duration::seconds(seconds))
}

/// The dead letters `filter` takes, oldest first.
pub async fn select(bus: &Bus, filter: &Filter) -> anyhow::Result<Vec<DeadLetter>> {
    let letters = list(bus, filter.consumer.as_deref()).await?;
    Ok(letters
        .into_iter()
        .filter(|l| filter.passes_names(&bus.names, l))
        .collect())
}

/// Replays `letters` in order, at most `rate` per second when given, calling `progress`
/// after each with (done, total).
pub async fn replay_all(
    bus: &Bus,
    letters: &[DeadLetter],
    rate: Option<f64>,
    mut progress: impl FnMut(usize, usize, &DeadLetter, u64),
) -> anyhow::Result<usize> {
    let interval = rate
        .filter(|r| *r > 0.0)
        .map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let started = tokio::time::Instant::now();
    for (i, letter) in letters.iter().enumerate() {
        if let Some(interval) = interval {
            tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        }
        let new_seq = replay(bus, letter.seq).await?;
        progress(i + 1, letters.len(), letter, new_seq);
    }
    bus.client.flush().await?;
    Ok(letters.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(seq: u64, subject: &str, failed_at: &str) -> DeadLetter {
        DeadLetter {
            seq,
            consumer: "deliver-rgs".into(),
            original_subject: subject.into(),
            original_stream: "OUTBOUND".into(),
            original_seq: Some(seq),
            deliveries: Some(1),
            error: String::new(),
            failed_at: failed_at.into(),
            headers: Vec::new(),
            payload: String::new(),
        }
    }

    #[test]
    fn since_takes_a_time_or_how_long_ago() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            parse_since("15m", now).unwrap().to_rfc3339(),
            "2026-12-06T11:45:00+00:00"
        );
        assert_eq!(
            parse_since("1d", now).unwrap().to_rfc3339(),
            "2026-12-05T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-12-06T10:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-12-06T10:00:00+00:00"
        );
        assert!(parse_since("soon", now).is_err());
        assert!(parse_since("5w", now).is_err());
    }

    #[test]
    fn filters_combine() {
        let names = crate::nats::Names::new("t1");
        let subject = |s: &str| names.subject(s);
        let letters = [
            letter(1, &subject("out.rgs.webhook"), "2026-12-06T10:00:00+00:00"),
            letter(
                2,
                &subject("out.operator.withdraw"),
                "2026-12-06T11:00:00+00:00",
            ),
            letter(3, &subject("out.rgs.webhook"), "2026-12-06T12:00:00+00:00"),
        ];
        let pick = |filter: Filter| -> Vec<u64> {
            letters
                .iter()
                .filter(|l| filter.passes_names(&names, l))
                .map(|l| l.seq)
                .collect()
        };
        assert_eq!(pick(Filter::default()), [1, 2, 3]);
        assert_eq!(
            pick(Filter {
                from: Some(2),
                ..Filter::default()
            }),
            [2, 3]
        );
        assert_eq!(
            pick(Filter {
                to: Some(2),
                ..Filter::default()
            }),
            [1, 2]
        );
        assert_eq!(
            pick(Filter {
                subject: Some("out.rgs.*".into()),
                ..Filter::default()
            }),
            [1, 3]
        );
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            pick(Filter {
                since: Some(since),
                subject: Some("out.>".into()),
                to: Some(2),
                ..Filter::default()
            }),
            [2]
        );
    }
}
