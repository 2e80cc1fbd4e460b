//! The casino's partner, simulated: the game provider Jaqpot Games.

pub mod provider;

use super::config::{CASINO_SECRET, PROVIDER_SECRET};
use crate::mocks::{End, Mock, Wire};

pub const PROVIDER: Mock = Mock {
    name: "provider mock",
    addr_var: "PROVIDER_MOCK_ADDR",
    default_addr: "127.0.0.1:8006",
    path: "",
    wires: &[
        Wire {
            var: "PROVIDER_URL",
            to: End::Mock,
            path: "",
        },
        Wire {
            var: "CASINO_WALLET_URL",
            to: End::Ingress,
            path: "/casino",
        },
    ],
    secrets: &[&CASINO_SECRET, &PROVIDER_SECRET],
    start: provider::start,
};
