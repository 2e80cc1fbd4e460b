//! The wallet's durable consumers, each a [`Stage`] the runtime runs on the durable of the same
//! name in `nats/consumers/`.
//!
//! | durable | stream | subjects | does |
//! | --- | --- | --- | --- |
//! | `stage-wallet` | INBOUND | `in.wallet.>` | records debits/credits, commands the operator call; records operator callbacks |
//! | `deliver-operator` | OUTBOUND | `out.operator.>` | calls the operator wallet, records the outcome, commands the RGS webhook |
//! | `deliver-rgs` | OUTBOUND | `out.rgs.>` | delivers outcome webhooks to the RGS |
//!
//! [`Stage`]: crate::runtime::Stage

mod deliver_operator;
mod deliver_rgs;
mod stage;

use super::config::{WALLET_HMAC, WalletConfig};
use crate::runtime::{Consumer, Schedule, Worker};

pub const ALL: &[Consumer] = &[
    Consumer {
        file: crate::consumer_file!("INBOUND", "stage-wallet"),
        secrets: &[],
        start: |ctx| {
            let spec = ctx.spec(Schedule::STAGE).without_breaker();
            Ok(Worker::new(spec, stage::StageWallet::new(ctx)))
        },
    },
    Consumer {
        file: crate::consumer_file!("OUTBOUND", "deliver-operator"),
        secrets: &[],
        start: |ctx| {
            let cfg = WalletConfig::from_env(ctx.env())?;
            let spec = ctx.spec(cfg.operator_retry.clone());
            Ok(Worker::new(spec, deliver_operator::DeliverOperator::new(ctx, cfg)))
        },
    },
    Consumer {
        file: crate::consumer_file!("OUTBOUND", "deliver-rgs"),
        secrets: &[&WALLET_HMAC],
        start: |ctx| {
            let cfg = WalletConfig::from_env(ctx.env())?;
            let spec = ctx.spec(cfg.rgs_retry.clone());
            Ok(Worker::new(spec, deliver_rgs::DeliverRgs::new(ctx, cfg)?))
        },
    },
];
