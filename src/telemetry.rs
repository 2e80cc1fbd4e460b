//! Logs and traces. One OpenTelemetry trace runs from the ingress through NATS headers to the
//! partner call: W3C `traceparent` is injected into every published message and outbound HTTP
//! request and extracted by consumers. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are
//! exported over OTLP/HTTP (Jaeger reads it); without it, trace ids still flow and appear in logs.
//!
//! Lifecycle: [`init`] once at start-up; keep the returned [`Telemetry`] and call
//! [`Telemetry::shutdown`] before exit, or buffered spans are lost.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider alive; flush it with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter. Blocking work runs off the async
    /// runtime, as the blocking OTLP client requires.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        })
        .await;
    }

    /// Exports what is buffered without stopping.
    pub async fn flush(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }
}

/// Where logs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logs {
    /// Standard error: text, or JSON with `LOG_FORMAT=json`; `RUST_LOG` filters (default `info`).
    Stderr,
    /// The test harness's captured output, shown for failing tests only.
    TestCapture,
}

/// Installs the global subscriber: logs plus the OpenTelemetry layer.
pub fn init(
    service_name: &str,
    otlp_endpoint: Option<&str>,
    logs: Logs,
) -> anyhow::Result<Telemetry> {
    // The OTLP exporter's HTTP client needs the TLS provider in place.
    crate::tls::install_crypto();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_string())
            .build(),
    );
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        // The SDK appends /v1/traces only to the variable it reads itself; set in code, the
        // endpoint is used verbatim.
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("ihub");

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = match logs {
        Logs::TestCapture => tracing_subscriber::fmt::layer().with_test_writer().boxed(),
        Logs::Stderr if json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        // Colour only for a person at a terminal: a file or a pipe gets plain text.
        Logs::Stderr => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A second init in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    Ok(Telemetry { provider })
}

/// The trace id of the current span, as 32 hex digits, if there is one.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id of `span` as a UUID (same 128 bits), so a business id can be the trace's id;
/// a random UUID if the span has no valid trace (no tracing layer installed).
pub fn trace_uuid(span: &tracing::Span) -> uuid::Uuid {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    if span_context.is_valid() {
        uuid::Uuid::from_bytes(span_context.trace_id().to_bytes())
    } else {
        uuid::Uuid::new_v4()
    }
}

/// Adds the current span's `traceparent` to NATS headers, unless they carry one already.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    // A message that already carries a trace keeps it (a dead letter keeps its original's).
    if headers.get(TRACEPARENT).is_some() {
        return;
    }
    struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);
    impl Injector for NatsInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key, value.as_str());
        }
    }
    TraceContextPropagator::new().inject_context(
        &tracing::Span::current().context(),
        &mut NatsInjector(headers),
    );
}

/// Makes the trace in NATS headers the parent of `span`.
pub fn continue_from_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    struct NatsExtractor<'a>(&'a async_nats::HeaderMap);
    impl Extractor for NatsExtractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(|v| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_ref()).collect()
        }
    }
    if let Some(headers) = headers {
        let parent = TraceContextPropagator::new().extract(&NatsExtractor(headers));
        let _ = span.set_parent(parent);
    }
}

/// Makes an incoming HTTP request's `traceparent`, if it has one, the parent of `span`.
pub fn continue_from_http(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let carrier: HashMap<String, String> = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| HashMap::from([(TRACEPARENT.to_string(), v.to_string())]))
        .unwrap_or_default();
    if !carrier.is_empty() {
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
}

/// The current span's `traceparent` value for an outbound HTTP request.
pub fn traceparent() -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}
