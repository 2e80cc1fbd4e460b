//! NewStore's subjects.

/// Every webhook event the ingress accepted (handled kinds and ignored names alike).
pub const EVENT: &str = "in.newstore.event";
/// One Hail transaction to send.
pub const HAIL_TRANSACTION: &str = "out.hail.transaction";

/// The durable that parks an order's events until its sale is delivered (and whose parked
/// messages a delivered sale releases).
pub const PARKING_DURABLE: &str = "stage-newstore";
