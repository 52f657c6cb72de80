-- The ledger in PostgreSQL: accounts, the entries of every (transaction_id, operation),
-- and ledger_execute(), the rules of server/ledger.py: decide() as one function call.
--
-- The constraints are the database's own guard, whatever the code above it does:
-- one entry per (transaction_id, operation), balances within 0 .. 2^53-1,
-- positive amounts, and an entry either took a decision (outcome and balance)
-- or was refused (rejection), never both.
--
-- "C" collation: ids compare and sort by code point, as Python's str does.

-- The ledger's identity, made once when the store is created: a client that
-- sees it change knows it is talking to a ledger that forgot.
CREATE TABLE ledger_identity (
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    ledger_id text NOT NULL
);

CREATE TABLE accounts (
    user_id text COLLATE "C" PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance BETWEEN 0 AND 9007199254740991)
);

-- Each account's balance when it was opened: check_invariants() replays the
-- entries on top of these.
CREATE TABLE opening_balances (
    user_id text COLLATE "C" PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance BETWEEN 0 AND 9007199254740991)
);

-- No foreign key to accounts: a request for an unknown user is recorded too.
CREATE TABLE entries (
    sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id text COLLATE "C" NOT NULL,
    operation text NOT NULL CHECK (operation IN ('debit', 'credit', 'compensate_debit', 'compensate_credit')),
    user_id text COLLATE "C" NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    outcome text CHECK (outcome IN ('applied', 'reversed', 'voided')),
    balance bigint CHECK (balance BETWEEN 0 AND 9007199254740991),
    rejection text CHECK (rejection IN (
        'unknown_user', 'insufficient_funds', 'balance_limit_exceeded', 'transaction_compensated', 'transfer_completed'
    )),
    UNIQUE (transaction_id, operation),
    CHECK ((outcome IS NULL) <> (rejection IS NULL)),
    CHECK ((outcome IS NULL) = (balance IS NULL))
);

\ir functions/ledger_execute.sql
