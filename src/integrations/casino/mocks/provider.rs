//! The game provider (Jaqpot Games), as the casino sees it.
//!
//! `POST /provider/launch` `{sessionId, userId, gameId, currency}` (signed
//! `x-provider-signature` under `PROVIDER_SECRET`; 401 otherwise, 422 for a bad body) keeps the
//! session and answers `{sessionId, launchUrl, status: "launched"}`. `POST /provider/simulate`
//! (same body and signature) plays the seed's scripted round against the casino's wallet
//! (`CASINO_WALLET_URL`, each call signed `x-casino-signature` under `CASINO_SECRET`):
//! balance → bet 10.00 → bet 5.00 → rollback of the second bet → win 25.00 → balance. Each
//! call waits at most `PROVIDER_TIMEOUT_MS` and is retried, with the same body, up to three
//! times on a timeout or a 5xx, as a provider does (the wallet is idempotent by
//! `externalTransactionId`). It answers `{roundId, steps: [{step, request, status, response}],
//! finalBalance}`, or 502 with the steps so far and `error` when a step fails. Both obey the
//! mock's fault plan; `GET /_mock/sessions` and `/_mock/rounds` list what it kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::config::{CASINO_SECRET, PROVIDER_SECRET, provider_timeout};
use super::super::signature::{CASINO_HEADER, PROVIDER_HEADER, sign, verify};
use crate::config::{Env, Secret};
use crate::mocks::Routes;
use crate::money::{Currency, format_major};

/// Where the wallet is when `CASINO_WALLET_URL` is unset.
pub const DEFAULT_WALLET_URL: &str = "http://127.0.0.1:8000/casino";

/// Tries per wallet call (a timeout or a 5xx is tried again with the same body).
const TRIES: u32 = 3;

pub struct Options {
    pub provider_secret: Secret,
    pub casino_secret: Secret,
    /// The wallet's base URL (`…/casino`).
    pub wallet_url: String,
    pub timeout: Duration,
}

/// A session the casino launched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub session_id: String,
    pub user_id: String,
    pub game_id: String,
    pub currency: String,
}

pub struct ProviderMock {
    options: Options,
    http: reqwest::Client,
    sessions: Mutex<Vec<Session>>,
    rounds: Mutex<Vec<Value>>,
}

pub fn start(env: &Env) -> anyhow::Result<Routes> {
    Ok(ProviderMock::new(Options {
        provider_secret: env.secret(&PROVIDER_SECRET)?,
        casino_secret: env.secret(&CASINO_SECRET)?,
        wallet_url: env
            .non_empty("CASINO_WALLET_URL")
            .unwrap_or_else(|| DEFAULT_WALLET_URL.to_string())
            .trim_end_matches('/')
            .to_string(),
        timeout: provider_timeout(env)?,
    })
    .routes())
}

impl ProviderMock {
    pub fn new(options: Options) -> Arc<Self> {
        Arc::new(Self {
            http: crate::http_client::client(options.timeout),
            sessions: Mutex::new(Vec::new()),
            rounds: Mutex::new(Vec::new()),
            options,
        })
    }

    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes::new(
            self.clone(),
            Router::new()
                .route("/provider/launch", post(launch))
                .route("/provider/simulate", post(simulate)),
            Router::new()
                .route("/_mock/sessions", get(list_sessions))
                .route("/_mock/rounds", get(list_rounds)),
        )
    }

    /// The sessions launched, in order.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().expect("provider sessions").clone()
    }

    /// The rounds played (each as `simulate` answered it), in order.
    pub fn rounds(&self) -> Vec<Value> {
        self.rounds.lock().expect("provider rounds").clone()
    }

    /// The session the casino asks about, if its signature is the casino's.
    fn checked(&self, headers: &HeaderMap, body: &[u8]) -> Result<Session, Refusal> {
        let signed = headers
            .get(PROVIDER_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| verify(&self.options.provider_secret, given, body));
        if !signed {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "send x-provider-signature: hex HMAC-SHA256 of the body under PROVIDER_SECRET".into(),
            ));
        }
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            Refusal(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {err}"))
        })?;
        let id = |key: &str| match &value[key] {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        match (id("sessionId"), id("userId"), id("gameId"), value["currency"].as_str()) {
            (Some(session_id), Some(user_id), Some(game_id), Some(currency))
                if Currency::parse(currency).is_ok() =>
            {
                Ok(Session {
                    session_id,
                    user_id,
                    game_id,
                    currency: currency.to_string(),
                })
            }
            _ => Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "send {sessionId, userId, gameId, currency}".into(),
            )),
        }
    }

    /// One signed call to the wallet, tried again with the same body on a timeout or a 5xx:
    /// its status and JSON answer (`None` if it never answered).
    async fn wallet(&self, call: &str, body: &Value) -> (Option<u16>, Value) {
        let raw = body.to_string();
        let signature = sign(&self.options.casino_secret, raw.as_bytes());
        let mut last = (None, Value::Null);
        for _ in 0..TRIES {
            let sent = self
                .http
                .post(format!("{}/{call}", self.options.wallet_url))
                .timeout(self.options.timeout)
                .header("content-type", "application/json")
                .header(CASINO_HEADER, &signature)
                .body(raw.clone())
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let answer = response.json().await.unwrap_or(Value::Null);
                    last = (Some(status), answer);
                    if status < 500 {
                        break;
                    }
                }
                Err(err) => last = (None, json!({"error": err.to_string()})),
            }
        }
        last
    }

    /// The seed's round for `session`.
    async fn play(&self, session: &Session) -> (StatusCode, Value) {
        let round = uuid::Uuid::new_v4().to_string();
        let currency = Currency::parse(&session.currency).expect("checked");
        let money = |minor: i64| format_major(minor * 10i64.pow(currency.exponent()), currency);
        let (user, game, sid) = (&session.user_id, &session.game_id, &session.session_id);
        let bet = |n: u32, units: i64| {
            json!({
                "userId": user, "sessionId": sid, "roundId": round, "gameId": game,
                "externalTransactionId": format!("{round}-bet-{n}"),
                "amount": money(units), "currency": currency.code(),
            })
        };
        let balance = json!({"userId": user, "currency": currency.code()});
        let script = [
            ("balance", "getBalance", balance.clone()),
            ("bet", "debit", bet(1, 10)),
            ("bet", "debit", bet(2, 5)),
            (
                "rollback",
                "rollback",
                json!({
                    "userId": user, "roundId": round,
                    "externalTransactionId": format!("{round}-rollback-2"),
                    "originalTransactionId": format!("{round}-bet-2"),
                }),
            ),
            (
                "win",
                "credit",
                json!({
                    "userId": user, "sessionId": sid, "roundId": round, "gameId": game,
                    "externalTransactionId": format!("{round}-win"),
                    "amount": money(25), "currency": currency.code(),
                }),
            ),
            ("balance", "getBalance", balance),
        ];
        let mut steps = Vec::new();
        let mut final_balance = Value::Null;
        for (step, call, request) in script {
            let (status, response) = self.wallet(call, &request).await;
            let ok = status == Some(200);
            if ok && step == "balance" {
                final_balance = response["balance"].clone();
            }
            steps.push(json!({"step": step, "request": request, "status": status, "response": response}));
            if !ok {
                let answer = json!({
                    "roundId": round, "steps": steps, "finalBalance": Value::Null,
                    "error": format!("the wallet's {call} answered {status:?}: the round stops"),
                });
                return (StatusCode::BAD_GATEWAY, answer);
            }
        }
        (
            StatusCode::OK,
            json!({"roundId": round, "steps": steps, "finalBalance": final_balance}),
        )
    }
}

/// A refused call: its status, error code and message (a JSON body).
#[derive(Debug)]
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, error, message) = self;
        (status, Json(json!({"error": error, "message": message}))).into_response()
    }
}

async fn launch(State(mock): State<Arc<ProviderMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match mock.checked(&headers, &body) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let launch_url = format!("https://play.jaqpot.example/{}", session.session_id);
    let answer = json!({"sessionId": session.session_id, "launchUrl": launch_url, "status": "launched"});
    let mut sessions = mock.sessions.lock().expect("provider sessions");
    if !sessions.iter().any(|s| s.session_id == session.session_id) {
        sessions.push(session);
    }
    Json(answer).into_response()
}

async fn simulate(State(mock): State<Arc<ProviderMock>>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match mock.checked(&headers, &body) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let (status, answer) = mock.play(&session).await;
    mock.rounds.lock().expect("provider rounds").push(answer.clone());
    (status, Json(answer)).into_response()
}

async fn list_sessions(State(mock): State<Arc<ProviderMock>>) -> Json<Value> {
    Json(json!({"sessions": mock.sessions()}))
}

async fn list_rounds(State(mock): State<Arc<ProviderMock>>) -> Json<Value> {
    Json(json!({"rounds": mock.rounds()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_signature_or_body_is_refused() {
        let mock = ProviderMock::new(Options {
            provider_secret: Secret::new("p"),
            casino_secret: Secret::new("c"),
            wallet_url: DEFAULT_WALLET_URL.into(),
            timeout: Duration::from_secs(1),
        });
        let body = br#"{"sessionId":"s","userId":1,"gameId":7,"currency":"USD"}"#;
        let mut headers = HeaderMap::new();
        assert_eq!(mock.checked(&headers, body).unwrap_err().0, 401);
        headers.insert(PROVIDER_HEADER, sign(&Secret::new("c"), body).parse().unwrap());
        assert_eq!(mock.checked(&headers, body).unwrap_err().0, 401, "the casino's secret is not the provider's");
        headers.insert(PROVIDER_HEADER, sign(&Secret::new("p"), body).parse().unwrap());
        let session = mock.checked(&headers, body).unwrap();
        assert_eq!((session.user_id.as_str(), session.game_id.as_str()), ("1", "7"));
        let bad = br#"{"sessionId":"s","userId":1,"gameId":7,"currency":"usd"}"#;
        headers.insert(PROVIDER_HEADER, sign(&Secret::new("p"), bad).parse().unwrap());
        assert_eq!(mock.checked(&headers, bad).unwrap_err().0, 422);
    }
}
