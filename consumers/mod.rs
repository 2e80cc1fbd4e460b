//! The durable consumers, one module per stage or delivery target. Each is a [`Stage`] run by
//! the runtime on the durable of the same name in `nats/consumers/`.
//!
//! | durable | stream | subjects | does |
//! | --- | --- | --- | --- |
//! | `stage-wallet` | INBOUND | `in.wallet.>` | records debits/credits, commands the operator call; records operator callbacks |
//! | `deliver-operator` | OUTBOUND | `out.operator.>` | calls the operator wallet, records the outcome, commands the RGS webhook |
//! | `deliver-rgs` | OUTBOUND | `out.rgs.>` | delivers outcome webhooks to the RGS |
//! | `stage-wavegate` | INBOUND | `in.wavegate.>` | records accepted orders, commands ticketing; records refused calls |
//! | `deliver-ticketing` | OUTBOUND | `out.ticketing.>` | sends orders to ticketing, stores tickets, commands the callback |
//! | `deliver-ota-callback` | OUTBOUND | `out.ota.>` | calls the partner's `callback_url` back |
//!
//! [`Stage`]: crate::runtime::Stage

pub mod deliver_operator;
pub mod deliver_ota_callback;
pub mod deliver_rgs;
pub mod deliver_ticketing;
pub mod stage_wallet;
pub mod stage_wavegate;

use std::sync::Arc;

use anyhow::bail;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http_client;
use crate::idempotency::Idempotency;
use crate::nats::Bus;
use crate::runtime::{self, Schedule, Spec};

/// Every consumer, in pipeline order.
pub const ALL: [&str; 6] = [
    "stage-wallet",
    "deliver-operator",
    "deliver-rgs",
    "stage-wavegate",
    "deliver-ticketing",
    "deliver-ota-callback",
];

/// What consumers share.
#[derive(Clone)]
pub struct Deps {
    pub bus: Bus,
    pub db: PgPool,
    pub cfg: Arc<Config>,
    pub http: reqwest::Client,
    pub idempotency: Idempotency,
}

impl Deps {
    pub async fn new(bus: Bus, db: PgPool, cfg: Arc<Config>) -> anyhow::Result<Self> {
        Ok(Self {
            idempotency: Idempotency::new(bus.kv("idempotency").await?),
            http: http_client::client(cfg.http_timeout),
            bus,
            db,
            cfg,
        })
    }

    fn spec(&self, durable: &'static str, stream: &'static str, schedule: Schedule) -> Spec {
        Spec {
            durable,
            stream,
            schedule,
            concurrency: self.cfg.consumer_concurrency,
            breaker: Some((self.cfg.breaker_failures, self.cfg.breaker_open)),
        }
    }
}

/// Retries of internal stages (a database or NATS hiccup): quick at first, for about ten minutes.
fn stage_schedule() -> Schedule {
    Schedule::Exponential {
        base: std::time::Duration::from_millis(200),
        max: std::time::Duration::from_secs(60),
        attempts: 15,
    }
}

/// Checks `--only` names against [`ALL`].
pub fn select(only: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if only.is_empty() {
        return Ok(ALL.to_vec());
    }
    only.iter()
        .map(
            |name| match ALL.iter().find(|known| **known == name.as_str()) {
                Some(known) => Ok(*known),
                None => bail!("unknown consumer {name:?}; known: {}", ALL.join(", ")),
            },
        )
        .collect()
}

/// Starts the named consumers; each task ends when `shutdown` is cancelled.
pub fn spawn(
    names: &[&'static str],
    deps: &Deps,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    for name in names {
        let bus = deps.bus.clone();
        let stop = shutdown.clone();
        match *name {
            "stage-wallet" => tasks.spawn(runtime::run(
                bus,
                Spec {
                    breaker: None,
                    ..deps.spec("stage-wallet", "INBOUND", stage_schedule())
                },
                Arc::new(stage_wallet::StageWallet::new(deps.clone())),
                stop,
            )),
            "deliver-operator" => tasks.spawn(runtime::run(
                bus,
                deps.spec(
                    "deliver-operator",
                    "OUTBOUND",
                    deps.cfg.operator_retry.clone(),
                ),
                Arc::new(deliver_operator::DeliverOperator::new(deps.clone())),
                stop,
            )),
            "deliver-rgs" => tasks.spawn(runtime::run(
                bus,
                deps.spec("deliver-rgs", "OUTBOUND", deps.cfg.rgs_retry.clone()),
                Arc::new(deliver_rgs::DeliverRgs::new(deps.clone())?),
                stop,
            )),
            "stage-wavegate" => tasks.spawn(runtime::run(
                bus,
                Spec {
                    breaker: None,
                    ..deps.spec("stage-wavegate", "INBOUND", stage_schedule())
                },
                Arc::new(stage_wavegate::StageWaveGate::new(deps.clone())),
                stop,
            )),
            "deliver-ticketing" => tasks.spawn(runtime::run(
                bus,
                deps.spec(
                    "deliver-ticketing",
                    "OUTBOUND",
                    deps.cfg.wavegate.retry.clone(),
                ),
                Arc::new(deliver_ticketing::DeliverTicketing::new(deps.clone())),
                stop,
            )),
            // Every partner has its own callback host: one partner's dead endpoint must not
            // open a breaker for all of them.
            "deliver-ota-callback" => tasks.spawn(runtime::run(
                bus,
                Spec {
                    breaker: None,
                    concurrency: deps.cfg.wavegate.callback_concurrency,
                    ..deps.spec(
                        "deliver-ota-callback",
                        "OUTBOUND",
                        deps.cfg.wavegate.retry.clone(),
                    )
                },
                Arc::new(deliver_ota_callback::DeliverOtaCallback::new(deps.clone())),
                stop,
            )),
            other => unreachable!("{other} passed select()"),
        };
    }
    Ok(())
}

/// The headers of every WaveGate call: the order's trace id (also the idempotency key), its
/// partner and its external id.
fn wavegate_headers(
    request: reqwest::RequestBuilder,
    order: &crate::domain::wavegate::Order,
) -> reqwest::RequestBuilder {
    request
        .header("x-trace-id", order.trace_id.to_string())
        .header("x-origin-partner-id", order.partner_id.as_str())
        .header("x-external-order-id", order.external_order_id.as_str())
        .header("idempotency-key", order.trace_id.to_string())
}

/// Appends one partner call to the shared attempt log.
pub async fn record_attempt(
    db: impl sqlx::PgExecutor<'_>,
    target: &str,
    subject_id: &str,
    attempt: u64,
    response: &http_client::Response,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO delivery_attempts (target, subject_id, attempt, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(target)
    .bind(subject_id)
    .bind(attempt as i32)
    .bind(response.status.map(i32::from))
    .bind(response.attempt_error())
    .bind(response.duration.as_millis() as i32)
    .execute(db)
    .await?;
    Ok(())
}
