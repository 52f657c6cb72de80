-- compensate_debit refused for want of room is answered, not recorded.
--
-- Until this version, a reversal of a debit that would take the balance above
-- the limit was recorded as balance_limit_exceeded and replayed for ever, even
-- once the account had room again: the debited money never came back. It is
-- now refused with reversal_exceeds_balance_limit and nothing is written, so
-- the same request, retried once there is room, gives the money back. The
-- entries table needs no change, since the new code is never stored; entries
-- that version 1 already recorded as balance_limit_exceeded are left as they
-- are (an operator reverses those by hand).
--
-- And compensate_debit with no applied debit now voids it whatever else this
-- service holds under the id. Version 1 answered transfer_completed when a
-- credit stood here, recorded that refusal, and then refused the late debit as
-- transaction_compensated: the credit kept money nobody had paid. Only a
-- debit that landed beside a standing credit is refused transfer_completed now.
--
-- ledger_execute() is the one of version 1 with those changes; see server/ledger.py: decide().

-- One ledger operation, in the caller's transaction (one statement: its own).
--
-- The returned row is the entry to answer with, plus three flags:
--   replayed     the entry was recorded before, with the same body: replay it;
--   not_applied  the request is new and p_apply_new is false: nothing was decided or written;
--   key_reused   the id was used with another body: the row is the recorded
--                entry it clashes with (for a compensation, the forward entry).
-- A rejection that holds only for now (reversal_exceeds_balance_limit) is
-- returned but not inserted, with sequence 0: it has no place in the record.
CREATE OR REPLACE FUNCTION ledger_execute(
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
    OUT key_reused boolean
)
LANGUAGE plpgsql
VOLATILE
AS $$
DECLARE
    found_entry entries%ROWTYPE;
    own entries%ROWTYPE;
    debit entries%ROWTYPE;
    credit entries%ROWTYPE;
    undo_debit entries%ROWTYPE;
    undo_credit entries%ROWTYPE;
    forward_entry entries%ROWTYPE;
    current_balance bigint;
    new_outcome text;
    new_balance bigint;
    new_rejection text;
    new_amount bigint := p_amount;
BEGIN
    replayed := false;
    not_applied := false;
    key_reused := false;

    -- Every operation of one transaction id, on any account, waits here for
    -- the one before it to commit. Key space 1 of the two-int form: the
    -- migration lock uses the one-bigint form, a separate space.
    PERFORM pg_advisory_xact_lock(1, hashtext(p_transaction_id));

    FOR found_entry IN SELECT * FROM entries e WHERE e.transaction_id = p_transaction_id LOOP
        CASE found_entry.operation
            WHEN 'debit' THEN debit := found_entry;
            WHEN 'credit' THEN credit := found_entry;
            WHEN 'compensate_debit' THEN undo_debit := found_entry;
            WHEN 'compensate_credit' THEN undo_credit := found_entry;
        END CASE;
        IF found_entry.operation = p_operation THEN
            own := found_entry;
        END IF;
    END LOOP;

    IF own.sequence IS NOT NULL THEN
        sequence := own.sequence;
        operation := own.operation;
        user_id := own.user_id;
        amount := own.amount;
        outcome := own.outcome;
        balance := own.balance;
        rejection := own.rejection;
        IF own.user_id <> p_user_id OR own.amount <> p_amount THEN
            key_reused := true;
        ELSE
            replayed := true;
        END IF;
        RETURN;
    END IF;

    IF NOT p_apply_new THEN
        not_applied := true;
        RETURN;
    END IF;

    -- The applied forward entry a compensation would reverse; one with
    -- another body means the id was reused.
    IF p_operation = 'compensate_debit' AND debit.outcome = 'applied' THEN
        forward_entry := debit;
    ELSIF p_operation = 'compensate_credit' AND credit.outcome = 'applied' THEN
        forward_entry := credit;
    END IF;
    IF forward_entry.sequence IS NOT NULL AND (forward_entry.user_id <> p_user_id OR forward_entry.amount <> p_amount) THEN
        sequence := forward_entry.sequence;
        operation := forward_entry.operation;
        user_id := forward_entry.user_id;
        amount := forward_entry.amount;
        outcome := forward_entry.outcome;
        balance := forward_entry.balance;
        rejection := forward_entry.rejection;
        key_reused := true;
        RETURN;
    END IF;

    SELECT a.balance INTO current_balance FROM accounts a WHERE a.user_id = p_user_id FOR UPDATE;

    IF current_balance IS NULL THEN
        new_rejection := 'unknown_user';
    ELSIF p_operation = 'debit' THEN
        IF undo_debit.sequence IS NOT NULL THEN
            -- A debit that arrives after its own compensation must never land.
            new_rejection := 'transaction_compensated';
        ELSIF current_balance < p_amount THEN
            new_rejection := 'insufficient_funds';
        ELSE
            new_outcome := 'applied';
            new_balance := current_balance - p_amount;
        END IF;
    ELSIF p_operation = 'credit' THEN
        IF undo_credit.sequence IS NOT NULL THEN
            new_rejection := 'transaction_compensated';
        ELSIF current_balance + p_amount > p_max_balance THEN
            new_rejection := 'balance_limit_exceeded';
        ELSE
            new_outcome := 'applied';
            new_balance := current_balance + p_amount;
        END IF;
    ELSIF p_operation = 'compensate_debit' THEN
        IF forward_entry.sequence IS NULL THEN
            -- Nothing was taken here, so nothing is given back; the void
            -- keeps a late debit out.
            new_outcome := 'voided';
            new_balance := current_balance;
        ELSIF credit.outcome = 'applied' AND (undo_credit.sequence IS NULL OR undo_credit.outcome IS DISTINCT FROM 'reversed') THEN
            -- The debit and the credit both landed here: undoing the debit
            -- alone would create money.
            new_rejection := 'transfer_completed';
        ELSIF current_balance + forward_entry.amount > p_max_balance THEN
            -- Credits since the debit filled the account: the reversal waits
            -- for room. Not recorded, since a recorded refusal would be
            -- replayed even once there is room.
            new_rejection := 'reversal_exceeds_balance_limit';
        ELSE
            -- The recorded debit's amount, never the request's.
            new_outcome := 'reversed';
            new_amount := forward_entry.amount;
            new_balance := current_balance + forward_entry.amount;
        END IF;
    ELSIF p_operation = 'compensate_credit' THEN
        IF undo_debit.rejection = 'transfer_completed' THEN
            -- This service has said the transfer completed, so the debit
            -- stands: reversing the credit would destroy the money it took.
            new_rejection := 'transfer_completed';
        ELSIF forward_entry.sequence IS NULL THEN
            new_outcome := 'voided';
            new_balance := current_balance;
        ELSIF current_balance < forward_entry.amount THEN
            -- The credited money has been spent: the credit stands.
            new_rejection := 'insufficient_funds';
        ELSE
            new_outcome := 'reversed';
            new_amount := forward_entry.amount;
            new_balance := current_balance - forward_entry.amount;
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown operation %', p_operation;
    END IF;

    IF new_rejection = 'reversal_exceeds_balance_limit' THEN
        sequence := 0;
    ELSE
        INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance, rejection)
        VALUES (p_transaction_id, p_operation, p_user_id, new_amount, new_outcome, new_balance, new_rejection)
        RETURNING entries.sequence INTO sequence;
    END IF;
    IF new_outcome IN ('applied', 'reversed') THEN
        UPDATE accounts a SET balance = new_balance WHERE a.user_id = p_user_id;
    END IF;

    operation := p_operation;
    user_id := p_user_id;
    amount := new_amount;
    outcome := new_outcome;
    balance := new_balance;
    rejection := new_rejection;
END;
$$;
