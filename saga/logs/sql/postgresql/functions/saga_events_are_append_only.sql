-- Refuses every change to a saga's history: see 0004_operator_actions_and_deadlines.sql.
CREATE OR REPLACE FUNCTION saga_events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the saga log''s events are append-only: % of saga_events refused', TG_OP;
END
$$;
