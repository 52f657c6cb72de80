-- ledger_execute(), and the position read after its writes, in the same transaction.
CREATE OR REPLACE FUNCTION ledger_execute_with_position(
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
