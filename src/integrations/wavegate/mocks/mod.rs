//! WaveGate's partners, simulated: the ticketing system and an OTA partner's callback
//! receiver.

pub mod ota;
pub mod ticketing;

use crate::mocks::{End, Mock, Wire};

pub const TICKETING: Mock = Mock {
    name: "ticketing mock",
    addr_var: "TICKETING_MOCK_ADDR",
    default_addr: "127.0.0.1:8003",
    path: "",
    wires: &[Wire {
        var: "TICKETING_URL",
        to: End::Mock,
        path: "/orders",
    }],
    secrets: &[],
    start: ticketing::start,
};

/// Partners name their own callback URLs (per order), so nothing is wired to it.
pub const OTA: Mock = Mock {
    name: "OTA mock",
    addr_var: "OTA_MOCK_ADDR",
    default_addr: "127.0.0.1:8004",
    path: "/callbacks",
    wires: &[],
    secrets: &[],
    start: ota::start,
};
