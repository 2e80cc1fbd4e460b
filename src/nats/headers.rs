//! Header names ihub puts on messages. Operators see them in `nats stream view`.

/// The idempotency KV key the outcome of this request is stored under.
pub const IDEMPOTENCY_KEY: &str = "Ihub-Idempotency-Key";
/// Fingerprint of the request body that claimed the idempotency key.
pub const FINGERPRINT: &str = "Ihub-Fingerprint";

// On dead letters: where the message came from and why it stopped.
pub const DLQ_CONSUMER: &str = "Ihub-Dlq-Consumer";
pub const ORIGINAL_SUBJECT: &str = "Ihub-Original-Subject";
pub const ORIGINAL_STREAM: &str = "Ihub-Original-Stream";
pub const ORIGINAL_SEQ: &str = "Ihub-Original-Seq";
pub const ORIGINAL_MSG_ID: &str = "Ihub-Original-Msg-Id";
pub const DELIVERIES: &str = "Ihub-Deliveries";
pub const ERROR: &str = "Ihub-Error";
pub const FAILED_AT: &str = "Ihub-Failed-At";

/// On a replayed message: the DLQ sequence it came from.
pub const REPLAYED_FROM: &str = "Ihub-Replayed-From";

/// Headers the DLQ adds, which a replay removes again.
pub const DLQ_ONLY: [&str; 8] = [
    DLQ_CONSUMER,
    ORIGINAL_SUBJECT,
    ORIGINAL_STREAM,
    ORIGINAL_SEQ,
    ORIGINAL_MSG_ID,
    DELIVERIES,
    ERROR,
    FAILED_AT,
];

// On parked messages (the `PARKED` stream): who parked it, for which key, why and when; where it
// came from is in the `ORIGINAL_*` headers above.
pub const PARKED_BY: &str = "Ihub-Parked-By";
pub const PARK_KEY: &str = "Ihub-Park-Key";
pub const PARK_REASON: &str = "Ihub-Park-Reason";
pub const PARKED_AT: &str = "Ihub-Parked-At";

/// On a released message: the `PARKED` sequence it came from.
pub const RELEASED_FROM: &str = "Ihub-Released-From";

/// Headers parking adds, which a release removes again.
pub const PARK_ONLY: [&str; 8] = [
    PARKED_BY,
    PARK_KEY,
    PARK_REASON,
    PARKED_AT,
    ORIGINAL_SUBJECT,
    ORIGINAL_STREAM,
    ORIGINAL_SEQ,
    ORIGINAL_MSG_ID,
];
