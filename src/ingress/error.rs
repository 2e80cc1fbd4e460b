use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An answer other than success: bad input gets a 4xx with a JSON body saying what to fix;
/// anything unexpected is logged with its cause chain and answered with a generic 5xx.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<String>,
    /// Headers the answer carries besides the defaults (and overriding them).
    headers: Vec<(HeaderName, HeaderValue)>,
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
            source: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl ToString) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message.to_string(),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 429 with `Retry-After` in whole seconds (at least 1).
    pub fn too_many_requests(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            .with_details(vec![format!("retry after {secs} s")])
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// A dependency (NATS, a partner) failed: the caller may retry; nothing was accepted.
    pub fn unavailable(err: anyhow::Error) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the hub cannot accept this right now; retry shortly".into(),
            details: Vec::new(),
            headers: Vec::new(),
            source: Some(err),
        }
    }

    /// A database error: 503 when it is the moment (the database unreachable, a timeout), 500
    /// when the statement itself failed, which input checks should have prevented.
    pub fn database(err: sqlx::Error) -> Self {
        if crate::db::is_transient(&err) {
            Self::unavailable(err.into())
        } else {
            Self::internal(err.into())
        }
    }

    pub fn bad_gateway(message: impl Into<String>, err: anyhow::Error) -> Self {
        Self {
            source: Some(err),
            ..Self::new(StatusCode::BAD_GATEWAY, "partner_unavailable", message)
        }
    }

    pub fn internal(err: anyhow::Error) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the hub's logs have the details".into(),
            details: Vec::new(),
            headers: Vec::new(),
            source: Some(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self.source {
            Some(err) => tracing::error!(
                status = self.status.as_u16(),
                error = format!("{err:#}"),
                "request failed"
            ),
            None => {
                tracing::debug!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused")
            }
        }
        let mut body = json!({"error": self.code, "message": self.message});
        if !self.details.is_empty() {
            body["details"] = json!(self.details);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Signature"),
            );
        }
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
