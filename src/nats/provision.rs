//! Applies the stream, KV and consumer definitions in `nats/` (the nats CLI's JSON format, so
//! `nats stream add --config nats/streams/INBOUND.json` reads the same files). Idempotent:
//! existing streams and consumers are updated to match.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};

use super::Names;

struct File {
    path: &'static str,
    json: &'static str,
}

macro_rules! nats_file {
    ($path:literal) => {
        File {
            path: $path,
            json: include_str!(concat!("../../nats/", $path)),
        }
    };
}

const STREAMS: &[File] = &[
    nats_file!("streams/INBOUND.json"),
    nats_file!("streams/OUTBOUND.json"),
    nats_file!("streams/DLQ.json"),
    nats_file!("streams/KV_idempotency.json"),
    nats_file!("streams/KV_ratelimit.json"),
];

/// Consumers by the stream (directory) they belong to.
const CONSUMERS: &[(&str, File)] = &[
    ("INBOUND", nats_file!("consumers/INBOUND/stage-wallet.json")),
    (
        "OUTBOUND",
        nats_file!("consumers/OUTBOUND/deliver-operator.json"),
    ),
    (
        "OUTBOUND",
        nats_file!("consumers/OUTBOUND/deliver-rgs.json"),
    ),
    (
        "INBOUND",
        nats_file!("consumers/INBOUND/stage-wavegate.json"),
    ),
    (
        "OUTBOUND",
        nats_file!("consumers/OUTBOUND/deliver-ticketing.json"),
    ),
    (
        "OUTBOUND",
        nats_file!("consumers/OUTBOUND/deliver-ota-callback.json"),
    ),
];

/// Everything `nats/` defines, with names under `names`' prefix.
pub struct Definitions {
    pub streams: Vec<stream::Config>,
    /// (stream name, consumer config)
    pub consumers: Vec<(String, pull::Config)>,
}

/// Parses the definitions and applies the prefix and the `ack_wait` override.
pub fn definitions(names: &Names, ack_wait: Option<Duration>) -> anyhow::Result<Definitions> {
    let mut streams = Vec::new();
    for file in STREAMS {
        let mut config: stream::Config = serde_json::from_str(file.json)
            .with_context(|| format!("nats/{} is not a stream definition", file.path))?;
        if let Some(bucket) = config.name.strip_prefix("KV_") {
            // A KV bucket is the stream KV_<bucket> over $KV.<bucket>.>
            let bucket = names.kv_bucket(bucket);
            config.subjects = vec![format!("$KV.{bucket}.>")];
            config.name = format!("KV_{bucket}");
        } else {
            config.subjects = config.subjects.iter().map(|s| names.subject(s)).collect();
            config.name = names.stream(&config.name);
        }
        streams.push(config);
    }
    let mut consumers = Vec::new();
    for (stream, file) in CONSUMERS {
        let mut config: pull::Config = serde_json::from_str(file.json)
            .with_context(|| format!("nats/{} is not a consumer definition", file.path))?;
        config.filter_subject = names.subject(&config.filter_subject);
        if let Some(ack_wait) = ack_wait {
            config.ack_wait = ack_wait;
        }
        consumers.push((names.stream(stream), config));
    }
    Ok(Definitions { streams, consumers })
}

/// The `ack_wait` a consumer is defined with (before any override).
pub fn defined_ack_wait(durable: &str) -> Option<Duration> {
    let defs = definitions(&Names::default(), None).ok()?;
    defs.consumers
        .into_iter()
        .find(|(_, c)| c.durable_name.as_deref() == Some(durable))
        .map(|(_, c)| c.ack_wait)
}

/// Creates or updates every stream, bucket and consumer. Prints a line per item to `progress`.
pub async fn apply(
    js: &jetstream::Context,
    defs: &Definitions,
    mut progress: impl FnMut(String),
) -> anyhow::Result<()> {
    for config in &defs.streams {
        js.create_or_update_stream(config.clone())
            .await
            .with_context(|| format!("could not create or update stream {}", config.name))?;
        progress(format!(
            "stream {} ({})",
            config.name,
            config.subjects.join(", ")
        ));
    }
    for (stream_name, config) in &defs.consumers {
        let stream = js
            .get_stream(stream_name)
            .await
            .with_context(|| format!("stream {stream_name} vanished during setup"))?;
        let durable = config.durable_name.clone().unwrap_or_default();
        stream
            .create_consumer(config.clone())
            .await
            .with_context(|| {
                format!(
                    "could not create or update consumer {durable} on {stream_name}; if its \
                 definition changed in a way JetStream cannot update, delete it with \
                 `nats consumer rm {stream_name} {durable}` and run `ihub setup` again"
                )
            })?;
        progress(format!(
            "consumer {stream_name} > {durable} ({})",
            config.filter_subject
        ));
    }
    Ok(())
}

/// Deletes every stream under `names`' prefix (tests clean up after themselves with this).
pub async fn delete_all(js: &jetstream::Context, names: &Names) -> anyhow::Result<()> {
    let defs = definitions(names, None)?;
    for config in defs.streams {
        let _ = js.delete_stream(&config.name).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_parse_and_take_the_prefix() {
        let defs = definitions(&Names::new("t9"), Some(Duration::from_secs(3))).unwrap();
        let names: Vec<&str> = defs.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t9_INBOUND",
                "t9_OUTBOUND",
                "t9_DLQ",
                "KV_t9_idempotency",
                "KV_t9_ratelimit"
            ]
        );
        assert_eq!(defs.streams[0].subjects, ["t9.in.>"]);
        assert_eq!(defs.streams[3].subjects, ["$KV.t9_idempotency.>"]);
        assert_eq!(defs.streams[3].max_age, Duration::from_secs(24 * 3600));
        assert_eq!(defs.streams[3].max_messages_per_subject, 1);
        for (_, consumer) in &defs.consumers {
            assert!(consumer.filter_subject.starts_with("t9."));
            assert_eq!(consumer.ack_wait, Duration::from_secs(3));
            assert_eq!(
                consumer.ack_policy,
                jetstream::consumer::AckPolicy::Explicit
            );
        }
    }

    #[test]
    fn every_stream_is_file_backed() {
        let defs = definitions(&Names::default(), None).unwrap();
        for s in defs.streams {
            assert_eq!(s.storage, stream::StorageType::File, "{}", s.name);
        }
        assert_eq!(
            defined_ack_wait("deliver-operator"),
            Some(Duration::from_secs(30))
        );
    }
}
