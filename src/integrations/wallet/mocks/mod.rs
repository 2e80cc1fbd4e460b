//! The wallet's partners, simulated: the operator wallet and the RGS.

pub mod listing;
pub mod operator;
pub mod rgs;

use super::config::WALLET_HMAC;
use crate::mocks::{End, Mock, Wire};

pub const OPERATOR: Mock = Mock {
    name: "operator mock",
    addr_var: "OPERATOR_MOCK_ADDR",
    default_addr: "127.0.0.1:8001",
    path: "",
    wires: &[
        Wire {
            var: "OPERATOR_URL",
            to: End::Mock,
            path: "",
        },
        Wire {
            var: "HUB_CALLBACK_URL",
            to: End::Ingress,
            path: "/webhooks/incoming",
        },
    ],
    secrets: &[&WALLET_HMAC],
    start: operator::start,
};

pub const RGS: Mock = Mock {
    name: "RGS mock",
    addr_var: "RGS_MOCK_ADDR",
    default_addr: "127.0.0.1:8002",
    path: "",
    wires: &[Wire {
        var: "RGS_WEBHOOK_URL",
        to: End::Mock,
        path: "/webhooks",
    }],
    // It checks the hub's signatures when it knows the secret.
    secrets: &[],
    start: rgs::start,
};
