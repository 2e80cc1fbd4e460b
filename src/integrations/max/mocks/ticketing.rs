//! The ticketing system MAX's agents file tickets in (a Zendesk-like API).
//!
//! Every call needs `X-API-Key: <MAX_TICKETING_API_KEY>` (401 otherwise).
//! `POST /tickets` `{subject, description, priority, custom_fields: {customer_id}}` → 201
//! `{id: "TICKET-<n>", url, status: "open"}`; `GET /tickets/{id}` → `{id, status, assignee:
//! {email}, updated_at}`; `POST /tickets/{id}/comments` `{body, public}` → 201 `{id}`; an
//! unknown ticket is 404. A create (ticket or comment) with `Idempotency-Key` is made once per
//! key: a repeat gets the first answer. `POST /_mock/tickets/{id}` `{status, assignee}` changes
//! one (as an agent would); `GET /_mock/requests` lists what it received. The fault plan applies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::log::RequestLog;
use crate::config::{Env, Secret};
use crate::integrations::max::config::TICKETING_API_KEY;
use crate::mocks::Routes;
use crate::signatures::constant_time_eq;

#[derive(Clone, Debug)]
struct Ticket {
    subject: String,
    status: String,
    assignee: Option<String>,
    updated_at: String,
    comments: Vec<Value>,
}

pub struct TicketingMock {
    api_key: Secret,
    tickets: Mutex<BTreeMap<String, Ticket>>,
    /// `Idempotency-Key` → the first answer of a create (a ticket or a comment).
    answered: Mutex<BTreeMap<String, (StatusCode, Value)>>,
    pub log: RequestLog,
}

pub fn start(env: &Env) -> anyhow::Result<Routes> {
    Ok(TicketingMock::new(env.secret(&TICKETING_API_KEY)?).routes())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl TicketingMock {
    pub fn new(api_key: Secret) -> Arc<Self> {
        Arc::new(Self {
            log: RequestLog::new(vec![api_key.clone()]),
            api_key,
            tickets: Mutex::new(BTreeMap::new()),
            answered: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/tickets", post(create))
                .route("/tickets/{id}", get(status))
                .route("/tickets/{id}/comments", post(comment)),
            Router::new()
                .route("/_mock/requests", get(requests))
                .route("/_mock/tickets/{id}", post(change)),
        )
    }

    /// How many tickets it holds.
    pub fn tickets(&self) -> usize {
        self.tickets.lock().expect("tickets").len()
    }

    /// `create` once per `Idempotency-Key` (when sent): a repeat gets the first answer.
    fn once(&self, headers: &HeaderMap, create: impl FnOnce() -> (StatusCode, Value)) -> (StatusCode, Value) {
        let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string) else {
            return create();
        };
        let mut answered = self.answered.lock().expect("answered");
        if let Some(first) = answered.get(&key) {
            return first.clone();
        }
        let outcome = create();
        if outcome.0.is_success() {
            answered.insert(key, outcome.clone());
        }
        outcome
    }

    /// A ticket's status and assignee, as the system holds them.
    pub fn ticket(&self, id: &str) -> Option<(String, Option<String>)> {
        let tickets = self.tickets.lock().expect("tickets");
        tickets.get(id).map(|t| (t.status.clone(), t.assignee.clone()))
    }

    /// Logs the call and answers it.
    fn answer(&self, method: Method, path: &str, body: &[u8], (status, value): (StatusCode, Value)) -> Response {
        self.log.push(method.as_str(), path, status.as_u16(), body);
        (status, Json(value)).into_response()
    }

    fn allowed(&self, headers: &HeaderMap) -> bool {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|key| constant_time_eq(key.as_bytes(), self.api_key.expose().as_bytes()))
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({"error": code, "message": message.into()}))
}

fn unauthorized() -> (StatusCode, Value) {
    error(StatusCode::UNAUTHORIZED, "unauthorized", "send X-API-Key")
}

async fn create(State(mock): State<Arc<TicketingMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = if !mock.allowed(&headers) {
        unauthorized()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(request) if request["subject"].is_string() && request["description"].is_string() => mock.once(&headers, || {
                let mut tickets = mock.tickets.lock().expect("tickets");
                let id = format!("TICKET-{}", tickets.len() + 1);
                tickets.insert(
                    id.clone(),
                    Ticket {
                        subject: request["subject"].as_str().unwrap_or_default().to_string(),
                        status: "open".into(),
                        assignee: None,
                        updated_at: now(),
                        comments: Vec::new(),
                    },
                );
                let url = format!("https://tickets.example.com/tickets/{id}");
                (StatusCode::CREATED, json!({"id": id, "url": url, "status": "open"}))
            }),
            _ => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_ticket",
                "send {subject, description, priority, custom_fields}",
            ),
        }
    };
    mock.answer(Method::POST, "/tickets", &body, outcome)
}

async fn status(State(mock): State<Arc<TicketingMock>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let outcome = if !mock.allowed(&headers) {
        unauthorized()
    } else {
        match mock.tickets.lock().expect("tickets").get(&id) {
            Some(t) => (
                StatusCode::OK,
                json!({
                    "id": id, "subject": t.subject, "status": t.status,
                    "assignee": t.assignee.as_ref().map(|email| json!({"email": email})),
                    "updated_at": t.updated_at, "comments": t.comments.len(),
                }),
            ),
            None => error(StatusCode::NOT_FOUND, "not_found", format!("no ticket {id}")),
        }
    };
    mock.answer(Method::GET, &format!("/tickets/{id}"), b"", outcome)
}

async fn comment(
    State(mock): State<Arc<TicketingMock>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = if !mock.allowed(&headers) {
        unauthorized()
    } else {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        mock.once(&headers, || {
            let mut tickets = mock.tickets.lock().expect("tickets");
            match (tickets.get_mut(&id), request["body"].as_str()) {
                (None, _) => error(StatusCode::NOT_FOUND, "not_found", format!("no ticket {id}")),
                (Some(_), None) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_comment", "send {body, public}"),
                (Some(ticket), Some(text)) => {
                    let comment_id = format!("{id}-COMMENT-{}", ticket.comments.len() + 1);
                    ticket.comments.push(json!({"id": comment_id, "body": text, "public": request["public"]}));
                    ticket.updated_at = now();
                    (StatusCode::CREATED, json!({"id": comment_id}))
                }
            }
        })
    };
    mock.answer(Method::POST, &format!("/tickets/{id}/comments"), &body, outcome)
}

async fn change(State(mock): State<Arc<TicketingMock>>, Path(id): Path<String>, Json(change): Json<Value>) -> Response {
    let mut tickets = mock.tickets.lock().expect("tickets");
    let Some(ticket) = tickets.get_mut(&id) else {
        let (status, body) = error(StatusCode::NOT_FOUND, "not_found", format!("no ticket {id}"));
        return (status, Json(body)).into_response();
    };
    if let Some(status) = change["status"].as_str() {
        ticket.status = status.to_string();
    }
    if let Some(assignee) = change["assignee"].as_str() {
        ticket.assignee = Some(assignee.to_string());
    }
    ticket.updated_at = now();
    Json(json!({"id": id, "status": ticket.status})).into_response()
}

async fn requests(State(mock): State<Arc<TicketingMock>>) -> Json<Value> {
    Json(json!(mock.log.entries()))
}
