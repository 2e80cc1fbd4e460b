//! NewStore's durable consumers.
//!
//! | durable | stream | subjects | does |
//! | --- | --- | --- | --- |
//! | `stage-newstore` | INBOUND | `in.newstore.>` | records each event, decides per order (under its row lock) what goes to Hail; parks what must wait for its order's sale |
//! | `deliver-hail` | OUTBOUND | `out.hail.>` | sends each Hail transaction; a delivered sale releases what was parked for its order |

mod deliver_hail;
mod stage;

use super::config::{HAIL_API_KEY, NEWSTORE_WEBHOOK, NewStoreConfig};
use crate::runtime::{Consumer, Schedule, Worker};

pub const ALL: &[Consumer] = &[
    Consumer {
        file: crate::consumer_file!("INBOUND", "stage-newstore"),
        secrets: &[&NEWSTORE_WEBHOOK, &HAIL_API_KEY],
        start: |ctx| {
            let cfg = NewStoreConfig::from_env(ctx.env())?;
            let spec = ctx.spec(Schedule::STAGE).without_breaker();
            Ok(Worker::new(spec, stage::StageNewStore::new(ctx, cfg)))
        },
    },
    Consumer {
        file: crate::consumer_file!("OUTBOUND", "deliver-hail"),
        secrets: &[&NEWSTORE_WEBHOOK, &HAIL_API_KEY],
        start: |ctx| {
            let cfg = NewStoreConfig::from_env(ctx.env())?;
            let spec = ctx.spec(cfg.hail_retry.clone());
            Ok(Worker::new(spec, deliver_hail::DeliverHail::new(ctx, cfg)))
        },
    },
];
