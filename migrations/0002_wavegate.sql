-- WaveGate (seed 3): OTA partner orders → ticketing → partner callback.

-- Partners, seeded from PARTNERS_JSON by `ihub setup`. Tokens are kept only as
-- HMAC-SHA256(APP_HMAC_SECRET, token), hex.
CREATE TABLE partners (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    token_hash      text NOT NULL,
    allowlist_cidrs text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                uuid PRIMARY KEY,
    partner_id        text NOT NULL REFERENCES partners (id),
    external_order_id text NOT NULL,
    callback_url      text NOT NULL,
    currency          char(3) NOT NULL,
    total_minor       bigint NOT NULL CHECK (total_minor >= 0),
    buyer             jsonb,
    raw_payload       jsonb NOT NULL,
    trace_id          uuid NOT NULL,
    pipeline_status   text NOT NULL DEFAULT 'accepted'
                      CHECK (pipeline_status IN ('accepted', 'ticketing_processing', 'ticketed',
                          'ota_callback_pending', 'ota_callback_delivered', 'ticketing_blocked',
                          'ota_callback_blocked')),
    blocked_reason    text,
    blocked_at        timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, external_order_id)
);
CREATE INDEX orders_partner_recent ON orders (partner_id, id DESC);
CREATE INDEX orders_status ON orders (pipeline_status, updated_at);

CREATE TABLE order_items (
    order_id         uuid NOT NULL REFERENCES orders (id),
    line_no          integer NOT NULL,
    sku              text NOT NULL,
    qty              integer NOT NULL CHECK (qty >= 1),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    currency         char(3) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- One job per order and delivery target; its attempts are in delivery_attempts
-- (target 'ticketing' or 'ota_callback', subject_id = the order id).
CREATE TABLE order_jobs (
    order_id         uuid NOT NULL REFERENCES orders (id),
    kind             text NOT NULL CHECK (kind IN ('ticketing', 'ota_callback')),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'succeeded', 'blocked')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, kind)
);

-- What ticketing issued.
CREATE TABLE tickets (
    code               text PRIMARY KEY,
    order_id           uuid NOT NULL REFERENCES orders (id),
    sku                text NOT NULL,
    ticketing_order_id text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_order ON tickets (order_id);

-- Which Idempotency-Key created which order (the key itself is enforced in the NATS KV bucket).
CREATE TABLE idempotency_keys (
    partner_id      text NOT NULL,
    idempotency_key text NOT NULL,
    order_id        uuid NOT NULL REFERENCES orders (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, idempotency_key)
);

-- Refused calls: unknown partner or token, source IP not allowlisted, rate limited.
CREATE TABLE auth_events (
    id          uuid PRIMARY KEY,
    partner_id  text,
    reason      text NOT NULL,
    ip          text NOT NULL,
    user_agent  text,
    method      text NOT NULL,
    path        text NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX auth_events_recent ON auth_events (occurred_at DESC);
