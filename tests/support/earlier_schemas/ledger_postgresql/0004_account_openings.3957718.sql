-- Accounts opened on a running ledger by an operator (POST /accounts), one
-- row per transaction id: the audit record of who brought how much money in,
-- and why, and the answer every repeat of the request replays. A refused
-- opening (the account exists, or the balance is over the limit) is recorded
-- too. The money itself is the account's row in opening_balances, written in
-- the same transaction, so every balance check counts it as brought in.

CREATE TABLE account_openings (
    transaction_id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    opening_balance bigint NOT NULL CHECK (opening_balance >= 0),
    operator text NOT NULL,
    reason text NOT NULL,
    recorded_at text NOT NULL,
    rejection text CHECK (rejection IN ('account_exists', 'balance_limit_exceeded'))
);

-- An audit record is kept for good.
CREATE FUNCTION account_openings_refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'account_openings is append-only';
END;
$$;

CREATE TRIGGER account_openings_never_change
    BEFORE UPDATE OR DELETE ON account_openings
    FOR EACH ROW EXECUTE FUNCTION account_openings_refuse_change();

CREATE TRIGGER account_openings_never_truncated
    BEFORE TRUNCATE ON account_openings
    FOR EACH STATEMENT EXECUTE FUNCTION account_openings_refuse_change();
