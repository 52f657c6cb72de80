CREATE TABLE IF NOT EXISTS sagas (
    transaction_id TEXT PRIMARY KEY,
    source_urls TEXT NOT NULL,  -- the service's URLs, comma-separated, as on the command line
    source_user TEXT NOT NULL,
    target_urls TEXT NOT NULL,
    target_user TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL,
    fence_credit INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_expires_at_ms INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS sagas_by_state ON sagas (state);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL REFERENCES sagas (transaction_id),
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT,
    step TEXT,
    attempt INTEGER,
    status INTEGER,
    code TEXT,
    latency_us INTEGER,
    detail TEXT,
    url TEXT,
    owner TEXT,
    epoch INTEGER,
    ledger_id TEXT
);
CREATE INDEX IF NOT EXISTS events_by_saga ON events (transaction_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS sagas_by_idempotency_key ON sagas (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
