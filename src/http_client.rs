//! Outbound HTTP: one client per process, calls that carry the trace, and the one rule for
//! what a partner's answer means (success, retry, permanent).

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use tracing::Instrument;

/// The client for partner calls: bounded by `timeout`, never following redirects.
pub fn client(timeout: Duration) -> reqwest::Client {
    crate::tls::install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ihub/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(256)
        .build()
        .expect("the HTTP client configuration is valid")
}

/// What a partner call came to.
#[derive(Debug)]
pub struct Response {
    pub status: Option<u16>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub duration: Duration,
    /// Transport error (connect, timeout), when there was no HTTP answer.
    pub error: Option<String>,
}

/// What an answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Retry,
    Permanent,
}

impl Response {
    fn transport(error: String, duration: Duration) -> Self {
        Response {
            status: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            duration,
            error: Some(error),
        }
    }

    /// A call that was not made, and why (it counts as an attempt with that error).
    pub fn not_sent(error: String) -> Self {
        Self::transport(error, Duration::ZERO)
    }

    pub fn verdict(&self) -> Verdict {
        match self.status {
            None => Verdict::Retry,
            Some(200..=299) => Verdict::Success,
            Some(408 | 429) | Some(500..=599) => Verdict::Retry,
            Some(_) => Verdict::Permanent,
        }
    }

    /// `Retry-After` in seconds or as an HTTP date.
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .ok()
    }

    /// What an attempt record keeps as the error: nothing for a 1xx/2xx answer, else
    /// [`describe`](Self::describe).
    pub fn attempt_error(&self) -> Option<String> {
        self.status
            .is_none_or(|s| s >= 300)
            .then(|| self.describe())
    }

    /// A one-line description for logs and attempt records (body truncated).
    pub fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(err), _) => err.clone(),
            (None, Some(status)) => {
                let body = String::from_utf8_lossy(&self.body);
                let body: String = body.chars().take(300).collect();
                format!("HTTP {status}: {}", body.trim())
            }
            (None, None) => "no response".into(),
        }
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends `request` inside a client span, with the trace's `traceparent`; never fails, the
/// transport error is in the response.
pub async fn send(target: &str, request: reqwest::RequestBuilder) -> Response {
    let (client, built) = request.build_split();
    let mut request = match built {
        Ok(request) => request,
        Err(err) => {
            return Response::transport(
                format!("could not build the request: {err}"),
                Duration::ZERO,
            );
        }
    };
    let span = tracing::info_span!(
        "partner call",
        otel.name = format!("{} {target}", request.method()),
        otel.kind = "client",
        http.request.method = %request.method(),
        url.full = %request.url(),
        server.address = request.url().host_str().unwrap_or_default(),
        server.port = request.url().port_or_known_default().unwrap_or_default(),
        peer.service = target,
        http.response.status_code = tracing::field::Empty,
    );
    async move {
        if let Some(tp) = crate::telemetry::traceparent()
            && let Ok(value) = HeaderValue::from_str(&tp)
        {
            request
                .headers_mut()
                .insert(crate::telemetry::TRACEPARENT, value);
        }
        let started = Instant::now();
        let response = match client.execute(request).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                tracing::Span::current().record("http.response.status_code", status);
                let headers = resp.headers().clone();
                match resp.bytes().await {
                    Ok(body) => Response {
                        status: Some(status),
                        headers,
                        body,
                        duration: started.elapsed(),
                        error: None,
                    },
                    Err(err) => Response::transport(
                        format!("reading the body failed: {err}"),
                        started.elapsed(),
                    ),
                }
            }
            Err(err) => Response::transport(transport_error(&err), started.elapsed()),
        };
        tracing::debug!(
            status = ?response.status,
            ms = response.duration.as_millis() as u64,
            "partner answered"
        );
        let outcome = match response.verdict() {
            Verdict::Success => "success",
            Verdict::Retry => "retry",
            Verdict::Permanent => "permanent",
        };
        crate::metrics::partner_call(target, outcome, response.duration.as_secs_f64());
        response
    }
    .instrument(span)
    .await
}

fn transport_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        format!("connection failed: {err}")
    } else {
        format!("request failed: {err}")
    }
}

#[cfg(test)]
impl Response {
    /// A partner's answer, for tests of what it means.
    pub fn answered(status: u16, body: &str) -> Self {
        Response {
            status: Some(status),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
            duration: Duration::from_millis(12),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, retry_after: Option<&str>) -> Response {
        let mut response = Response::answered(status, "{\"error\":\"nope\"}");
        if let Some(value) = retry_after {
            response
                .headers
                .insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        }
        response
    }

    #[test]
    fn the_status_decides_the_verdict() {
        for (status, verdict) in [
            (200, Verdict::Success),
            (201, Verdict::Success),
            (204, Verdict::Success),
            (301, Verdict::Permanent),
            (400, Verdict::Permanent),
            (401, Verdict::Permanent),
            (404, Verdict::Permanent),
            (409, Verdict::Permanent),
            (422, Verdict::Permanent),
            (408, Verdict::Retry),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (502, Verdict::Retry),
            (503, Verdict::Retry),
        ] {
            assert_eq!(answered(status, None).verdict(), verdict, "{status}");
        }
        let timed_out = Response::not_sent("timed out".into());
        assert_eq!(timed_out.verdict(), Verdict::Retry);
        assert_eq!(timed_out.describe(), "timed out");
    }

    #[test]
    fn attempts_keep_the_error_of_anything_but_success() {
        assert_eq!(answered(200, None).attempt_error(), None);
        assert_eq!(
            answered(503, None).attempt_error().as_deref(),
            Some("HTTP 503: {\"error\":\"nope\"}")
        );
        assert_eq!(
            Response::not_sent("refused".into())
                .attempt_error()
                .as_deref(),
            Some("refused")
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(
            answered(429, Some("7")).retry_after(),
            Some(Duration::from_secs(7))
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let parsed = answered(503, Some(&later)).retry_after().unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));
        assert_eq!(answered(503, Some("soon")).retry_after(), None);
        assert_eq!(answered(503, None).retry_after(), None);
    }
}
