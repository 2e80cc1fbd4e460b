//! WaveGate's durable consumers, each a [`Stage`] the runtime runs on the durable of the same
//! name in `nats/consumers/`.
//!
//! | durable | stream | subjects | does |
//! | --- | --- | --- | --- |
//! | `stage-wavegate` | INBOUND | `in.wavegate.>` | records accepted orders, commands ticketing; records refused calls |
//! | `deliver-ticketing` | OUTBOUND | `out.ticketing.>` | sends orders to ticketing, stores tickets, commands the callback |
//! | `deliver-ota-callback` | OUTBOUND | `out.ota.>` | calls the partner's `callback_url` back |
//!
//! [`Stage`]: crate::runtime::Stage

mod deliver_ota_callback;
mod deliver_ticketing;
mod stage;

use super::config::WaveGateConfig;
use super::domain::Order;
use crate::runtime::{Consumer, Schedule, Worker};

pub const ALL: &[Consumer] = &[
    Consumer {
        file: crate::consumer_file!("INBOUND", "stage-wavegate"),
        secrets: &[],
        start: |ctx| {
            let spec = ctx.spec(Schedule::STAGE).without_breaker();
            Ok(Worker::new(spec, stage::StageWaveGate::new(ctx)))
        },
    },
    Consumer {
        file: crate::consumer_file!("OUTBOUND", "deliver-ticketing"),
        secrets: &[],
        start: |ctx| {
            let cfg = WaveGateConfig::from_env(ctx.env())?;
            let spec = ctx.spec(cfg.retry.clone());
            Ok(Worker::new(spec, deliver_ticketing::DeliverTicketing::new(ctx, cfg)))
        },
    },
    // Every partner has its own callback host: one partner's dead endpoint must not open a
    // breaker for all of them.
    Consumer {
        file: crate::consumer_file!("OUTBOUND", "deliver-ota-callback"),
        secrets: &[],
        start: |ctx| {
            let cfg = WaveGateConfig::from_env(ctx.env())?;
            let spec = ctx
                .spec(cfg.retry.clone())
                .without_breaker()
                .with_concurrency(cfg.callback_concurrency);
            Ok(Worker::new(spec, deliver_ota_callback::DeliverOtaCallback::new(ctx, cfg)))
        },
    },
];

/// The headers of every WaveGate call: the order's trace id (also the idempotency key), its
/// partner and its external id.
fn order_headers(request: reqwest::RequestBuilder, order: &Order) -> reqwest::RequestBuilder {
    request
        .header("x-trace-id", order.trace_id.to_string())
        .header("x-origin-partner-id", order.partner_id.as_str())
        .header("x-external-order-id", order.external_order_id.as_str())
        .header("idempotency-key", order.trace_id.to_string())
}
