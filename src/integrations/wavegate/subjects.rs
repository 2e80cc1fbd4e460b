//! WaveGate's subjects, named once: its ingress publishes on them, its consumers read and
//! publish them, and its schema map covers them.

pub const ORDER_ACCEPTED: &str = "in.wavegate.order_accepted";
pub const AUTH_REFUSED: &str = "in.wavegate.auth_refused";
pub const TICKETING_ORDER: &str = "out.ticketing.order";
pub const OTA_CALLBACK: &str = "out.ota.callback";
