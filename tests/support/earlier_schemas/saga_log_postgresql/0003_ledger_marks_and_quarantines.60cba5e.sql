-- The highest position the log has seen from each service's ledger, and the
-- services quarantined because their ledger went back in time (see
-- saga/ledgers.py). A lifted quarantine stays as the record of the
-- operator's decision.

CREATE TABLE saga_ledger_marks (
    service text PRIMARY KEY,
    ledger_id text,
    position bigint NOT NULL,
    generation integer NOT NULL DEFAULT 0
);

CREATE TABLE saga_quarantines (
    seq bigserial PRIMARY KEY,
    service text NOT NULL,
    reason text NOT NULL,
    transaction_id text,
    at_ms bigint NOT NULL,
    lifted_at_ms bigint,
    lifted_because text
);

CREATE UNIQUE INDEX saga_one_quarantine_per_service ON saga_quarantines (service) WHERE lifted_at_ms IS NULL;
