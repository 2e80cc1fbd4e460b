//! Partner simulators, the scaffolding every mock shares: real HTTP servers with fault
//! injection, so retries, dead letters and breakers are exercised for real. Each integration
//! describes its mocks ([`Mock`]: where it listens, how it is wired to the hub, its routes);
//! the hub binds, serves and wires them.
//!
//! Every mock answers `POST /_mock/faults` with a [`FaultPlan`] (fail the next N requests with
//! a status, add latency, or be down until reset) and `DELETE /_mock/faults` to reset; its
//! partner routes obey the plan, its `/_mock/...` admin routes do not (tests read state while
//! the partner is "down").

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Env, SecretVar};

/// A partner mock of an integration, run by `ihub dev` and `ihub mocks` (and the tests).
pub struct Mock {
    /// How messages name it, e.g. `the operator mock`.
    pub name: &'static str,
    /// The variable of its listen address, and the address when it is unset.
    pub addr_var: &'static str,
    pub default_addr: &'static str,
    /// What `ihub dev` shows of it: a path on its address (`/callbacks`), or nothing.
    pub path: &'static str,
    /// Variables that connect the hub and this mock. When both run in one process they are
    /// set from where each listens, unless the environment sets them.
    pub wires: &'static [Wire],
    pub secrets: &'static [&'static SecretVar],
    /// Builds the mock (its state and routes) from the settings.
    pub start: fn(&Env) -> anyhow::Result<Routes>,
}

/// A variable pointing at one end: `to` plus `path` (e.g. `OPERATOR_URL` → this mock,
/// `HUB_CALLBACK_URL` → the ingress's `/webhooks/incoming`).
pub struct Wire {
    pub var: &'static str,
    pub to: End,
    pub path: &'static str,
}

pub enum End {
    /// The mock that declares the wire.
    Mock,
    /// The hub's ingress.
    Ingress,
}

/// A mock's routes: `partner` routes behind its fault plan, `admin` routes (`/_mock/...`)
/// outside it, and its state (tests reach it by type).
pub struct Routes {
    state: Arc<dyn Any + Send + Sync>,
    partner: Router,
    admin: Router,
}

impl Routes {
    /// `partner` and `admin` routes over the mock's `state`.
    pub fn new<T: Send + Sync + 'static>(
        state: Arc<T>,
        partner: Router<Arc<T>>,
        admin: Router<Arc<T>>,
    ) -> Self {
        Self {
            partner: partner.with_state(state.clone()),
            admin: admin.with_state(state.clone()),
            state,
        }
    }
}

/// A mock, listening.
#[derive(Clone)]
pub struct Running {
    pub name: &'static str,
    /// `http://<addr>`.
    pub url: String,
    pub path: &'static str,
    pub faults: Arc<Faults>,
    state: Arc<dyn Any + Send + Sync>,
}

impl Running {
    /// The mock's state, when it is a `T`.
    pub fn typed<T: Send + Sync + 'static>(&self) -> Option<Mocked<T>> {
        Some(Mocked {
            mock: self.state.clone().downcast::<T>().ok()?,
            faults: self.faults.clone(),
            url: self.url.clone(),
        })
    }
}

/// A running mock of type `T`, with its fault plan: what a test holds.
pub struct Mocked<T> {
    pub mock: Arc<T>,
    pub faults: Arc<Faults>,
    pub url: String,
}

impl<T> std::ops::Deref for Mocked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.mock
    }
}

/// Serves `routes` on `listener` behind a fresh fault plan until `shutdown`: the mock, and the
/// server to spawn.
pub fn start(
    mock: &Mock,
    listener: TcpListener,
    routes: Routes,
    shutdown: CancellationToken,
) -> (Running, BoxFuture<'static, anyhow::Result<()>>) {
    let faults = Arc::new(Faults::default());
    let running = Running {
        name: mock.name,
        url: crate::server::url_of(&listener),
        path: mock.path,
        faults: faults.clone(),
        state: routes.state,
    };
    let router = with_faults(routes.partner, routes.admin, &faults);
    let server = crate::server::serve(listener, router, shutdown);
    (running, Box::pin(server))
}

/// The wired variables of `mocks` (each with the URL it listens on), pointing at `ingress_url`
/// for [`End::Ingress`].
pub fn wiring<'a>(
    mocks: impl IntoIterator<Item = (&'a Mock, &'a str)>,
    ingress_url: &str,
) -> Vec<(&'static str, String)> {
    mocks
        .into_iter()
        .flat_map(|(mock, url)| {
            mock.wires.iter().map(move |wire| {
                let base = match wire.to {
                    End::Mock => url,
                    End::Ingress => ingress_url,
                };
                (wire.var, format!("{base}{}", wire.path))
            })
        })
        .collect()
}

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
async fn inject_faults(
    State(faults): State<Arc<Faults>>,
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
/// Every error a mock's router or extractors make is JSON too, as the hub's are.
fn with_faults(partner: Router, admin: Router, faults: &Arc<Faults>) -> Router {
    partner
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            inject_faults,
        ))
        .merge(admin)
        .merge(fault_routes(faults.clone()))
        .fallback(|| async {
            crate::ingress::ApiError::not_found(
                "no such route on this mock; `ihub mocks --help` lists the mocks",
            )
        })
        .layer(axum::middleware::map_response(crate::ingress::json_errors))
}

/// The `/_mock/faults` admin routes for `faults`.
fn fault_routes(faults: Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/_mock/faults",
            post(
                |State(faults): State<Arc<Faults>>, Json(plan): Json<FaultPlan>| async move {
                    faults.set(plan.clone());
                    Json(plan)
                },
            )
            .delete(|State(faults): State<Arc<Faults>>| async move {
                faults.reset();
                StatusCode::NO_CONTENT
            })
            .get(|State(faults): State<Arc<Faults>>| async move {
                Json(serde_json::json!({
                    "plan": *faults.plan.lock().expect("fault lock"),
                    "requests": faults.requests(),
                    "failed": faults.failed(),
                }))
            }),
        )
        .with_state(faults)
}

/// Starting a mock on its own, for its unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A mock of type `T` on a free loopback port, stopped when dropped.
    pub struct TestMock<T> {
        pub mock: Arc<T>,
        pub faults: Arc<Faults>,
        pub url: String,
        pub http: reqwest::Client,
        shutdown: CancellationToken,
    }

    impl<T> Drop for TestMock<T> {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    pub async fn start<T: Send + Sync + 'static>(routes: Routes) -> TestMock<T> {
        crate::tls::install_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let shutdown = CancellationToken::new();
        let mock = Mock {
            name: "the mock under test",
            addr_var: "",
            default_addr: "",
            path: "",
            wires: &[],
            secrets: &[],
            start: |_| unreachable!("started by the test"),
        };
        let (running, server) = super::start(&mock, listener, routes, shutdown.clone());
        tokio::spawn(server);
        let typed = running.typed::<T>().expect("the routes' state is a T");
        TestMock {
            mock: typed.mock,
            faults: typed.faults,
            url: typed.url,
            http: reqwest::Client::new(),
            shutdown,
        }
    }
}
