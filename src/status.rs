//! `ihub status`: the hub at a glance, for people and (`--json`) for scripts. Readiness of
//! NATS and Postgres; each stream (messages, bytes) and each durable on it (pending, ack
//! pending, redelivered, last active); the DLQ's depth per consumer; every breaker in the
//! `breakers` bucket: the shared ones (MAX's adapters) and each process's own breaker of a
//! delivery consumer, as it last reported a change. What cannot be reached is reported as such, with what to do, and
//! the rest is still shown.

use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::nats::Bus;
use crate::runtime::shared_breaker::{Reported, SharedBreaker};

#[derive(Debug, Serialize)]
pub struct Status {
    pub nats: Readiness,
    pub postgres: Readiness,
    pub streams: Vec<StreamStatus>,
    /// Dead letters per consumer (`dlq.<consumer>`).
    pub dlq: Vec<(String, u64)>,
    /// Breakers: (key, closed | open | half_open), a process's own with `since <time>`.
    pub breakers: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub consumers: Vec<DurableStatus>,
}

#[derive(Debug, Serialize)]
pub struct DurableStatus {
    pub name: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked.
    pub ack_pending: usize,
    pub redelivered: usize,
    /// When it last delivered a message (RFC 3339), if ever.
    pub last_active: Option<String>,
}

/// Reads everything `ihub status` shows.
pub async fn read(cfg: &Config) -> Status {
    let postgres = match tokio::time::timeout(
        Duration::from_secs(5),
        crate::db::connect(cfg.database_url.expose(), 1),
    )
    .await
    {
        Ok(Ok(db)) => {
            let ok = sqlx::query("SELECT 1").execute(&db).await;
            db.close().await;
            Readiness {
                ready: ok.is_ok(),
                error: ok.err().map(|err| err.to_string()),
            }
        }
        Ok(Err(err)) => Readiness {
            ready: false,
            error: Some(format!("{err:#}")),
        },
        Err(_) => Readiness {
            ready: false,
            error: Some("Postgres did not answer within 5 s".into()),
        },
    };
    let mut status = Status {
        nats: Readiness {
            ready: false,
            error: None,
        },
        postgres,
        streams: Vec::new(),
        dlq: Vec::new(),
        breakers: Vec::new(),
    };
    let bus = match tokio::time::timeout(
        Duration::from_secs(5),
        Bus::connect(cfg.nats_url.expose(), &cfg.nats_prefix, "ihub-status"),
    )
    .await
    {
        Ok(Ok(bus)) => bus,
        Ok(Err(err)) => {
            status.nats.error = Some(format!("{err:#}"));
            return status;
        }
        Err(_) => {
            status.nats.error = Some("NATS did not answer within 5 s".into());
            return status;
        }
    };
    if let Err(err) = streams(&bus, &mut status).await {
        status.nats.error = Some(format!("{err:#}"));
        return status;
    }
    status.nats.ready = true;
    status
}

async fn streams(bus: &Bus, status: &mut Status) -> anyhow::Result<()> {
    let defs = crate::nats::provision::definitions(&bus.names, None, &[])?;
    for def in defs.streams {
        let Ok(mut stream) = bus.js.get_stream(&def.name).await else {
            status.streams.push(StreamStatus {
                name: def.name,
                messages: 0,
                bytes: 0,
                consumers: Vec::new(),
            });
            continue;
        };
        let info = stream.info().await?.clone();
        let mut consumers = Vec::new();
        let mut listed = stream.consumers();
        while let Some(consumer) = listed.try_next().await? {
            consumers.push(DurableStatus {
                name: consumer.name,
                pending: consumer.num_pending,
                ack_pending: consumer.num_ack_pending,
                redelivered: consumer.num_redelivered,
                last_active: consumer.delivered.last_active.map(|at| {
                    let nanos = i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
                    chrono::DateTime::from_timestamp_nanos(nanos)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                }),
            });
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        let base = bus.names.unprefixed_stream(&def.name);
        if base == crate::runtime::dlq::STREAM && info.state.messages > 0 {
            let mut subjects = stream
                .info_with_subjects(bus.names.subject("dlq.>"))
                .await?;
            while let Some((subject, count)) = subjects.try_next().await? {
                let consumer = bus
                    .names
                    .unprefixed(&subject)
                    .trim_start_matches("dlq.")
                    .to_string();
                status.dlq.push((consumer, count as u64));
            }
            status.dlq.sort();
        }
        if base == format!("KV_{}", SharedBreaker::BUCKET) {
            let kv = bus.kv(SharedBreaker::BUCKET).await?;
            let mut keys: Vec<String> = kv.keys().await?.try_collect().await?;
            keys.sort();
            for key in keys {
                let state = if key.starts_with("consumer.") {
                    // A process's own breaker, as it last reported it.
                    let reported = kv
                        .get(&key)
                        .await?
                        .and_then(|bytes| serde_json::from_slice::<Reported>(&bytes).ok());
                    match reported {
                        Some(r) => format!(
                            "{} since {}",
                            r.state,
                            chrono::DateTime::from_timestamp_millis(r.at_ms)
                                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                                .unwrap_or_default()
                        ),
                        None => continue,
                    }
                } else {
                    SharedBreaker::state_of(&kv, &key)
                        .await?
                        .as_str()
                        .to_string()
                };
                status.breakers.push((key, state));
            }
        }
        status.streams.push(StreamStatus {
            name: base,
            messages: info.state.messages,
            bytes: info.state.bytes,
            consumers,
        });
    }
    Ok(())
}

/// Samples the durables' backlogs and the DLQ's depth into the metrics every `every`, until
/// `shutdown` (the ingress runs it: `ihub_jetstream_consumer_*`, `ihub_dlq_depth`).
pub async fn sample_metrics(
    bus: Bus,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
    // A consumer whose dead letters were all replayed drops out of the stream's subjects: its
    // gauge goes back to zero.
    let mut seen_dlq: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        let mut status = Status {
            nats: Readiness {
                ready: true,
                error: None,
            },
            postgres: Readiness {
                ready: true,
                error: None,
            },
            streams: Vec::new(),
            dlq: Vec::new(),
            breakers: Vec::new(),
        };
        if let Err(err) = streams(&bus, &mut status).await {
            tracing::debug!(error = %format!("{err:#}"), "could not sample JetStream");
            continue;
        }
        for stream in &status.streams {
            for durable in &stream.consumers {
                crate::metrics::durable_sampled(
                    &durable.name,
                    durable.pending,
                    durable.ack_pending,
                    durable.redelivered,
                );
            }
        }
        for consumer in &seen_dlq {
            if !status.dlq.iter().any(|(c, _)| c == consumer) {
                crate::metrics::dlq_sampled(consumer, 0);
            }
        }
        for (consumer, depth) in &status.dlq {
            crate::metrics::dlq_sampled(consumer, *depth);
            seen_dlq.insert(consumer.clone());
        }
    }
}

/// What people read.
pub fn render(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ready = |r: &Readiness| match &r.error {
        None if r.ready => "ready".to_string(),
        Some(err) => format!("NOT READY: {err}"),
        None => "NOT READY".to_string(),
    };
    let _ = writeln!(out, "NATS      {}", ready(&status.nats));
    let _ = writeln!(out, "Postgres  {}", ready(&status.postgres));
    if !status.streams.is_empty() {
        let _ = writeln!(out, "\n{:<24} {:>10} {:>12}", "stream", "messages", "bytes");
        for s in &status.streams {
            let _ = writeln!(out, "{:<24} {:>10} {:>12}", s.name, s.messages, s.bytes);
        }
        let _ = writeln!(
            out,
            "\n{:<24} {:<24} {:>9} {:>11} {:>11}  last active",
            "durable", "stream", "pending", "ack pending", "redelivered"
        );
        for s in &status.streams {
            for c in &s.consumers {
                let _ = writeln!(
                    out,
                    "{:<24} {:<24} {:>9} {:>11} {:>11}  {}",
                    c.name,
                    s.name,
                    c.pending,
                    c.ack_pending,
                    c.redelivered,
                    c.last_active.as_deref().unwrap_or("never")
                );
            }
        }
    }
    if status.nats.ready {
        let total: u64 = status.dlq.iter().map(|(_, n)| n).sum();
        let _ = writeln!(out, "\ndead letters: {total}");
        for (consumer, count) in &status.dlq {
            let _ = writeln!(
                out,
                "  {consumer:<24} {count:>8}   ihub dlq list --consumer {consumer}"
            );
        }
        let _ = writeln!(
            out,
            "\nbreakers:{}",
            if status.breakers.is_empty() {
                " none has changed yet"
            } else {
                ""
            }
        );
        for (key, state) in &status.breakers {
            let _ = writeln!(out, "  {key:<40} {state}");
        }
        let _ = writeln!(
            out,
            "  (consumer.<durable>.<process>: a delivery consumer's breaker in one process, as it last reported a change)"
        );
    }
    out
}
