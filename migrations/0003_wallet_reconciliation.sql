-- Reconciliation's read model (src/integrations/wallet/reconciliation): what each partner
-- lists, mirrored incrementally, one row per transaction id with both sides and how they
-- compare. A cache of the partners' lists, not state of record: emptying these tables costs one
-- full re-read on the next report.

CREATE TABLE wallet_reconciliation (
    -- Byte order ("C"), the order the report is sorted in whatever the database's locale.
    transaction_id          text COLLATE "C" PRIMARY KEY,
    -- The RGS's latest webhook about the transaction (all NULL: the RGS lists none).
    rgs_kind                text,
    rgs_status              text,
    rgs_amount_minor        bigint,
    rgs_currency            text,
    -- The first booking the operator lists for it (all NULL: none); the amount is NULL when
    -- the operator's decimal does not parse in its currency.
    operator_transaction_id text,
    operator_operation      text,
    operator_amount_minor   bigint,
    operator_currency       text,
    -- match, missing_at_operator, missing_at_rgs, amount_mismatch, type_mismatch,
    -- booked_but_not_completed; 'pending' only inside a refresh that re-reads a partner.
    result                  text NOT NULL
);
-- X-Mismatch-Count reads this, and a refresh finds its pending rows with it.
CREATE INDEX wallet_reconciliation_mismatches ON wallet_reconciliation (result, transaction_id)
    WHERE result <> 'match';

-- Where each partner's list was read up to: its opaque cursor (NULL: from the start).
CREATE TABLE wallet_reconciliation_cursors (
    partner      text PRIMARY KEY CHECK (partner IN ('rgs', 'operator')),
    cursor       text,
    entries      bigint NOT NULL DEFAULT 0,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);
