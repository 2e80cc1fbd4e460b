//! OAuth2 client credentials as MAX's partner mocks issue them: short-lived bearer tokens,
//! revocable at once (`POST /_mock/expire_tokens`), and a count of token requests (so a test
//! can see that many callers shared one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::config::Secret;
use crate::signatures::constant_time_eq;

pub struct TokenIssuer {
    client_id: String,
    client_secret: Secret,
    ttl: Duration,
    tokens: Mutex<HashMap<String, Instant>>,
    requests: AtomicU64,
}

impl TokenIssuer {
    pub fn new(client_id: String, client_secret: Secret, ttl: Duration) -> Self {
        Self {
            client_id,
            client_secret,
            ttl,
            tokens: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        }
    }

    /// `POST /oauth/token`'s answer to `form`.
    pub fn issue(&self, form: &HashMap<String, String>) -> (StatusCode, Value) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let granted = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id") == Some(&self.client_id)
            && form.get("client_secret").is_some_and(|s| {
                constant_time_eq(s.as_bytes(), self.client_secret.expose().as_bytes())
            });
        if !granted {
            return (
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "message": "unknown client credentials"}),
            );
        }
        let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
        self.tokens
            .lock()
            .expect("tokens")
            .insert(token.clone(), Instant::now() + self.ttl);
        (
            StatusCode::OK,
            json!({"access_token": token, "token_type": "Bearer", "expires_in": self.ttl.as_secs()}),
        )
    }

    /// Whether `headers` carry a live token it issued.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.tokens
            .lock()
            .expect("tokens")
            .get(token)
            .is_some_and(|expires| Instant::now() < *expires)
    }

    /// Revokes every token it issued.
    pub fn expire_all(&self) {
        self.tokens.lock().expect("tokens").clear();
    }

    /// How many tokens it was asked for.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn secret(&self) -> &Secret {
        &self.client_secret
    }
}

/// What a token request is logged as (never its secret).
pub fn logged(form: &HashMap<String, String>) -> String {
    json!({"grant_type": form.get("grant_type"), "client_id": form.get("client_id")}).to_string()
}

/// 401 for a call without a live token.
pub fn unauthorized() -> (StatusCode, Value) {
    (
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_token", "message": "send a Bearer token from /oauth/token"}),
    )
}
