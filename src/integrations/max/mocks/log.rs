//! What a MAX partner mock received, as `GET /_mock/requests` lists it:
//! `[{method, path, status, body}]`, with every secret it knows masked.

use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::config::Secret;

#[derive(Clone, Debug, Serialize)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Value,
}

/// The requests of one mock, oldest first.
pub struct RequestLog {
    secrets: Vec<Secret>,
    entries: Mutex<Vec<Logged>>,
}

impl RequestLog {
    /// A log that masks `secrets` wherever they appear in a body.
    pub fn new(secrets: Vec<Secret>) -> Self {
        Self {
            secrets,
            entries: Mutex::new(Vec::new()),
        }
    }

    pub fn push(&self, method: &str, path: &str, status: u16, body: &[u8]) {
        let mut text = String::from_utf8_lossy(body).into_owned();
        for secret in &self.secrets {
            if !secret.expose().is_empty() {
                text = text.replace(secret.expose(), "***");
            }
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.entries.lock().expect("request log").push(Logged {
            method: method.to_string(),
            path: path.to_string(),
            status,
            body,
        });
    }

    pub fn entries(&self) -> Vec<Logged> {
        self.entries.lock().expect("request log").clone()
    }
}
