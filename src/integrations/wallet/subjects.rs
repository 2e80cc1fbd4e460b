//! The wallet's subjects, named once: its ingress publishes on them, its consumers read and
//! publish them, its schema map and `nats/consumers/*/stage-wallet.json` etc. cover them.

use uuid::Uuid;

use super::domain::Kind;

pub const DEBIT_REQUESTED: &str = "in.wallet.debit";
pub const CREDIT_REQUESTED: &str = "in.wallet.credit";
pub const OPERATOR_CALLBACK: &str = "in.wallet.operator_callback";
pub const WITHDRAW: &str = "out.operator.withdraw";
pub const DEPOSIT: &str = "out.operator.deposit";
pub const RGS_WEBHOOK: &str = "out.rgs.webhook";

/// An accepted debit or credit.
pub fn requested(kind: Kind) -> &'static str {
    match kind {
        Kind::Debit => DEBIT_REQUESTED,
        Kind::Credit => CREDIT_REQUESTED,
    }
}

/// The operator call of a debit or credit.
pub fn operator_command(kind: Kind) -> &'static str {
    match kind {
        Kind::Debit => WITHDRAW,
        Kind::Credit => DEPOSIT,
    }
}

/// Where a waiting request hears the outcome of transaction `id`: core NATS, outside every
/// stream.
pub fn outcome(id: Uuid) -> String {
    format!("reply.wallet.{id}")
}
