//! The wallet service's replies: the HTTP status in the `Ihub-Status` header and the answer's
//! exact bytes as the payload, so a repeated call returns the first answer byte for byte.

use bytes::Bytes;

pub const STATUS_HEADER: &str = "Ihub-Status";

/// An answer of the wallet service, as the ingress passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::new(status, body.to_string())
    }

    /// A 4xx that is the caller's: `{"error": code, "message": …}`.
    pub fn error(status: u16, code: &str, message: impl std::fmt::Display) -> Self {
        Self::json(
            status,
            &serde_json::json!({"error": code, "message": message.to_string()}),
        )
    }

    pub fn headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(STATUS_HEADER, self.status.to_string().as_str());
        headers
    }

    /// Reads a reply message; `None` if it is not one (no or a bad status header).
    pub fn from_message(message: &async_nats::Message) -> Option<Self> {
        let status = message.headers.as_ref()?.get(STATUS_HEADER)?.as_str().parse().ok()?;
        (100..600).contains(&status).then(|| Self::new(status, message.payload.clone()))
    }
}
