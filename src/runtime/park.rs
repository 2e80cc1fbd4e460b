//! Parking: per-key waiting. A message that must wait for something that has not happened yet
//! for its key (a return before its order's sale) waits aside; messages of other keys go on.
//!
//! A stage returns [`Failure::park`](super::Failure::park)`(key, reason)`. The runtime stores
//! the message (payload and headers, plus where it came from, the consumer, the key, the reason
//! and the time) in the `PARKED` stream on `parked.<consumer>.<token>` ([`token`] of the key),
//! with `Nats-Msg-Id` `<stream>:<seq>` so that a crash before the ack parks it once; then it
//! calls [`Stage::parked`](super::Stage::parked) and acks the original. A park is not a
//! failure: it spends no attempt and tells the circuit breaker nothing.
//!
//! When the key is ready, whoever made it ready calls [`release`]: every message parked for
//! (consumer, key) goes back to its original subject, oldest first, with its original headers
//! (trace context included) and `Ihub-Released-From: <PARKED seq>`, and leaves `PARKED`. A
//! released message is a new message on its stream, with all its attempts. [`parked`] and
//! [`list`] show what waits (`ihub parked list`).
//!
//! # The rule that closes the race
//!
//! The parking stage decides in `handle` that the key is not ready, but the message is stored
//! in `PARKED` only after `handle` returns. A key made ready and released in between would find
//! nothing to release, and the message would wait for good. So:
//!
//! 1. **The releasing side commits readiness first, then calls [`release`]**, and calls it
//!    again whenever it runs and finds the key ready already (its own redelivery after a crash
//!    between commit and release): with nothing parked, a release is one request.
//! 2. **The parking side checks readiness again in [`Stage::parked`](super::Stage::parked)**,
//!    which runs once the message is stored in `PARKED`, and answers [`Readiness::Ready`] if the
//!    key is ready by now: the runtime then releases the key itself.
//!
//! Either the re-check sees the committed readiness (and releases), or it read before that
//! commit, and then the message was stored before it, so the releaser's [`release`] finds it.
//! Readiness must be a committed fact that both sides read (a row in Postgres, read in its own
//! transaction after the park is stored; recording "parked" in that transaction is natural).
//!
//! # Limits
//!
//! * Two releases of one key at once, or a release again after a crash between republishing
//!   and removing: the copies carry `Nats-Msg-Id` `released:<PARKED stream>:<seq>`, stored once
//!   by their stream within its duplicate window (2 min for `INBOUND` and `OUTBOUND`). A
//!   release repeated later than that after such a crash runs those messages again; the
//!   stages' idempotency (unique keys) absorbs it, as it absorbs any redelivery.
//! * Parking waits for a condition; it is not a queue per key. A message whose key is ready
//!   runs at once, possibly before released ones still on their way. Released messages arrive
//!   in parking order; a consumer running several messages at a time may overlap them, as it
//!   may any two messages.
//! * A released message goes to its original subject: every durable whose filter takes that
//!   subject gets it again (as with `ihub dlq replay`), so a durable that parks should own its
//!   subjects.
//! * `PARKED` has no age limit. At its message limit a park is refused and the runtime holds
//!   the message and tries again, as through an outage: nothing parked is dropped.

use std::fmt::Write as _;

use anyhow::{Context as _, ensure};
use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageError, RawMessageErrorKind, Stream};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Delivery;
use super::dlq::header_safe;
use crate::nats::{Bus, Unavailable, headers};

pub const STREAM: &str = "PARKED";
const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// What [`Stage::parked`](super::Stage::parked) found when it checked the key again, once the
/// message was stored in `PARKED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Still not ready: the message waits for a [`release`].
    Waiting,
    /// Ready meanwhile: the runtime releases the key at once.
    Ready,
}

/// Longer keys are hashed, so that subjects stay short.
const PLAIN_TOKEN_MAX: usize = 96;

/// The subject token of `key`: ASCII letters, digits and `-` as they are, every other byte as
/// `_XX` (upper-case hex), the empty key as `_`; a token longer than 96 characters becomes `~`
/// and the SHA-256 of the key in hex. Always a valid, non-empty subject token; distinct keys
/// give distinct tokens; [`key_of`] reverses all but the hashed ones.
pub fn token(key: &str) -> String {
    if key.is_empty() {
        return "_".into();
    }
    let mut token = String::with_capacity(key.len());
    for byte in key.bytes() {
        if plain(byte) {
            token.push(byte as char);
        } else {
            let _ = write!(token, "_{byte:02X}");
        }
    }
    if token.len() > PLAIN_TOKEN_MAX {
        format!("~{}", hex::encode(Sha256::digest(key.as_bytes())))
    } else {
        token
    }
}

fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// The key a [`token`] stands for; `None` for a hashed token or one [`token`] never makes.
pub fn key_of(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
                {
                    return None;
                }
                let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                if plain(byte) {
                    return None;
                }
                key.push(byte);
                i += 3;
            }
            byte if plain(byte) => {
                key.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(key).ok()
}

/// `parked.<durable>.<token of key>`, without the deployment prefix.
pub fn subject(durable: &str, key: &str) -> anyhow::Result<String> {
    Ok(format!(
        "parked.{}.{}",
        consumer_token(durable)?,
        token(key)
    ))
}

/// A durable's name is a subject token already (JetStream refuses the others); say so clearly.
fn consumer_token(durable: &str) -> anyhow::Result<&str> {
    ensure!(
        !durable.is_empty()
            && !durable
                .chars()
                .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control()),
        "{durable:?} is not a consumer name"
    );
    Ok(durable)
}

/// Stores `delivery` in `PARKED` for (`durable`, `key`); resolves to its `PARKED` sequence
/// once stored (the first one's, when this stream message was parked already).
pub(super) async fn publish(
    bus: &Bus,
    durable: &str,
    delivery: &Delivery,
    key: &str,
    reason: &str,
) -> anyhow::Result<u64> {
    let subject = subject(durable, key)?;
    let mut parked = delivery.carried_headers(bus);
    parked.insert(headers::PARKED_BY, durable);
    parked.insert(headers::PARK_KEY, header_safe(key).as_str());
    parked.insert(headers::PARK_REASON, header_safe(reason).as_str());
    parked.insert(headers::PARKED_AT, chrono::Utc::now().to_rfc3339().as_str());
    let msg_id = format!("{}:{}", delivery.stream, delivery.stream_seq);
    let ack = bus
        .publish(
            &subject,
            Some(&msg_id),
            parked,
            Bytes::copy_from_slice(delivery.payload()),
        )
        .await?;
    Ok(ack.sequence)
}

/// A parked message, as status pages and `ihub parked list` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedMessage {
    /// Its sequence in `PARKED`.
    pub seq: u64,
    /// The durable that parked it.
    pub consumer: String,
    pub key: String,
    pub reason: String,
    pub parked_at: String,
    pub original_subject: String,
    pub original_stream: String,
    pub original_seq: Option<u64>,
    pub headers: Vec<(String, String)>,
    pub payload: String,
}

impl ParkedMessage {
    fn from_stream(bus: &Bus, message: &StreamMessage) -> Self {
        let get = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let subject = bus.names.unprefixed(&message.subject);
        let (consumer, token) = subject
            .strip_prefix("parked.")
            .and_then(|rest| rest.split_once('.'))
            .unwrap_or_default();
        let mut all: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|(name, values)| {
                values.iter().map(move |v| {
                    (
                        AsRef::<str>::as_ref(name).to_string(),
                        v.as_str().to_string(),
                    )
                })
            })
            .collect();
        all.sort();
        ParkedMessage {
            seq: message.sequence,
            consumer: consumer.to_string(),
            key: key_of(token).unwrap_or_else(|| get(headers::PARK_KEY)),
            reason: get(headers::PARK_REASON),
            parked_at: get(headers::PARKED_AT),
            original_subject: get(headers::ORIGINAL_SUBJECT),
            original_stream: get(headers::ORIGINAL_STREAM),
            original_seq: get(headers::ORIGINAL_SEQ).parse().ok(),
            headers: all,
            payload: String::from_utf8_lossy(&message.payload).into_owned(),
        }
    }
}

/// `PARKED` without asking for its info first: a release with nothing parked is one request.
async fn parked_stream(bus: &Bus) -> anyhow::Result<Stream<()>> {
    let name = bus.names.stream(STREAM);
    bus.js
        .get_stream_no_info(&name)
        .await
        .with_context(|| format!("{name} is not a stream name"))
}

/// A read of `PARKED` that failed: NATS not answering, or the stream missing.
fn read_failed(bus: &Bus, filter: &str, err: RawMessageError) -> anyhow::Error {
    match err.kind() {
        RawMessageErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            anyhow::anyhow!(
                "stream {} not found: run `ihub setup` first",
                bus.names.stream(STREAM)
            )
        }
        _ => anyhow::Error::new(err)
            .context(Unavailable(format!("could not read {filter} in PARKED"))),
    }
}

/// The sequence of the last message on `filter` (one subject), if there is one.
async fn last_seq(bus: &Bus, stream: &Stream<()>, filter: &str) -> anyhow::Result<Option<u64>> {
    match stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => Ok(Some(message.sequence)),
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(read_failed(bus, filter, err)),
    }
}

/// The first message on `filter` at or after `from` and at or before `last`.
async fn next(
    bus: &Bus,
    stream: &Stream<()>,
    filter: &str,
    from: u64,
    last: u64,
) -> anyhow::Result<Option<StreamMessage>> {
    if from > last {
        return Ok(None);
    }
    match stream.get_first_raw_message_by_subject(filter, from).await {
        Ok(message) if message.sequence <= last => Ok(Some(message)),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(read_failed(bus, filter, err)),
    }
}

/// Every message on `filter` up to sequence `last`, oldest first.
async fn read(
    bus: &Bus,
    stream: &Stream<()>,
    filter: &str,
    last: u64,
) -> anyhow::Result<Vec<ParkedMessage>> {
    let mut found = Vec::new();
    let mut from = 1;
    while let Some(message) = next(bus, stream, filter, from, last).await? {
        from = message.sequence + 1;
        found.push(ParkedMessage::from_stream(bus, &message));
    }
    Ok(found)
}

/// The messages parked for (`durable`, `key`), oldest first.
pub async fn parked(bus: &Bus, durable: &str, key: &str) -> anyhow::Result<Vec<ParkedMessage>> {
    let stream = parked_stream(bus).await?;
    let filter = bus.names.subject(&subject(durable, key)?);
    match last_seq(bus, &stream, &filter).await? {
        Some(last) => read(bus, &stream, &filter, last).await,
        None => Ok(Vec::new()),
    }
}

/// Every parked message (of one durable, when given), oldest first.
pub async fn list(bus: &Bus, durable: Option<&str>) -> anyhow::Result<Vec<ParkedMessage>> {
    let filter = match durable {
        Some(durable) => bus
            .names
            .subject(&format!("parked.{}.*", consumer_token(durable)?)),
        None => bus.names.subject("parked.>"),
    };
    let state = bus.stream(STREAM).await?.cached_info().state.clone();
    if state.messages == 0 {
        return Ok(Vec::new());
    }
    read(
        bus,
        &parked_stream(bus).await?,
        &filter,
        state.last_sequence,
    )
    .await
}

/// Republishes every message parked for (`durable`, `key`), oldest first, to its original
/// subject, then removes them from `PARKED`. Returns how many went out (a message another
/// release had already republished within the duplicate window is not counted again). With
/// nothing parked this is one request and returns 0. See the module docs for the rule that
/// closes the race with a park in flight, and for what two releases at once do.
pub async fn release(bus: &Bus, durable: &str, key: &str) -> anyhow::Result<usize> {
    let stream = parked_stream(bus).await?;
    let filter = bus.names.subject(&subject(durable, key)?);
    // Only what is parked now: a released message parked again waits for the next release.
    let Some(last) = last_seq(bus, &stream, &filter).await? else {
        return Ok(0);
    };
    let parked_stream = bus.names.stream(STREAM);
    let mut released = 0;
    let mut from = 1;
    while let Some(message) = next(bus, &stream, &filter, from, last).await? {
        from = message.sequence + 1;
        if republish(bus, &parked_stream, &message).await? {
            released += 1;
        }
    }
    // Everything on the subject up to `last` went out (a park after it keeps a later sequence).
    stream
        .purge()
        .filter(filter.as_str())
        .sequence(last + 1)
        .await
        .map_err(anyhow::Error::new)
        .with_context(|| {
            Unavailable(format!(
                "released {key:?} of {durable}, but could not remove the parked messages"
            ))
        })?;
    tracing::info!(
        consumer = durable,
        key,
        released,
        "released parked messages"
    );
    Ok(released)
}

/// Publishes the parked `message` to its original subject as it was; false when its stream had
/// it already (an earlier release of the same parked message).
async fn republish(
    bus: &Bus,
    parked_stream: &str,
    message: &StreamMessage,
) -> anyhow::Result<bool> {
    let seq = message.sequence;
    let subject = message
        .headers
        .get(headers::ORIGINAL_SUBJECT)
        .map(|v| v.as_str().to_string())
        .with_context(|| {
            format!(
                "parked message {seq} has no {} header",
                headers::ORIGINAL_SUBJECT
            )
        })?;
    let mut released = HeaderMap::new();
    for (name, values) in message.headers.iter() {
        let name: &str = name.as_ref();
        let skip = headers::PARK_ONLY
            .iter()
            .chain([&NATS_MSG_ID, &headers::RELEASED_FROM])
            .any(|h| h.eq_ignore_ascii_case(name));
        if !skip {
            for value in values {
                released.append(name, value.as_str());
            }
        }
    }
    released.insert(headers::RELEASED_FROM, seq.to_string().as_str());
    released.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("released:{parked_stream}:{seq}").as_str(),
    );
    let stored = async {
        bus.js
            .publish_with_headers(subject.clone(), released, message.payload.clone())
            .await?
            .await
    }
    .await
    .map_err(anyhow::Error::new)
    .with_context(|| {
        Unavailable(format!(
            "could not release parked message {seq} to {subject}"
        ))
    })?;
    Ok(!stored.duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_token(token: &str) -> bool {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~'))
    }

    #[test]
    fn plain_keys_stay_readable() {
        assert_eq!(token("ord-1001"), "ord-1001");
        assert_eq!(token("ORD_7.a b"), "ORD_5F7_2Ea_20b");
        assert_eq!(token(""), "_");
        assert_eq!(token("é"), "_C3_A9");
        assert_eq!(key_of("ORD_5F7_2Ea_20b").as_deref(), Some("ORD_7.a b"));
        assert_eq!(key_of("_").as_deref(), Some(""));
        for not_made in ["_2e", "_41", "_4", "a.b", "a*", "~ab", "_FF"] {
            assert_eq!(key_of(not_made), None, "{not_made}");
        }
    }

    #[test]
    fn long_keys_are_hashed() {
        let long = "x".repeat(200);
        let t = token(&long);
        assert!(t.starts_with('~') && t.len() == 65, "{t}");
        assert_eq!(key_of(&t), None);
        assert_ne!(t, token(&"x".repeat(201)));
        assert_eq!(token(&"x".repeat(96)), "x".repeat(96));
    }

    #[test]
    fn subjects_name_the_consumer_and_refuse_bad_names() {
        assert_eq!(
            subject("stage-newstore", "o.1").unwrap(),
            "parked.stage-newstore.o_2E1"
        );
        for bad in ["", "a.b", "a b", "a>", "*"] {
            assert!(subject(bad, "k").is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_key_is_a_valid_token_and_comes_back(key in any::<String>()) {
            let t = token(&key);
            prop_assert!(valid_token(&t), "{t:?}");
            prop_assert!(t.len() <= PLAIN_TOKEN_MAX.max(65));
            if !t.starts_with('~') {
                prop_assert_eq!(key_of(&t), Some(key.clone()));
            }
        }

        #[test]
        fn distinct_keys_give_distinct_tokens(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(token(&a), token(&b));
        }

        #[test]
        fn similar_keys_give_distinct_tokens(
            base in "[a-z_.-]{0,6}",
            extra in prop::sample::select(vec!["_", ".", "-", "_2E", "_5F", " ", ""]),
        ) {
            let other = format!("{base}{extra}");
            prop_assume!(other != base);
            prop_assert_ne!(token(&base), token(&other));
        }
    }
}
