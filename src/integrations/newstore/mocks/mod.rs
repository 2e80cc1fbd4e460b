//! NewStore's partner, simulated: eyos Hail.

pub mod hail;

use crate::config::SecretVar;
use crate::mocks::{End, Mock, Wire};

/// The bearer key Hail takes (the default tenant's).
pub const HAIL_API_KEY: SecretVar = SecretVar {
    name: "HAIL_API_KEY",
    demo: "dev-hail-key",
};

pub const HAIL: Mock = Mock {
    name: "Hail mock",
    addr_var: "HAIL_MOCK_ADDR",
    default_addr: "127.0.0.1:8005",
    path: "",
    wires: &[Wire {
        var: "HAIL_URL",
        to: End::Mock,
        path: "/events/v2/transaction/",
    }],
    secrets: &[&HAIL_API_KEY],
    start: hail::start,
};
