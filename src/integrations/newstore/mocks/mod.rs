//! NewStore's partner, simulated: eyos Hail.

pub mod hail;

pub use super::config::HAIL_API_KEY;
use crate::mocks::{End, Mock, Wire};

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
