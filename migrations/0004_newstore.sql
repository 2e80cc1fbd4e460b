-- NewStore → Hail: every webhook event and what became of it, and per order what was sent.

CREATE TABLE newstore_orders (
    tenant       text NOT NULL,
    order_id     text NOT NULL,
    -- The order as the latest order.opened / order.completed carried it (minor units).
    payload      jsonb,
    -- The Hail sale: none → sent (commanded) → delivered (Hail answered 2xx).
    sale_status  text NOT NULL DEFAULT 'none' CHECK (sale_status IN ('none', 'sent', 'delivered')),
    void_status  text NOT NULL DEFAULT 'none' CHECK (void_status IN ('none', 'sent', 'delivered')),
    cancelled    boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, order_id)
);

CREATE TABLE newstore_events (
    tenant              text NOT NULL,
    event_id            text NOT NULL,
    name                text NOT NULL,
    order_id            text,
    -- accepted (a Hail transaction is on its way), recorded (handled, nothing to send),
    -- ignored (a name the hub does not act on), cancelled (a sale the order's cancellation
    -- stopped), parked (waiting for its order's sale), delivered, blocked (see last_error).
    status              text NOT NULL CHECK (status IN ('accepted', 'recorded', 'ignored',
                            'cancelled', 'parked', 'delivered', 'blocked')),
    hail_transaction_id text,
    -- What was (or is to be) sent to Hail, and when that was decided.
    hail_transaction    jsonb,
    decided_at          timestamptz,
    -- A return.processed event's return (minor units): later returns of the order prorate
    -- against the earlier ones.
    return_event        jsonb,
    last_error          text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, event_id)
);
CREATE INDEX newstore_events_order ON newstore_events (tenant, order_id, received_at);
