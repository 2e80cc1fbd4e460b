//! Partner simulators: real HTTP servers with fault injection, so retries, dead letters and
//! breakers are exercised for real: the operator wallet, the RGS, and WaveGate's ticketing
//! system and OTA partner callback receiver.
//!
//! Every mock answers `POST /_mock/faults` with a [`FaultPlan`] (fail the next N requests with
//! a status, add latency, or be down until reset) and `DELETE /_mock/faults` to reset.

pub mod operator;
pub mod ota;
pub mod rgs;
pub mod ticketing;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a mock should do wrong, set with `POST /_mock/faults`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultPlan {
    /// Fail this many of the next requests.
    pub fail_times: u32,
    /// With this status (default 500).
    pub status: Option<u16>,
    /// Send this `Retry-After` (seconds) with the failures.
    pub retry_after_secs: Option<u64>,
    /// Fail every request until the plan is reset.
    pub down: bool,
    /// Answer every request this much later (the work is done first, as a slow partner does).
    pub latency_ms: u64,
}

/// The fault state of one mock, plus how many partner requests it has seen.
#[derive(Default)]
pub struct Faults {
    plan: Mutex<FaultPlan>,
    requests: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl Faults {
    pub fn set(&self, plan: FaultPlan) {
        *self.plan.lock().expect("fault lock") = plan;
    }

    pub fn reset(&self) {
        self.set(FaultPlan::default());
    }

    /// Fail the next `times` requests with `status`.
    pub fn fail_next(&self, times: u32, status: u16) {
        self.set(FaultPlan {
            fail_times: times,
            status: Some(status),
            ..FaultPlan::default()
        });
    }

    pub fn down(&self) {
        self.set(FaultPlan {
            down: true,
            status: Some(503),
            ..FaultPlan::default()
        });
    }

    pub fn latency(&self, latency: Duration) {
        self.set(FaultPlan {
            latency_ms: latency.as_millis() as u64,
            ..FaultPlan::default()
        });
    }

    /// Partner requests seen (failed ones included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected failure.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Decides the fate of one request: (latency, failure status and retry-after).
    fn next(&self) -> (Duration, Option<(u16, Option<u64>)>) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut plan = self.plan.lock().expect("fault lock");
        let latency = Duration::from_millis(plan.latency_ms);
        let status = plan.status.unwrap_or(500);
        let failure = if plan.down {
            Some((status, plan.retry_after_secs))
        } else if plan.fail_times > 0 {
            plan.fail_times -= 1;
            Some((status, plan.retry_after_secs))
        } else {
            None
        };
        if failure.is_some() {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        (latency, failure)
    }
}

/// Middleware applying a mock's [`Faults`] to its partner routes.
pub async fn inject_faults(
    State(faults): State<std::sync::Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let (latency, failure) = faults.next();
    let _counted = InFlight::enter(&faults);
    let response = match failure {
        Some((status, retry_after)) => injected(status, retry_after),
        None => next.run(request).await,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

/// Counts a request in flight until dropped (also when the caller hangs up).
struct InFlight<'a>(&'a Faults);

impl<'a> InFlight<'a> {
    fn enter(faults: &'a Faults) -> Self {
        let now = faults.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        faults.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(faults)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn injected(status: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Json(serde_json::json!({
        "error": "injected_fault",
        "message": format!("mock fault injection answered {status}"),
    }));
    match retry_after {
        Some(secs) => (status, [("retry-after", secs.to_string())], body).into_response(),
        None => (status, body).into_response(),
    }
}

/// A mock's router: its `partner` routes behind its fault plan, its `admin` routes and
/// `/_mock/faults` outside it (so tests can read state while the partner is "down").
pub fn with_faults(partner: Router, admin: Router, faults: &std::sync::Arc<Faults>) -> Router {
    partner
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            inject_faults,
        ))
        .merge(admin)
        .merge(fault_routes(faults.clone()))
}

/// The `/_mock/faults` admin routes for `faults`.
pub fn fault_routes(faults: std::sync::Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/_mock/faults",
            post(
                |State(faults): State<std::sync::Arc<Faults>>, Json(plan): Json<FaultPlan>| async move {
                    faults.set(plan.clone());
                    Json(plan)
                },
            )
            .delete(|State(faults): State<std::sync::Arc<Faults>>| async move {
                faults.reset();
                StatusCode::NO_CONTENT
            })
            .get(|State(faults): State<std::sync::Arc<Faults>>| async move {
                Json(serde_json::json!({
                    "plan": *faults.plan.lock().expect("fault lock"),
                    "requests": faults.requests(),
                    "failed": faults.failed(),
                }))
            }),
        )
        .with_state(faults)
}

/// Binds `addr`, with a message that says what to do when the port is taken.
pub async fn bind(addr: SocketAddr, what: &str, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        anyhow::anyhow!(
            "{what} cannot listen on {addr} ({err}): stop whatever uses the port, or set {variable}"
        )
    })
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}

/// `http://<addr>` of a bound listener.
pub fn url_of(listener: &TcpListener) -> String {
    format!(
        "http://{}",
        listener
            .local_addr()
            .expect("a bound listener has an address")
    )
}
