//! MAX's partners, simulated: the ticketing system, the transaction status system, the sales
//! system and the supervisor's receiver.

pub mod log;
pub mod oauth;
pub mod sales;
pub mod supervisor;
pub mod ticketing;
pub mod transactions;

use super::config::{
    SALES_CLIENT_ID, SALES_CLIENT_SECRET, SALES_HMAC_SECRET, SUPERVISOR_SECRET,
    TICKETING_API_KEY, TRANSACTIONS_CLIENT_ID, TRANSACTIONS_CLIENT_SECRET,
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

pub const SALES: Mock = Mock {
    name: "MAX sales",
    addr_var: "MAX_SALES_MOCK_ADDR",
    default_addr: "127.0.0.1:8009",
    path: "",
    wires: &[Wire {
        var: "MAX_SALES_URL",
        to: End::Mock,
        path: "",
    }],
    secrets: &[&SALES_CLIENT_ID, &SALES_CLIENT_SECRET, &SALES_HMAC_SECRET],
    start: sales::start,
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
