-- ledger_execute_group(): several ledger operations in one call, one transaction and one commit.
--
-- The operations are the elements of the arrays at the same index, decided in
-- that order by ledger_execute_with_position(), so each answers exactly what
-- it would answer alone, in that order: a second operation under the same
-- transaction id sees the first one's entry. One row comes back per
-- operation, in order, with its index as ordinal.
--
-- Every lock is taken before the first decision, in the order every writer
-- of the ledger takes them: the id locks (ledger_execute's form), ascending
-- by key, then the account rows, ascending by user_id. ledger_execute takes
-- the same locks again, which a transaction already holding them passes
-- through. A transaction that waits for an id lock holds no row lock yet, and
-- each kind is taken in one order, so no two transactions can wait for each
-- other in a cycle, whatever their groups hold.
--
-- Each operation runs in a block of its own (a subtransaction): one that
-- raises rolls back alone and comes back with its SQLSTATE and message in
-- error_state and error_message; the others still commit. A statement
-- timeout or a cancel is no error a block can catch: it ends the whole call,
-- and nothing of the group is written.
CREATE OR REPLACE FUNCTION ledger_execute_group(
    p_operations text[],
    p_transaction_ids text[],
    p_user_ids text[],
    p_amounts bigint[],
    p_apply_new boolean[],
    p_max_balance bigint
)
RETURNS TABLE (
    ordinal integer,
    sequence bigint,
    operation text,
    user_id text,
    amount bigint,
    outcome text,
    balance bigint,
    rejection text,
    replayed boolean,
    not_applied boolean,
    key_reused boolean,
    ledger_position bigint,
    error_state text,
    error_message text
)
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    id_lock integer;
BEGIN
    FOR id_lock IN SELECT DISTINCT hashtext(id) FROM unnest(p_transaction_ids) AS id ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1, id_lock);
    END LOOP;
    PERFORM 1 FROM accounts a WHERE a.user_id = ANY (p_user_ids) ORDER BY a.user_id FOR UPDATE;

    FOR position_in_group IN 1 .. coalesce(array_length(p_operations, 1), 0) LOOP
        ordinal := position_in_group;
        error_state := NULL;
        error_message := NULL;
        BEGIN
            SELECT *
            INTO sequence, operation, user_id, amount, outcome, balance, rejection, replayed, not_applied, key_reused,
                ledger_position
            FROM ledger_execute_with_position(
                p_operations[position_in_group],
                p_transaction_ids[position_in_group],
                p_user_ids[position_in_group],
                p_amounts[position_in_group],
                p_apply_new[position_in_group],
                p_max_balance
            );
        EXCEPTION WHEN OTHERS THEN
            sequence := NULL;
            operation := NULL;
            user_id := NULL;
            amount := NULL;
            outcome := NULL;
            balance := NULL;
            rejection := NULL;
            replayed := NULL;
            not_applied := NULL;
            key_reused := NULL;
            ledger_position := NULL;
            error_state := SQLSTATE;
            error_message := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END;
$$;
