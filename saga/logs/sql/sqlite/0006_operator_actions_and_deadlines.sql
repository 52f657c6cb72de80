-- Each saga's deadline (no new forward request after it, see saga/workflow.py)
-- and the stable code of why it ended where it did; the indexes behind the
-- operator's overview and lookups by account; and a history that nothing
-- rewrites: an operator's action (kind 'action') is evidence for good, like
-- every other event.
ALTER TABLE sagas ADD COLUMN deadline_ms INTEGER;
ALTER TABLE sagas ADD COLUMN code TEXT;

CREATE TRIGGER events_are_never_updated BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the saga log''s events are append-only: no event is ever updated'); END;
CREATE TRIGGER events_are_never_deleted BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the saga log''s events are append-only: no event is ever deleted'); END;

-- A partial index holds only the rows its read looks for, and SQLite uses it
-- only when the read repeats its condition word for word: the state list is
-- saga/logs/sqlite.py's _UNFINISHED, and a new terminal state needs a
-- migration that makes this index again.
CREATE INDEX sagas_with_a_deadline ON sagas (deadline_ms)
    WHERE deadline_ms IS NOT NULL
      AND state NOT IN ('CANCELLED', 'COMPENSATED', 'COMPLETED', 'FAILED', 'NEEDS_ATTENTION', 'RESOLVED');
CREATE INDEX sagas_completed ON sagas (updated_at_ms) WHERE state = 'COMPLETED';
CREATE INDEX sagas_by_source_user ON sagas (source_user);
CREATE INDEX sagas_by_target_user ON sagas (target_user);
CREATE INDEX events_of_operators ON events (step) WHERE kind = 'action';
