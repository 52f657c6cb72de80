-- Accounts opened on a running ledger by an operator (POST /accounts), one
-- row per transaction id: the audit record of who brought how much money in,
-- and why, and the answer every repeat of the request replays. A refused
-- opening (the account exists, or the balance is over the limit) is recorded
-- too. The money itself is the account's row in opening_balances, written in
-- the same transaction, so every balance check counts it as brought in.
CREATE TABLE account_openings (
    transaction_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    opening_balance INTEGER NOT NULL CHECK (opening_balance >= 0),
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    rejection TEXT CHECK (rejection IN ('account_exists', 'balance_limit_exceeded'))
) STRICT;

-- An audit record is kept for good.
CREATE TRIGGER account_openings_never_change BEFORE UPDATE ON account_openings
BEGIN
    SELECT RAISE(ABORT, 'account_openings is append-only');
END;

CREATE TRIGGER account_openings_never_deleted BEFORE DELETE ON account_openings
BEGIN
    SELECT RAISE(ABORT, 'account_openings is append-only');
END;
