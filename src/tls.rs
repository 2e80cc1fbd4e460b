//! TLS uses ring (shared with async-nats); the provider must be installed before any client
//! (partner calls, the OTLP exporter) is built.

use std::sync::Once;

pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
