-- The highest position the log has seen from each service's ledger, and the
-- services quarantined because their ledger went back in time (see
-- saga/ledgers.py). A lifted quarantine stays as the record of the
-- operator's decision.
CREATE TABLE ledger_marks (
    service TEXT PRIMARY KEY,  -- its name, or its URLs (see AccountRef.service_key)
    ledger_id TEXT,
    position INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE quarantines (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    reason TEXT NOT NULL,
    transaction_id TEXT,
    at_ms INTEGER NOT NULL,
    lifted_at_ms INTEGER,
    lifted_because TEXT
);
CREATE UNIQUE INDEX one_quarantine_per_service ON quarantines (service) WHERE lifted_at_ms IS NULL;
