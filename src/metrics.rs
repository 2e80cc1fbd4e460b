//! The hub's metrics: one Prometheus registry per process (the `metrics` facade, recorded by
//! `metrics-exporter-prometheus`), rendered as Prometheus text at `GET /metrics` on the ingress
//! and, for `consume` processes, on `METRICS_ADDR`. Every part reports through the facade
//! (`metrics::counter!`, `histogram!`), so an integration adds a metric where it happens.
//!
//! Names follow Prometheus conventions (`_total`, `_seconds`, base units); labels are bounded
//! (route templates, target and consumer names, outcome words), never ids.
//!
//! | metric | labels |
//! | --- | --- |
//! | `ihub_http_requests_total`, `ihub_http_request_duration_seconds` | `method`, `route`, `status_class` |
//! | `ihub_partner_calls_total`, `ihub_partner_call_duration_seconds` | `target`, `outcome` (success, retry, permanent) |
//! | `ihub_consumer_messages_total`, `ihub_consumer_handle_duration_seconds` | `consumer`, `outcome` (ack, retry, dead_letter, park) |
//! | `integration_requests_total` | `adapter`, `operation`, `status` (success, refused, failed, breaker_open) |
//! | `integration_latency_seconds` | `adapter`, `operation` (retries included) |
//! | `integration_breaker_state` | `adapter` (0 closed, 1 half-open, 2 open) |
//! | `integration_cache_requests_total` | `operation`, `result` (hit, miss) |

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Seconds: from 0.5 ms to 30 s.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs this process's recorder on first use. `None` if another recorder was installed
/// first (then nothing is rendered).
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|err| tracing::warn!(%err, "metrics are off"))
                .ok()
        })
        .as_ref()
}

/// Installs the recorder (call once when a process starts, before anything is recorded).
pub fn install() {
    handle();
}

/// Everything recorded so far, as Prometheus text.
pub fn render() -> String {
    handle().map_or_else(String::new, |handle| {
        handle.run_upkeep();
        handle.render()
    })
}

/// `GET /metrics`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape() -> Response {
    let mut response = render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Middleware: every request's count and duration by method, route template and status class.
pub async fn http_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status_class = format!("{}xx", response.status().as_u16() / 100);
    let labels = [
        ("method", method),
        ("route", route),
        ("status_class", status_class),
    ];
    metrics::counter!("ihub_http_requests_total", &labels).increment(1);
    metrics::histogram!("ihub_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A partner call's outcome.
pub fn partner_call(target: &str, outcome: &'static str, seconds: f64) {
    let labels = [
        ("target", target.to_string()),
        ("outcome", outcome.to_string()),
    ];
    metrics::counter!("ihub_partner_calls_total", &labels).increment(1);
    metrics::histogram!("ihub_partner_call_duration_seconds", &labels).record(seconds);
}

/// A consumed message's fate.
pub fn consumed(consumer: &'static str, outcome: &'static str, seconds: f64) {
    let labels = [("consumer", consumer), ("outcome", outcome)];
    metrics::counter!("ihub_consumer_messages_total", &labels).increment(1);
    metrics::histogram!("ihub_consumer_handle_duration_seconds", &labels).record(seconds);
}

/// An adapter operation's outcome (`success`, `refused`, `failed`, `breaker_open`) and how
/// long it took, retries included.
pub fn integration_request(
    adapter: &'static str,
    operation: &'static str,
    status: &'static str,
    seconds: f64,
) {
    metrics::counter!("integration_requests_total", "adapter" => adapter, "operation" => operation, "status" => status)
        .increment(1);
    metrics::histogram!("integration_latency_seconds", "adapter" => adapter, "operation" => operation)
        .record(seconds);
}

/// A breaker's state as this process last saw it: 0 closed, 1 half-open, 2 open.
pub fn breaker_state(adapter: &'static str, state: f64) {
    metrics::gauge!("integration_breaker_state", "adapter" => adapter).set(state);
}

/// A cached read found its answer (`hit`) or went to the adapter (`miss`).
pub fn cache_lookup(operation: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("integration_cache_requests_total", "operation" => operation, "result" => result)
        .increment(1);
}

/// A message a consumer holds: `ihub_consumer_in_flight{consumer}` counts it until dropped.
pub struct InFlight(&'static str);

impl InFlight {
    pub fn new(consumer: &'static str) -> Self {
        metrics::gauge!("ihub_consumer_in_flight", "consumer" => consumer).increment(1.0);
        Self(consumer)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("ihub_consumer_in_flight", "consumer" => self.0).decrement(1.0);
    }
}

/// What a consumer told JetStream about a message.
pub fn acked(consumer: &'static str) {
    metrics::counter!("ihub_consumer_acks_total", "consumer" => consumer).increment(1);
}

/// A NAK, and the delay it asked for.
pub fn naked(consumer: &'static str, delay: std::time::Duration) {
    metrics::counter!("ihub_consumer_naks_total", "consumer" => consumer).increment(1);
    metrics::histogram!("ihub_consumer_nak_delay_seconds", "consumer" => consumer)
        .record(delay.as_secs_f64());
}

/// A message terminated after it was stored in the DLQ.
pub fn dead_lettered(consumer: &'static str) {
    metrics::counter!("ihub_dlq_publishes_total", "consumer" => consumer).increment(1);
    metrics::counter!("ihub_consumer_terms_total", "consumer" => consumer).increment(1);
}

/// A delivery target's breaker in this process: 0 closed, 1 half-open, 2 open.
pub fn target_breaker(target: &'static str, state: f64) {
    metrics::gauge!("ihub_breaker_state", "target" => target).set(state);
}

/// An idempotency key seen again: `replay` (the same request) or `conflict` (another body).
pub fn idempotency(scope: &str, outcome: &'static str) {
    let labels = [
        ("scope", scope.to_string()),
        ("outcome", outcome.to_string()),
    ];
    metrics::counter!("ihub_idempotency_repeats_total", &labels).increment(1);
}

/// A request refused by a rate limit (429).
pub fn rate_limited(limit: &'static str) {
    metrics::counter!("ihub_rate_limited_total", "limit" => limit).increment(1);
}

/// Sampled from JetStream: a durable's backlog.
pub fn durable_sampled(consumer: &str, pending: u64, ack_pending: usize, redelivered: usize) {
    let label = [("consumer", consumer.to_string())];
    metrics::gauge!("ihub_jetstream_consumer_pending", &label).set(pending as f64);
    metrics::gauge!("ihub_jetstream_consumer_ack_pending", &label).set(ack_pending as f64);
    metrics::gauge!("ihub_jetstream_consumer_redelivered", &label).set(redelivered as f64);
}

/// Sampled from JetStream: dead letters waiting, per consumer.
pub fn dlq_sampled(consumer: &str, depth: u64) {
    let label = [("consumer", consumer.to_string())];
    metrics::gauge!("ihub_dlq_depth", &label).set(depth as f64);
}
