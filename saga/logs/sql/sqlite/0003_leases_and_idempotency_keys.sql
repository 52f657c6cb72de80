-- Leases (owner, epoch, expiry), the idempotency key of a submission, and on
-- each event who committed it under which epoch, and the Ledger-Id answered.
ALTER TABLE sagas ADD COLUMN owner TEXT;
ALTER TABLE sagas ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN lease_expires_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN idempotency_key TEXT;
-- A run of the version that wrote these sagas drove each of them, so the run
-- that claims one next must know that it resumes it (epoch 2), not that it starts it.
UPDATE sagas SET epoch = 1;
ALTER TABLE events ADD COLUMN owner TEXT;
ALTER TABLE events ADD COLUMN epoch INTEGER;
ALTER TABLE events ADD COLUMN ledger_id TEXT;

CREATE UNIQUE INDEX sagas_by_idempotency_key ON sagas (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
