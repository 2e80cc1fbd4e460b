//! MAX's partners, simulated: the ticketing system, the transaction status system and the
//! supervisor's receiver (the sales system comes with the transaction create adapter).

pub mod log;
pub mod supervisor;
pub mod ticketing;
pub mod transactions;

use super::config::{
    SUPERVISOR_SECRET, TICKETING_API_KEY, TRANSACTIONS_CLIENT_ID, TRANSACTIONS_CLIENT_SECRET,
};
use crate::mocks::{End, Mock, Wire};

pub const TICKETING: Mock = Mock {
    name: "MAX ticketing",
    addr_var: "MAX_TICKETING_MOCK_ADDR",
    default_addr: "127.0.0.1:8007",
    path: "",
    wires: &[Wire {
        var: "MAX_TICKETING_URL",
        to: End::Mock,
        path: "",
    }],
    secrets: &[&TICKETING_API_KEY],
    start: ticketing::start,
};

pub const TRANSACTIONS: Mock = Mock {
    name: "MAX txn status",
    addr_var: "MAX_TRANSACTIONS_MOCK_ADDR",
    default_addr: "127.0.0.1:8008",
    path: "",
    wires: &[Wire {
        var: "MAX_TRANSACTIONS_URL",
        to: End::Mock,
        path: "",
    }],
    secrets: &[&TRANSACTIONS_CLIENT_ID, &TRANSACTIONS_CLIENT_SECRET],
    start: transactions::start,
};

pub const SUPERVISOR: Mock = Mock {
    name: "supervisor",
    addr_var: "SUPERVISOR_MOCK_ADDR",
    default_addr: "127.0.0.1:8010",
    path: "/notices",
    wires: &[Wire {
        var: "SUPERVISOR_WEBHOOK_URL",
        to: End::Mock,
        path: "/notices",
    }],
    secrets: &[&SUPERVISOR_SECRET],
    start: supervisor::start,
};
