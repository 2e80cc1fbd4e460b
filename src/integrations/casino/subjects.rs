//! The casino's NATS subjects (before the deployment's prefix).

/// The wallet service's endpoints (queue group `q` of the consumer processes): one per call.
pub const BALANCE: &str = "svc.casino.balance";
pub const DEBIT: &str = "svc.casino.debit";
pub const CREDIT: &str = "svc.casino.credit";
pub const ROLLBACK: &str = "svc.casino.rollback";
pub const LAUNCH: &str = "svc.casino.launch";
pub const SIMULATE: &str = "svc.casino.simulate";

/// Where each committed ledger entry is published (`LEDGER` stream), by entry kind:
/// `ledger.casino.seed|debit|credit|rollback`.
pub fn ledger(kind: &str) -> String {
    format!("ledger.casino.{kind}")
}

/// The NATS service every consumer process serves the wallet as (`nats micro info`).
pub const SERVICE: &str = "ihub-casino-wallet";
