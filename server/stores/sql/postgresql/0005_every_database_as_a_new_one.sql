-- Databases that earlier releases migrated, brought to what a new database is.
--
-- 0001 gained ledger_identity after the first databases had applied it: those
-- have no table for the ledger's id, and could not be opened.
--
-- 0002 changed ledger_execute() after the first databases had applied it:
-- those still refuse as transfer_completed the compensate_debit of a debit
-- that never landed, when a credit stands under the same id. Today's
-- function goes to every database.

CREATE TABLE IF NOT EXISTS ledger_identity (
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    ledger_id text NOT NULL
);

\ir functions/ledger_execute.sql
