-- The shared saga log: one row per saga with its lease, and its history of events.
-- Money is BIGINT minor units. state is free text, read back through SagaState,
-- so that a new state needs no change here.

CREATE TABLE saga_sagas (
    position bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the order of creation
    transaction_id text PRIMARY KEY,
    source_urls text NOT NULL,  -- the service's URLs, comma-separated, as on the command line
    source_user text NOT NULL,
    target_urls text NOT NULL,
    target_user text NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    state text NOT NULL,
    fence_credit boolean NOT NULL DEFAULT false,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    -- The lease: who drives the saga, under which epoch, until when (ms, claimant's clock).
    owner text,
    epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    lease_expires_at_ms bigint NOT NULL DEFAULT 0,
    idempotency_key text UNIQUE
);

CREATE INDEX saga_sagas_by_state ON saga_sagas (state);
CREATE INDEX saga_sagas_claimable ON saga_sagas (position)
    WHERE state NOT IN ('COMPENSATED', 'COMPLETED', 'FAILED', 'NEEDS_ATTENTION');

CREATE TABLE saga_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id text NOT NULL REFERENCES saga_sagas (transaction_id),
    at_ms bigint NOT NULL,
    kind text NOT NULL,  -- state, attempt or claim
    state text,
    step text,
    attempt integer,
    status integer,
    code text,
    latency_us bigint,
    detail text,
    url text,
    -- Who committed the event, under which epoch: the evidence that no stale owner ever wrote.
    owner text,
    epoch bigint,
    ledger_id text
);

CREATE INDEX saga_events_by_saga ON saga_events (transaction_id, seq);
