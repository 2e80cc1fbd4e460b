//! What WaveGate's routes share.

use std::sync::Arc;

use super::config::{ADMIN_TOKEN, APP_HMAC, WaveGateConfig};
use crate::config::Secret;
use crate::ingress::Context;
use crate::ratelimit::RateLimiter;

pub struct WaveGate {
    pub hub: Context,
    pub cfg: WaveGateConfig,
    /// The key of the stored partner token hashes.
    pub token_key: Secret,
    pub admin_token: Secret,
    pub limiter: RateLimiter,
}

pub type State = Arc<WaveGate>;

impl WaveGate {
    pub async fn new(hub: &Context) -> anyhow::Result<State> {
        let env = hub.env();
        let cfg = WaveGateConfig::from_env(env)?;
        Ok(Arc::new(Self {
            token_key: env.secret(&APP_HMAC)?,
            admin_token: env.secret(&ADMIN_TOKEN)?,
            limiter: RateLimiter::new(
                hub.bus.kv("ratelimit").await?,
                cfg.rate_limit_capacity,
                cfg.rate_limit_per_sec,
            ),
            hub: hub.clone(),
            cfg,
        }))
    }
}
