-- Databases that earlier releases migrated, brought to what a new database is:
-- 0001 gained ledger_identity after the first databases had applied it, and
-- those have no table for the ledger's id.
CREATE TABLE IF NOT EXISTS ledger_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    ledger_id TEXT NOT NULL
) STRICT;
