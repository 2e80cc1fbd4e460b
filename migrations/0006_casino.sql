-- Casino seamless wallet (src/integrations/casino). Money is integer minor units.

-- One balance per player and currency; never negative.
CREATE TABLE casino_wallets (
    user_id     text NOT NULL,
    currency    text NOT NULL,
    balance     bigint NOT NULL CHECK (balance >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, currency)
);

-- Game sessions the casino opened (launchGame).
CREATE TABLE casino_sessions (
    session_id  text PRIMARY KEY,
    user_id     text NOT NULL,
    game_id     text NOT NULL,
    currency    text NOT NULL,
    launch_url  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The ledger, the commit point: every balance change, signed (a debit is negative), with the
-- balance it left. The balance of a wallet is the sum of its entries.
CREATE TABLE casino_ledger (
    id                       bigserial PRIMARY KEY,
    user_id                  text NOT NULL,
    currency                 text NOT NULL,
    kind                     text NOT NULL CHECK (kind IN ('seed', 'debit', 'credit', 'rollback')),
    amount                   bigint NOT NULL,
    balance_after            bigint NOT NULL CHECK (balance_after >= 0),
    -- The hub's id of the entry (the answer's `transactionId`).
    transaction_id           uuid NOT NULL UNIQUE,
    external_transaction_id  text UNIQUE,
    original_transaction_id  text,
    round_id                 text,
    game_id                  text,
    session_id               text,
    created_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX casino_ledger_wallet ON casino_ledger (user_id, currency, id);
-- A bet is refunded once.
CREATE UNIQUE INDEX casino_ledger_one_rollback ON casino_ledger (original_transaction_id)
    WHERE kind = 'rollback';

-- Every money call's answer by its externalTransactionId, exactly as sent (a repeat gets the
-- same bytes; the same id with another body is a conflict).
CREATE TABLE casino_requests (
    external_transaction_id  text PRIMARY KEY,
    kind                     text NOT NULL,
    fingerprint              text NOT NULL,
    status                   smallint NOT NULL,
    body                     text NOT NULL,
    created_at               timestamptz NOT NULL DEFAULT now()
);

-- Rollbacks that came before their debit: that debit is refused when it arrives.
CREATE TABLE casino_tombstones (
    external_transaction_id  text PRIMARY KEY,
    rollback_transaction_id  text NOT NULL,
    user_id                  text NOT NULL,
    created_at               timestamptz NOT NULL DEFAULT now()
);

-- Ledger entries not yet published to JetStream (written in the entry's transaction; the
-- relay publishes and deletes them).
CREATE TABLE casino_outbox (
    ledger_id   bigint PRIMARY KEY REFERENCES casino_ledger (id),
    subject     text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
