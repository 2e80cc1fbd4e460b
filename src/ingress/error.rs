use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
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

    /// A dependency (NATS, a partner) failed: the caller may retry; nothing was accepted.
    pub fn unavailable(err: anyhow::Error) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the hub cannot accept this right now; retry shortly".into(),
            details: Vec::new(),
            source: Some(err),
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
        response
    }
}
