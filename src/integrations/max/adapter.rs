//! The adapters: [`Adapters::step`] makes one partner call of any [`Operation`] with what the
//! three share, and [`Adapters::call`] runs a read to its end. What they share: authentication
//! (API key; an OAuth2 token shared by every process; the token plus `X-HMAC-Signature` over
//! the canonical JSON body), the retry table ([`retry`]: a read's pauses are taken here, a
//! write's are JetStream redeliveries), the circuit breaker of each adapter shared by every
//! process ([`SharedBreaker`]), an `integration_log` row and a structured log line for every
//! partner call, the `integration_*` metrics, and the supervisor told of every operation that
//! failed. Secrets never leave: errors pass through [`Adapters::redact`] before they are logged
//! or stored.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use tracing::Instrument;

use crate::runtime::shared_breaker::{SharedBreaker, State};
use super::config::AdapterConfig;
use super::oauth::SharedToken;
use super::operations::{Adapter, Operation};
use super::retry::{self, Next};
use super::supervisor::Supervisor;
use crate::config::Secret;
use crate::http_client::{self, Response, Verdict};
use crate::nats::Bus;
use crate::signatures::{body_signature, canonical_json};

pub const HMAC_HEADER: &str = "x-hmac-signature";
pub const REDACTED: &str = "***REDACTED***";

/// What an operation came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The partner's answer for good: its success mapped for MAX (`status` 2xx), or its
    /// refusal (4xx other than 401: `{error, message, adapter}`).
    Answered { status: u16, body: Value },
    /// Not done: the partner kept failing, could not be reached, refused our credentials, or
    /// the breaker is open (`breaker`, when it refused the call).
    Failed {
        error: String,
        breaker: Option<State>,
    },
}

/// What one partner call came to ([`Adapters::step`]).
#[derive(Debug)]
pub enum Step {
    /// The operation's outcome: the partner's answer, a final failure, or the open breaker.
    Ended(Outcome),
    /// A 401: call again at once with a new token (once per call).
    Reauthenticate,
    /// Worth trying again after `delay` (the retry table's); `error` says why, `retry_after` is
    /// what the partner asked for, if anything.
    Retry {
        delay: Duration,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// Where one call of an operation stands between its partner calls: the token it used, whether
/// the next call must replace it (after a 401, once), and the last retryable failure.
#[derive(Default)]
pub struct Progress {
    stale: Option<Secret>,
    renew: bool,
    reauthenticated: bool,
    last_error: Option<String>,
}

impl Outcome {
    /// `success`, `refused`, `failed` or `breaker_open`: the `status` label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered { status, .. } if *status < 300 => "success",
            Outcome::Answered { .. } => "refused",
            Outcome::Failed { breaker: Some(_), .. } => "breaker_open",
            Outcome::Failed { .. } => "failed",
        }
    }
}

pub struct Adapters {
    cfg: AdapterConfig,
    http: reqwest::Client,
    db: PgPool,
    transactions_token: SharedToken,
    sales_token: SharedToken,
    breakers: Vec<(Adapter, SharedBreaker)>,
    supervisor: Supervisor,
    secrets: Vec<Secret>,
}

impl Adapters {
    pub async fn new(cfg: AdapterConfig, bus: &Bus, db: PgPool, http: reqwest::Client) -> anyhow::Result<Self> {
        let tokens = bus.kv("tokens").await?;
        let breakers = bus.kv(SharedBreaker::BUCKET).await?;
        let transactions_token = SharedToken::new(
            tokens.clone(),
            http.clone(),
            Adapter::TransactionStatus.name(),
            format!("{}/oauth/token", cfg.transactions_url),
            cfg.transactions_client_id.clone(),
            cfg.transactions_client_secret.clone(),
        );
        let sales_token = SharedToken::new(
            tokens,
            http.clone(),
            Adapter::TransactionCreate.name(),
            format!("{}/oauth/token", cfg.sales_url),
            cfg.sales_client_id.clone(),
            cfg.sales_client_secret.clone(),
        );
        // A probe may take the whole retry-less call; past that, another call probes.
        let lease = Duration::from_secs(15).min(cfg.breaker_open.max(Duration::from_millis(100)));
        let breakers = Adapter::ALL
            .into_iter()
            .map(|adapter| {
                let breaker = SharedBreaker::new(
                    breakers.clone(),
                    &adapter.breaker_key(),
                    cfg.breaker_failures,
                    cfg.breaker_open,
                    lease,
                );
                (adapter, breaker)
            })
            .collect();
        let supervisor = Supervisor {
            url: cfg.supervisor_url.clone(),
            secret: cfg.supervisor_secret.clone(),
            window: cfg.supervisor_window,
        };
        let secrets = vec![
            cfg.ticketing_api_key.clone(),
            cfg.transactions_client_secret.clone(),
            cfg.sales_client_secret.clone(),
            cfg.sales_hmac_secret.clone(),
            cfg.supervisor_secret.clone(),
        ];
        Ok(Self {
            cfg,
            http,
            db,
            transactions_token,
            sales_token,
            breakers,
            supervisor,
            secrets,
        })
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.cfg
    }

    fn breaker(&self, adapter: Adapter) -> &SharedBreaker {
        &self
            .breakers
            .iter()
            .find(|(a, _)| *a == adapter)
            .expect("a breaker per adapter")
            .1
    }

    /// `text` with every configured secret (and bearer token) masked.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if secret.expose().len() >= 4 {
                text = text.replace(secret.expose(), REDACTED);
            }
        }
        text
    }

    /// Runs a read through its adapter, the retry table's pauses included (its caller waits for
    /// the answer). `Err` only when the hub's own NATS or Postgres fails; the partner's
    /// failures are in the outcome.
    pub async fn call(&self, operation: &Operation, conversation_id: Option<&str>) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let mut progress = Progress::default();
        let mut attempt = 1;
        let outcome = loop {
            match self.step(operation, conversation_id, None, attempt, &mut progress).await? {
                Step::Ended(outcome) => break outcome,
                Step::Reauthenticate => {}
                Step::Retry { delay, .. } => {
                    tracing::info!(attempt, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        };
        self.ended(operation, &outcome, started.elapsed()).await;
        Ok(outcome)
    }

    /// Records an operation's outcome (`integration_*` metrics, `took` retries included) and
    /// tells the supervisor when it failed.
    pub async fn ended(&self, operation: &Operation, outcome: &Outcome, took: Duration) {
        let adapter = operation.adapter().name();
        crate::metrics::integration_request(adapter, operation.name(), outcome.label(), took.as_secs_f64());
        if let Outcome::Failed { error, .. } = outcome
            && let Err(err) = self
                .supervisor
                .failed(&self.db, &self.http, adapter, operation.name(), error)
                .await
        {
            tracing::warn!(err = %self.redact(&format!("{err:#}")), "the supervisor could not be told");
        }
    }

    /// One partner call of `operation`, its `attempt`-th (1 for the first), and what the retry
    /// table makes of it. A read loops over it ([`Adapters::call`]); a write's stage makes one
    /// step per delivery and leaves the pauses to JetStream's redeliveries. `Err` only when the
    /// hub's own NATS or Postgres fails.
    ///
    /// A write passes `idempotency_key` (its operation id): every attempt, and a redelivery of
    /// the command after a crash, sends the partner the same `Idempotency-Key`, so a partner
    /// that honours it acts once (a commit sends MAX's own key instead).
    pub async fn step(
        &self,
        operation: &Operation,
        conversation_id: Option<&str>,
        idempotency_key: Option<&str>,
        attempt: u32,
        progress: &mut Progress,
    ) -> anyhow::Result<Step> {
        let adapter = operation.adapter();
        let span = tracing::info_span!(
            "adapter",
            otel.name = format!("max {}", operation.name()),
            adapter = adapter.name(),
            operation = operation.name(),
            attempt,
            conversation_id,
        );
        async move {
            let breaker = self.breaker(adapter);
            if let Err(state) = breaker.allow().await? {
                crate::metrics::breaker_state(adapter.name(), state.gauge());
                let error = match &progress.last_error {
                    Some(error) => format!("{error}; then the {} breaker opened", adapter.name()),
                    None => format!("the {} breaker is {}: failing fast", adapter.name(), state.as_str()),
                };
                return Ok(Step::Ended(Outcome::Failed {
                    error,
                    breaker: Some(state),
                }));
            }
            let renew = std::mem::take(&mut progress.renew);
            let response = self
                .send(operation, idempotency_key, &mut progress.stale, renew)
                .await;
            let state = if response.verdict() == Verdict::Retry {
                breaker.failed().await?
            } else {
                breaker.succeeded().await?
            };
            crate::metrics::breaker_state(adapter.name(), state.gauge());
            self.audit(operation, attempt, &response, conversation_id).await;
            let schedule = retry::schedule(self.cfg.retry_base);
            Ok(match retry::next(&schedule, attempt, &response, progress.reauthenticated) {
                Next::Done => {
                    let partner: Value = response.json().unwrap_or(Value::Null);
                    Step::Ended(match operation.answer(&partner) {
                        Ok(body) => Outcome::Answered {
                            status: response.status.unwrap_or(200),
                            body,
                        },
                        Err(error) => Outcome::Failed {
                            error: self.redact(&error),
                            breaker: None,
                        },
                    })
                }
                Next::Reauthenticate => {
                    progress.reauthenticated = true;
                    progress.renew = true;
                    Step::Reauthenticate
                }
                Next::Retry(delay) => {
                    let error = self.redact(&response.describe());
                    progress.last_error = Some(error.clone());
                    Step::Retry {
                        delay,
                        error,
                        retry_after: response.retry_after(),
                    }
                }
                Next::GiveUp => Step::Ended(self.final_answer(adapter, &response)),
            })
        }
        .instrument(span)
        .await
    }

    /// The last answer of a call that will not be tried again.
    fn final_answer(&self, adapter: Adapter, response: &Response) -> Outcome {
        match response.status {
            Some(status @ 400..=499) if status != 401 && status != 408 && status != 429 => {
                let partner: Value = response.json().unwrap_or(Value::Null);
                Outcome::Answered {
                    status,
                    body: json!({
                        "error": partner["error"].as_str().unwrap_or("partner_refused"),
                        "message": self.redact(partner["message"].as_str().unwrap_or("the partner refused the call")),
                        "adapter": adapter.name(),
                    }),
                }
            }
            _ => Outcome::Failed {
                error: self.redact(&response.describe()),
                breaker: None,
            },
        }
    }

    /// One partner call, authenticated as the adapter does.
    async fn send(
        &self,
        operation: &Operation,
        idempotency_key: Option<&str>,
        stale: &mut Option<Secret>,
        renew: bool,
    ) -> Response {
        let adapter = operation.adapter();
        let call = operation.call();
        let base = match adapter {
            Adapter::Ticketing => &self.cfg.ticketing_url,
            Adapter::TransactionStatus => &self.cfg.transactions_url,
            Adapter::TransactionCreate => &self.cfg.sales_url,
        };
        let mut request = self.http.request(call.method, format!("{base}{}", call.path));
        let body = call.body.as_ref().map(canonical_json);
        request = match adapter {
            Adapter::Ticketing => request.header("x-api-key", self.cfg.ticketing_api_key.expose()),
            Adapter::TransactionStatus | Adapter::TransactionCreate => {
                let token = if adapter == Adapter::TransactionStatus {
                    &self.transactions_token
                } else {
                    &self.sales_token
                };
                let bearer = match (renew, stale.as_ref()) {
                    (true, Some(old)) => token.replace(old).await,
                    _ => token.bearer().await,
                };
                let bearer = match bearer {
                    Ok(bearer) => bearer,
                    Err(err) => {
                        return Response::not_sent(self.redact(&format!("no OAuth2 token: {err:#}")));
                    }
                };
                let request = request.bearer_auth(bearer.expose());
                *stale = Some(bearer);
                match (&body, adapter) {
                    (Some(body), Adapter::TransactionCreate) => request.header(
                        HMAC_HEADER,
                        body_signature(&self.cfg.sales_hmac_secret, body.as_bytes()),
                    ),
                    _ => request,
                }
            }
        };
        if let Some(key) = call.idempotency_key.as_deref().or(idempotency_key) {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        http_client::send(adapter.name(), request).await
    }

    /// An `integration_log` row and a log line for one partner call; a failure to write the
    /// row is logged, never the caller's failure.
    async fn audit(&self, operation: &Operation, attempt: u32, response: &Response, conversation_id: Option<&str>) {
        let adapter = operation.adapter().name();
        let error = response.attempt_error().map(|e| self.redact(&e));
        let duration_ms = i64::try_from(response.duration.as_millis()).unwrap_or(i64::MAX);
        let status = match response.verdict() {
            Verdict::Success => "success",
            Verdict::Retry => "failure",
            Verdict::Permanent => "refused",
        };
        tracing::info!(
            adapter,
            operation = operation.name(),
            attempt,
            duration_ms,
            status,
            status_code = response.status,
            conversation_id,
            error = error.as_deref(),
            "integration_request"
        );
        let written = sqlx::query(
            "INSERT INTO integration_log
                 (adapter, operation, attempt, status_code, duration_ms, error, conversation_id, trace_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(adapter)
        .bind(operation.name())
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(response.status.map(i32::from))
        .bind(duration_ms)
        .bind(error)
        .bind(conversation_id)
        .bind(crate::telemetry::current_trace_id())
        .execute(&self.db)
        .await;
        if let Err(err) = written {
            tracing::warn!(%err, adapter, "could not write the integration_log row");
        }
    }
}
