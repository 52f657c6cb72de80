-- Each saga's deadline and the stable code of why it ended where it did; the
-- indexes behind the operator's overview and lookups by account; and a
-- history that nothing rewrites: an operator's action (kind 'action') is
-- evidence for good, like every other event.

ALTER TABLE saga_sagas
    ADD COLUMN deadline_ms bigint,
    ADD COLUMN code text;

-- CANCELLED and RESOLVED are terminal too: a claim never looks at them.
DROP INDEX saga_sagas_claimable;
CREATE INDEX saga_sagas_claimable ON saga_sagas (position)
    WHERE state NOT IN ('CANCELLED', 'COMPENSATED', 'COMPLETED', 'FAILED', 'NEEDS_ATTENTION', 'RESOLVED');

-- The overview's figures, each from the few rows it counts.
CREATE INDEX saga_sagas_with_a_deadline ON saga_sagas (deadline_ms)
    WHERE deadline_ms IS NOT NULL
      AND state NOT IN ('CANCELLED', 'COMPENSATED', 'COMPLETED', 'FAILED', 'NEEDS_ATTENTION', 'RESOLVED');
CREATE INDEX saga_sagas_completed ON saga_sagas (updated_at_ms) WHERE state = 'COMPLETED';

CREATE INDEX saga_sagas_by_source_user ON saga_sagas (source_user);
CREATE INDEX saga_sagas_by_target_user ON saga_sagas (target_user);

CREATE INDEX saga_events_of_operators ON saga_events (step) WHERE kind = 'action';

\ir functions/saga_events_are_append_only.sql

-- Per statement, so that TRUNCATE is refused as well as UPDATE and DELETE.
CREATE TRIGGER saga_events_are_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON saga_events
    FOR EACH STATEMENT EXECUTE FUNCTION saga_events_are_append_only();
