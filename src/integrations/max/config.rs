//! MAX's partners' settings and secrets (the adapters that use them come next).

use crate::config::SecretVar;

/// The ticketing system's API key (`X-API-Key`).
pub const TICKETING_API_KEY: SecretVar = SecretVar {
    name: "MAX_TICKETING_API_KEY",
    demo: "dev-max-ticketing-key",
};

/// The transaction status system's OAuth2 client credentials.
pub const TRANSACTIONS_CLIENT_ID: SecretVar = SecretVar {
    name: "MAX_TRANSACTIONS_CLIENT_ID",
    demo: "dev-max-transactions-client",
};
pub const TRANSACTIONS_CLIENT_SECRET: SecretVar = SecretVar {
    name: "MAX_TRANSACTIONS_CLIENT_SECRET",
    demo: "dev-max-transactions-secret",
};

/// Signs the supervisor notices (`X-Supervisor-Signature: <hex HMAC-SHA256(secret, body)>`).
pub const SUPERVISOR_SECRET: SecretVar = SecretVar {
    name: "SUPERVISOR_WEBHOOK_SECRET",
    demo: "dev-supervisor-secret",
};

/// The sales system's OAuth2 client credentials and the key of its `X-HMAC-Signature`.
pub const SALES_CLIENT_ID: SecretVar = SecretVar {
    name: "MAX_SALES_CLIENT_ID",
    demo: "dev-max-sales-client",
};
pub const SALES_CLIENT_SECRET: SecretVar = SecretVar {
    name: "MAX_SALES_CLIENT_SECRET",
    demo: "dev-max-sales-secret",
};
pub const SALES_HMAC_SECRET: SecretVar = SecretVar {
    name: "MAX_SALES_HMAC_SECRET",
    demo: "dev-max-sales-hmac",
};
