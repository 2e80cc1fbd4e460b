//! NATS: connecting, names (with the isolating prefix), provisioning from `nats/`, publishing.

pub mod headers;
pub mod provision;

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use tracing::Instrument;

/// Stream, subject and bucket names under an optional prefix, so that tests (or tenants) share a
/// server without seeing each other: with prefix `t1`, stream `INBOUND` is `t1_INBOUND` and
/// subject `in.wallet.debit` is `t1.in.wallet.debit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn stream(&self, base: &str) -> String {
        self.join(base, '_')
    }

    pub fn subject(&self, base: &str) -> String {
        self.join(base, '.')
    }

    pub fn kv_bucket(&self, base: &str) -> String {
        self.join(base, '_')
    }

    /// `subject` without this prefix (as stages see it).
    pub fn unprefixed<'a>(&self, subject: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            return subject;
        }
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(subject)
    }

    /// A stream's name without this prefix (`t9_INBOUND` → `INBOUND`, `KV_t9_cache` →
    /// `KV_cache`).
    pub fn unprefixed_stream(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            return name.to_string();
        }
        let own = format!("{}_", self.prefix);
        match name.strip_prefix("KV_") {
            Some(bucket) => format!("KV_{}", bucket.strip_prefix(&own).unwrap_or(bucket)),
            None => name.strip_prefix(&own).unwrap_or(name).to_string(),
        }
    }

    fn join(&self, base: &str, separator: char) -> String {
        if self.prefix.is_empty() {
            base.to_string()
        } else {
            format!("{}{separator}{base}", self.prefix)
        }
    }
}

/// The servers of `url`: one NATS URL, or a comma-separated list (the nodes of a cluster).
pub fn server_addrs(url: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let addrs = url
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse().map_err(|err| {
                anyhow::anyhow!(
                    "NATS_URL holds {:?}, not a NATS server URL ({err})",
                    crate::config::mask_password(part)
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if addrs.is_empty() {
        bail!("NATS_URL is empty: give a server (nats://127.0.0.1:4222) or a comma-separated list");
    }
    Ok(addrs)
}

/// Connects to the first of the servers in `url` that answers (one URL, or a comma-separated
/// list: the client then reconnects to another when its server goes), and says clearly where
/// it looked and what to do when nothing answers there.
pub async fn connect(url: &str, client_name: &str) -> anyhow::Result<Client> {
    let addrs = server_addrs(url)?;
    let shown = crate::config::mask_password(url.trim());
    let client = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(3))
        .connect(addrs)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "NATS not reachable at {shown} ({err}): start it with `nats-server -js` \
                 (Debian: `apt-get install -y nats-server`), or set NATS_URL"
            )
        })?;
    // JetStream answers $JS.API.INFO; a server started without -js has no responder.
    match tokio::time::timeout(
        Duration::from_secs(3),
        client.request("$JS.API.INFO", Bytes::new()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
            bail!("NATS at {shown} has JetStream disabled: restart it with `nats-server -js`")
        }
        Ok(Err(err)) => bail!("NATS at {shown} did not answer a JetStream request: {err}"),
        Err(_) => bail!("NATS at {shown} did not answer a JetStream request within 3 s"),
    }
}

/// Marks an error as NATS being unreachable or not answering in time: the moment, not the
/// message. Stages hold the message and try again without blaming the partner; the ingress
/// answers 503 with `Retry-After`.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// How long a publish may take before it fails (`PUBLISH_TIMEOUT_MS`) unless a process sets
/// its own.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection plus the names it publishes under: what ingress, consumers and tools share.
#[derive(Clone)]
pub struct Bus {
    pub client: Client,
    pub js: jetstream::Context,
    pub names: Names,
    /// The bound on a publish, from sending to the stream's ack, and on JetStream requests.
    publish_timeout: Duration,
}

impl Bus {
    pub fn new(client: Client, names: Names) -> Self {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(DEFAULT_PUBLISH_TIMEOUT);
        Self {
            client,
            js,
            names,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
        }
    }

    /// This bus, with publishes and JetStream requests failing after `timeout`.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.js.set_timeout(timeout);
        self.publish_timeout = timeout;
        self
    }

    /// Whether the connection is up now; `Err` says what is wrong, for `/ready` and for
    /// refusing at once rather than waiting out the timeout.
    pub fn connected(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!(
                "NATS connection {state:?}; the client reconnects by itself"
            )),
        }
    }

    pub async fn connect(url: &str, prefix: &str, client_name: &str) -> anyhow::Result<Self> {
        Ok(Self::new(
            connect(url, client_name).await?,
            Names::new(prefix),
        ))
    }

    /// Publishes to `subject` (unprefixed) with the current trace context and, when given, a
    /// `Nats-Msg-Id` for the stream's duplicate window; resolves when the stream has stored it,
    /// or fails with [`Unavailable`] after the publish timeout.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        headers: HeaderMap,
        payload: Bytes,
    ) -> anyhow::Result<jetstream::publish::PublishAck> {
        // A producer span (OpenTelemetry messaging conventions): the trace headers carry it,
        // so the consumer's span is its child and the service graph shows the hop via NATS.
        let span = tracing::info_span!(
            "publish",
            otel.name = format!("publish {subject}"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = subject,
            messaging.operation.type = "publish",
            messaging.operation.name = "publish",
        );
        let stored = async {
            self.start_publish(subject, msg_id, headers, payload)
                .await?
                .await
                .with_context(|| {
                    Unavailable(format!("JetStream did not store the message on {subject}"))
                })
        }
        .instrument(span);
        match tokio::time::timeout(self.publish_timeout, stored).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::Error::new(Unavailable(format!(
                "JetStream did not store the message on {subject} within {} ms",
                self.publish_timeout.as_millis()
            )))),
        }
    }

    /// Publishes `value` as JSON, as [`Bus::publish`] does.
    pub async fn publish_json(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        headers: HeaderMap,
        value: &impl serde::Serialize,
    ) -> anyhow::Result<jetstream::publish::PublishAck> {
        let payload = serde_json::to_vec(value)
            .with_context(|| format!("could not serialise the message for {subject}"))?;
        self.publish(subject, msg_id, headers, payload.into()).await
    }

    /// Sends the publish; the returned future resolves to the stream's ack.
    pub async fn start_publish(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        mut headers: HeaderMap,
        payload: Bytes,
    ) -> anyhow::Result<PublishAckFuture> {
        crate::telemetry::inject_nats(&mut headers);
        if let Some(id) = msg_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, header_value(id)?);
        }
        self.js
            .publish_with_headers(self.names.subject(subject), headers, payload)
            .await
            .with_context(|| Unavailable(format!("could not publish to {subject}")))
    }

    /// A core NATS request to `subject` (before the prefix) carrying the trace, waiting at most
    /// `wait` for the reply (not the client's default of 10 s).
    pub async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        wait: Duration,
    ) -> Result<async_nats::Message, async_nats::RequestError> {
        let mut headers = async_nats::HeaderMap::new();
        crate::telemetry::inject_nats(&mut headers);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(wait));
        self.client
            .send_request(self.names.subject(subject), request)
            .await
    }

    /// Fire-and-forget core publish (no stream), for replies to waiting requests.
    pub async fn notify(&self, subject: &str, payload: Bytes) {
        if let Err(err) = self
            .client
            .publish(self.names.subject(subject), payload)
            .await
        {
            tracing::debug!(%err, subject, "notify failed");
        }
    }

    pub async fn stream(&self, base: &str) -> anyhow::Result<jetstream::stream::Stream> {
        let name = self.names.stream(base);
        self.js
            .get_stream(&name)
            .await
            .with_context(|| format!("stream {name} not found: run `ihub setup` first"))
    }

    pub async fn kv(&self, base: &str) -> anyhow::Result<jetstream::kv::Store> {
        let bucket = self.names.kv_bucket(base);
        self.js
            .get_key_value(&bucket)
            .await
            .with_context(|| format!("KV bucket {bucket} not found: run `ihub setup` first"))
    }
}

/// Whether NATS subject `subject` matches `filter` (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in filter.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (part, Some(token)) if part == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// `text` as a header value, or an error (never a panic) when it holds a line break or other
/// character a NATS header cannot carry.
pub fn header_value(text: &str) -> anyhow::Result<async_nats::HeaderValue> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} cannot be a NATS header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_from_input_are_built_fallibly() {
        assert!(header_value("opcb:tx-1:withdraw").is_ok());
        for bad in ["a\r\nb", "a\nb", "a\rb"] {
            assert!(header_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nats_url_takes_a_list_of_servers() {
        let one = server_addrs("nats://127.0.0.1:4222").unwrap();
        assert_eq!(one.len(), 1);
        let three =
            server_addrs("nats://127.0.0.1:14231, nats://u:pw@127.0.0.1:14232,127.0.0.1:14233")
                .unwrap();
        let ports: Vec<u16> = three.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [14231, 14232, 14233]);
        assert!(three[1].has_user_pass());

        let err = server_addrs("nats://a:secret-77@n1:4222,http://n2:4222")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://n2:4222") && err.contains("NATS_URL"),
            "{err}"
        );
        let err = server_addrs("nats://a:secret-77@n1:99999,nats://n2")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("secret-77"),
            "the password is not shown: {err}"
        );
        assert!(server_addrs(" , ").is_err());
    }

    #[test]
    fn names_without_prefix_are_the_documented_ones() {
        let names = Names::default();
        assert_eq!(names.stream("INBOUND"), "INBOUND");
        assert_eq!(names.subject("in.wallet.debit"), "in.wallet.debit");
        assert_eq!(names.kv_bucket("idempotency"), "idempotency");
        assert_eq!(names.unprefixed("in.wallet.debit"), "in.wallet.debit");
    }

    #[test]
    fn a_prefix_isolates_every_name() {
        let names = Names::new("t1");
        assert_eq!(names.stream("INBOUND"), "t1_INBOUND");
        assert_eq!(names.subject("in.wallet.debit"), "t1.in.wallet.debit");
        assert_eq!(names.kv_bucket("idempotency"), "t1_idempotency");
        assert_eq!(names.unprefixed("t1.in.wallet.debit"), "in.wallet.debit");
        assert_eq!(names.unprefixed("t10.in.x"), "t10.in.x");
    }
}
