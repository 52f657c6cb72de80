-- The ledger: one row per account, one row per recorded (transaction_id, operation).
-- STRICT tables refuse a value of the wrong type, so a REAL can never stand in for money.

-- The ledger's identity, made once when the store is created: a client that
-- sees it change knows it is talking to a ledger that forgot.
CREATE TABLE ledger_identity (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    ledger_id TEXT NOT NULL
) STRICT;

CREATE TABLE accounts (
    user_id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance BETWEEN 0 AND 9007199254740991)
) STRICT;

-- The balance each account was opened with: with the entries, enough to recompute every balance.
CREATE TABLE opening_balances (
    user_id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance BETWEEN 0 AND 9007199254740991)
) STRICT;

-- No foreign key to accounts: a request for an unknown user is recorded too, and replayed.
CREATE TABLE entries (
    sequence INTEGER PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('debit', 'credit', 'compensate_debit', 'compensate_credit')),
    user_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    outcome TEXT CHECK (outcome IN ('applied', 'reversed', 'voided')),
    balance INTEGER CHECK (balance BETWEEN 0 AND 9007199254740991),
    rejection TEXT CHECK (
        rejection IN (
            'unknown_user',
            'insufficient_funds',
            'balance_limit_exceeded',
            'transaction_compensated',
            'transfer_completed'
        )
    ),
    UNIQUE (transaction_id, operation),
    -- Either the operation took effect or fenced the id (outcome and balance), or it was refused (rejection).
    CHECK ((outcome IS NULL) <> (rejection IS NULL)),
    CHECK ((outcome IS NULL) = (balance IS NULL))
) STRICT;
