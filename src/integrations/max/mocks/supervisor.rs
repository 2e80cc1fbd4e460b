//! The supervisor's receiver: where the hub tells a person that an adapter is failing.
//!
//! `POST /notices` with `X-Supervisor-Signature: <hex HMAC-SHA256(SUPERVISOR_WEBHOOK_SECRET,
//! raw body)>` (401 otherwise) is kept and answered 202; `GET /_mock/notices` lists them and
//! `GET /_mock/requests` what it received. The fault plan applies.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::log::RequestLog;
use crate::config::{Env, Secret};
use crate::integrations::max::config::SUPERVISOR_SECRET;
use crate::mocks::Routes;
use crate::signatures::verify_body_signature;

pub use crate::integrations::max::supervisor::SIGNATURE_HEADER;

pub struct SupervisorMock {
    secret: Secret,
    notices: Mutex<Vec<Value>>,
    pub log: RequestLog,
}

pub fn start(env: &Env) -> anyhow::Result<Routes> {
    Ok(SupervisorMock::new(env.secret(&SUPERVISOR_SECRET)?).routes())
}

impl SupervisorMock {
    pub fn new(secret: Secret) -> Arc<Self> {
        Arc::new(Self {
            log: RequestLog::new(vec![secret.clone()]),
            secret,
            notices: Mutex::new(Vec::new()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new().route("/notices", post(notice)),
            Router::new()
                .route("/_mock/notices", get(list))
                .route("/_mock/requests", get(requests)),
        )
    }

    /// The notices received, oldest first.
    pub fn notices(&self) -> Vec<Value> {
        self.notices.lock().expect("notices").clone()
    }
}

async fn notice(State(mock): State<Arc<SupervisorMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let signed = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| verify_body_signature(&mock.secret, given, &body));
    let (status, answer) = if !signed {
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_signature", "message": "send X-Supervisor-Signature"}),
        )
    } else {
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        mock.notices.lock().expect("notices").push(value);
        (StatusCode::ACCEPTED, json!({"status": "received"}))
    };
    mock.log.push("POST", "/notices", status.as_u16(), &body);
    (status, Json(answer)).into_response()
}

async fn list(State(mock): State<Arc<SupervisorMock>>) -> Json<Value> {
    Json(json!({"notices": mock.notices()}))
}

async fn requests(State(mock): State<Arc<SupervisorMock>>) -> Json<Value> {
    Json(json!(mock.log.entries()))
}
