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

macro_rules! stream_file {
    ($path:literal) => {
        File {
            path: $path,
            json: include_str!(concat!("../../nats/streams/", $path)),
        }
    };
}

/// The streams and buckets every integration shares.
const STREAMS: &[File] = &[
    stream_file!("INBOUND.json"),
    stream_file!("OUTBOUND.json"),
    stream_file!("DLQ.json"),
    stream_file!("KV_idempotency.json"),
    stream_file!("KV_ratelimit.json"),
    stream_file!("PARKED.json"),
    stream_file!("LEDGER.json"),
    stream_file!("KV_tokens.json"),
    stream_file!("KV_breakers.json"),
    stream_file!("KV_cache.json"),
];

/// A durable consumer's definition, `nats/consumers/<stream>/<durable>.json` (the nats CLI's
/// format); write it with [`consumer_file!`](crate::consumer_file).
#[derive(Clone, Copy, Debug)]
pub struct ConsumerFile {
    pub stream: &'static str,
    pub durable: &'static str,
    pub json: &'static str,
}

impl ConsumerFile {
    pub fn path(&self) -> String {
        format!("nats/consumers/{}/{}.json", self.stream, self.durable)
    }
}

/// The [`ConsumerFile`] of durable `$durable` on stream `$stream`.
#[macro_export]
macro_rules! consumer_file {
    ($stream:literal, $durable:literal) => {
        $crate::nats::provision::ConsumerFile {
            stream: $stream,
            durable: $durable,
            json: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/nats/consumers/",
                $stream,
                "/",
                $durable,
                ".json"
            )),
        }
    };
}

/// The shared streams and the integrations' consumers, with names under a prefix.
pub struct Definitions {
    pub streams: Vec<stream::Config>,
    /// (stream name, consumer config)
    pub consumers: Vec<(String, pull::Config)>,
}

impl Definitions {
    /// Every stream and KV bucket with `replicas` copies (`NATS_REPLICAS`: 3 on a 3-node
    /// cluster), whatever the files say. Consumers keep `num_replicas` 0, which JetStream reads
    /// as "as many as the stream": a durable on an R3 stream is R3 too, and follows the
    /// stream when its replicas change.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        for config in &mut self.streams {
            config.num_replicas = replicas;
        }
        self
    }
}

/// Parses the shared streams and `consumers`, applying the prefix and the `ack_wait` override.
pub fn definitions(
    names: &Names,
    ack_wait: Option<Duration>,
    consumers: &[ConsumerFile],
) -> anyhow::Result<Definitions> {
    let mut streams = Vec::new();
    for file in STREAMS {
        let mut config: stream::Config = serde_json::from_str(file.json)
            .with_context(|| format!("nats/streams/{} is not a stream definition", file.path))?;
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
    let consumers = consumers
        .iter()
        .map(|file| {
            let mut config = file.config()?;
            config.filter_subject = names.subject(&config.filter_subject);
            if let Some(ack_wait) = ack_wait {
                config.ack_wait = ack_wait;
            }
            Ok((names.stream(file.stream), config))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Definitions { streams, consumers })
}

impl ConsumerFile {
    /// The definition as written (no prefix); its durable name must be the file's.
    pub fn config(&self) -> anyhow::Result<pull::Config> {
        let config: pull::Config = serde_json::from_str(self.json)
            .with_context(|| format!("{} is not a consumer definition", self.path()))?;
        if config.durable_name.as_deref() != Some(self.durable) {
            anyhow::bail!(
                "{} names durable {:?}, not {:?}",
                self.path(),
                config.durable_name,
                self.durable
            );
        }
        Ok(config)
    }
}

/// Creates or updates every stream, bucket and consumer. Prints a line per item to `progress`.
pub async fn apply(
    js: &jetstream::Context,
    defs: &Definitions,
    mut progress: impl FnMut(String),
) -> anyhow::Result<()> {
    let version = js.client().server_info().version;
    for config in &defs.streams {
        if config.num_replicas > 1
            && let Ok(existing) = js.get_stream(&config.name).await
        {
            let current = existing.cached_info().config.num_replicas;
            if current < config.num_replicas && scaling_up_loses_writes(&version) {
                progress(format!(
                    "warning: {} goes from {current} to {} replicas on NATS {version}: on NATS \
                     2.9 a node that held the stream alone can, when restarted, lead it alone \
                     and lose acknowledged messages (seen on 2.9.10). Upgrade NATS to 2.10 or \
                     later first, or create the streams with NATS_REPLICAS=3 on a new cluster \
                     (README, Running on a cluster)",
                    config.name, config.num_replicas
                ));
            }
        }
        js.create_or_update_stream(config.clone())
            .await
            .with_context(|| {
                let mut message = format!("could not create or update stream {}", config.name);
                if config.num_replicas > 1 {
                    message.push_str(&format!(
                        " with {} replicas (NATS_REPLICAS): the servers in NATS_URL must form a \
                         JetStream cluster of at least that many nodes",
                        config.num_replicas
                    ));
                }
                message
            })?;
        progress(format!(
            "stream {} ({}), {} replica{}",
            config.name,
            config.subjects.join(", "),
            config.num_replicas,
            if config.num_replicas == 1 { "" } else { "s" }
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

/// Whether raising a stream's replicas in place is unsafe on a server of `version`: NATS
/// before 2.10 (2.9.10 measured) keeps the stream's first, single-node peer set on the node
/// that held it, which then leads alone after a restart.
fn scaling_up_loses_writes(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < (2, 10)
}

/// Deletes every shared stream under `names`' prefix (tests clean up after themselves with this).
pub async fn delete_all(js: &jetstream::Context, names: &Names) -> anyhow::Result<()> {
    let defs = definitions(names, None, &[])?;
    for config in defs.streams {
        let _ = js.delete_stream(&config.name).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGE: ConsumerFile = crate::consumer_file!("INBOUND", "stage-wallet");

    #[test]
    fn definitions_parse_and_take_the_prefix() {
        let defs = definitions(&Names::new("t9"), Some(Duration::from_secs(3)), &[STAGE]).unwrap();
        let names: Vec<&str> = defs.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t9_INBOUND",
                "t9_OUTBOUND",
                "t9_DLQ",
                "KV_t9_idempotency",
                "KV_t9_ratelimit",
                "t9_PARKED",
                "t9_LEDGER",
                "KV_t9_tokens",
                "KV_t9_breakers",
                "KV_t9_cache"
            ]
        );
        assert_eq!(defs.streams[0].subjects, ["t9.in.>"]);
        assert_eq!(defs.streams[3].subjects, ["$KV.t9_idempotency.>"]);
        assert_eq!(defs.streams[3].max_age, Duration::from_secs(24 * 3600));
        assert_eq!(defs.streams[3].max_messages_per_subject, 1);
        let (stream, consumer) = &defs.consumers[0];
        assert_eq!(stream, "t9_INBOUND");
        assert_eq!(consumer.filter_subject, "t9.in.wallet.>");
        assert_eq!(consumer.ack_wait, Duration::from_secs(3));
        assert_eq!(
            consumer.ack_policy,
            jetstream::consumer::AckPolicy::Explicit
        );
    }

    #[test]
    fn every_stream_is_file_backed() {
        let defs = definitions(&Names::default(), None, &[STAGE]).unwrap();
        for s in defs.streams {
            assert_eq!(s.storage, stream::StorageType::File, "{}", s.name);
        }
        assert_eq!(defs.consumers[0].1.ack_wait, Duration::from_secs(30));
    }

    #[test]
    fn replicas_apply_to_every_stream_and_bucket() {
        let files = definitions(&Names::new("t9"), None, &[STAGE]).unwrap();
        for s in &files.streams {
            assert_eq!(
                s.num_replicas, 1,
                "the files describe one server: {}",
                s.name
            );
        }
        let defs = definitions(&Names::new("t9"), None, &[STAGE])
            .unwrap()
            .with_replicas(3);
        assert_eq!(defs.streams.len(), 10);
        for s in &defs.streams {
            assert_eq!(s.num_replicas, 3, "{}", s.name);
        }
        // Consumers inherit the stream's replicas (0 = as many as the stream).
        assert_eq!(defs.consumers[0].1.num_replicas, 0);
        // What is sent to the server says so.
        let sent = serde_json::to_value(&defs.streams[3]).unwrap();
        assert_eq!(sent["num_replicas"], 3, "{sent}");
        assert_eq!(sent["name"], "KV_t9_idempotency");
    }

    #[test]
    fn scaling_up_in_place_is_flagged_before_nats_2_10() {
        assert!(scaling_up_loses_writes("2.9.10"));
        assert!(scaling_up_loses_writes("2.9.25"));
        assert!(!scaling_up_loses_writes("2.10.0"));
        assert!(!scaling_up_loses_writes("2.15.1"));
        assert!(!scaling_up_loses_writes("3.0.0"));
    }

    #[test]
    fn a_file_must_name_its_own_durable() {
        let misnamed = ConsumerFile {
            durable: "stage-other",
            ..STAGE
        };
        let err = misnamed.config().unwrap_err().to_string();
        assert!(err.contains("stage-other"), "{err}");
        assert!(definitions(&Names::default(), None, &[misnamed]).is_err());
    }
}
