-- The wallet hub (seed 1): RGS debits and credits against the operator wallet.

CREATE TABLE wallet_transactions (
    id                      uuid PRIMARY KEY,
    kind                    text NOT NULL CHECK (kind IN ('debit', 'credit')),
    player_id               text NOT NULL,
    amount_minor            bigint NOT NULL CHECK (amount_minor > 0),
    currency                char(3) NOT NULL,
    round_id                text,
    game_id                 text,
    status                  text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'completed', 'rejected', 'failed')),
    balance_minor           bigint,
    operator_transaction_id text,
    reason                  text,
    trace_id                text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_transactions_player ON wallet_transactions (player_id, created_at DESC);
CREATE INDEX wallet_transactions_open ON wallet_transactions (status) WHERE status <> 'completed';

-- Every call to a partner, for every delivery target: append-only.
CREATE TABLE delivery_attempts (
    id          bigserial PRIMARY KEY,
    target      text NOT NULL,
    subject_id  text NOT NULL,
    attempt     integer NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_attempts_subject ON delivery_attempts (target, subject_id, id);

-- Outcome webhooks to the RGS: one per transaction and status.
CREATE TABLE rgs_webhooks (
    id             uuid PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES wallet_transactions (id),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'delivered', 'dead_lettered')),
    payload        jsonb NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    delivered_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rgs_webhooks_transaction ON rgs_webhooks (transaction_id);

-- Callbacks the operator sent to /webhooks/incoming, verified.
CREATE TABLE operator_callbacks (
    operator_transaction_id text NOT NULL,
    event                   text NOT NULL,
    transaction_id          text NOT NULL,
    payload                 jsonb NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_transaction_id, event)
);
CREATE INDEX operator_callbacks_transaction ON operator_callbacks (transaction_id);
