-- The ledger's position, answered in the Ledger-Position header: a number that only grows.
--
-- It is the highest sequence of a recorded entry, 0 before the first. Read in
-- a statement of its own after the request's writes, it counts every entry
-- committed before the request arrived, so it is at least every position any
-- replica answered before. Entries are never deleted: only a database that
-- went back in time answers less (pg_restore of an older dump, a point-in-time
-- recovery, a failover to a replica that missed commits), and that is what a
-- client comparing it with the highest it saw looks for. The sequence's own
-- last_value would not do: it is logged up to 32 values ahead, so a database
-- that lost fewer entries than that could answer as much as before.
--
-- ledger_execute() (0002) keeps the rules and is not replaced here; the store
-- calls it through ledger_execute_with_position(), still one call per request.

CREATE FUNCTION current_ledger_position() RETURNS bigint
LANGUAGE sql
VOLATILE
AS $$
    SELECT coalesce(max(sequence), 0) FROM entries
$$;

-- ledger_execute(), and the position read after its writes, in the same transaction.
CREATE FUNCTION ledger_execute_with_position(
    p_operation text,
    p_transaction_id text,
    p_user_id text,
    p_amount bigint,
    p_apply_new boolean,
    p_max_balance bigint,
    OUT sequence bigint,
    OUT operation text,
    OUT user_id text,
    OUT amount bigint,
    OUT outcome text,
    OUT balance bigint,
    OUT rejection text,
    OUT replayed boolean,
    OUT not_applied boolean,
    OUT key_reused boolean,
    OUT ledger_position bigint
)
LANGUAGE plpgsql
VOLATILE
AS $$
BEGIN
    SELECT * INTO sequence, operation, user_id, amount, outcome, balance, rejection, replayed, not_applied, key_reused
    FROM ledger_execute(p_operation, p_transaction_id, p_user_id, p_amount, p_apply_new, p_max_balance);
    -- A statement of its own, after the one that wrote: the position counts this request's entry.
    ledger_position := current_ledger_position();
END;
$$;
