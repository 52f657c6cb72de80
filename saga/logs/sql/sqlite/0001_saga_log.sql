-- The saga log in one SQLite file: one row per saga, and its history of events.
-- Money is INTEGER minor units. state is free text, read back through SagaState,
-- so that a new state needs no change here.
--
-- Logs written before the version table (saga_log_schema) are numbered by the
-- code that opens them (see saga/logs/sqlite.py) and go on from there.

CREATE TABLE sagas (
    transaction_id TEXT PRIMARY KEY,
    source_url TEXT NOT NULL,
    source_user TEXT NOT NULL,
    target_url TEXT NOT NULL,
    target_user TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL,
    fence_credit INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX sagas_by_state ON sagas (state);

CREATE TABLE events (
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
    detail TEXT
);
CREATE INDEX events_by_saga ON events (transaction_id, seq);
