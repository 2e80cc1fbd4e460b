-- MAX adapters (src/integrations/max): the supervisor's notices. Every failed operation is a
-- row; `notified` says whether it was sent to the supervisor (at most one per adapter per
-- window while an outage lasts) or only recorded.
CREATE TABLE max_supervisor_notices (
    id           bigserial PRIMARY KEY,
    adapter      text NOT NULL,
    operation    text NOT NULL,
    error        text NOT NULL,
    notified     boolean NOT NULL,
    -- The supervisor's answer to a notice sent (NULL: not sent, or no answer).
    status_code  integer,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX max_supervisor_notices_sent ON max_supervisor_notices (adapter, created_at)
    WHERE notified;
