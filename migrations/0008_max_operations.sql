-- MAX adapters: the audit log of every partner call, the writes MAX asked for, and the
-- conversations MAX registered (who is told when a transaction changes).

-- Every adapter call, success or failure (secrets redacted before they get here).
CREATE TABLE integration_log (
    id               bigserial PRIMARY KEY,
    adapter          text NOT NULL,
    operation        text NOT NULL,
    attempt          integer NOT NULL,
    -- NULL: no HTTP answer (timeout, connection refused, no token).
    status_code      integer,
    duration_ms      bigint NOT NULL,
    error            text,
    conversation_id  text,
    trace_id         text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integration_log_by_adapter ON integration_log (adapter, created_at);
CREATE INDEX integration_log_by_conversation ON integration_log (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- A write MAX asked for (`POST /max/...`): pending until its adapter call ends, then
-- succeeded, refused (the partner's 4xx) or failed (dead-lettered).
CREATE TABLE max_operations (
    id               uuid PRIMARY KEY,
    operation        text NOT NULL,
    adapter          text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'succeeded', 'refused', 'failed')),
    -- What MAX is answered: status and body.
    status_code      integer,
    answer           jsonb,
    error            text,
    conversation_id  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- `PUT /max/conversations/{id}`: its agent, and the metadata that names what it is about.
CREATE TABLE max_conversations (
    id           text PRIMARY KEY,
    assigned_to  text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX max_conversations_by_transaction ON max_conversations ((metadata ->> 'transaction_id'));
