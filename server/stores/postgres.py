"""The PostgreSQL store: the ledger in a PostgreSQL database, shared by any number of replicas.

Each ledger operation is decided by the server-side function
``ledger_execute`` (sql/postgresql/functions/ledger_execute.sql), which holds
the rules of :func:`server.ledger.decide` in PL/pgSQL, and its position read
after it wrote, by ``ledger_execute_with_position`` (0003). Round trips and
commits, not the database's work, set the price, so operations go in groups
(group commit, 0006): the store queues them, and one call of
``ledger_execute_group`` takes every operation queued when it is sent, up to
:data:`GROUP_SIZE`, and decides them in arrival order in one transaction, one
round trip and one commit. An operation that arrives while the group is in
flight waits for the next one. Each operation of a group runs in a
subtransaction of its own, so one that raises rolls back alone, and each
answers exactly what it would have answered in a call of its own at that
point: a second request under the same id in the same group sees the first
one's entry. Without ``group_commit`` each operation is one call and one
transaction, as before 0006.

Concurrency. Every transaction runs at READ COMMITTED, and takes its locks
before it reads anything it decides on, in one order:

1. ``pg_advisory_xact_lock(1, hashtext(transaction_id))``: every operation of
   one transfer waits for the one before it, whichever account it touches, so
   a ``compensate_debit`` and a ``credit`` of the same id on different users
   never decide on a stale view of each other's entries;
2. ``SELECT … FOR UPDATE`` of the account row: every operation on one account
   waits for the one before it, so two debits never both spend the same money.

A group takes the locks of all its operations at once, the id locks in
ascending order of key, then the account rows in ascending order of user_id;
a single operation takes one of each, in that order. Each statement reads a
fresh snapshot at READ COMMITTED, and a transaction's commit is visible
before its locks are released, so what a transaction reads after taking a
lock includes everything its predecessor wrote. No transaction waits for an
id lock while it holds a row lock, and each kind is taken in one order, so no
two can wait for each other in a cycle, however their groups overlap. The
unique key on ``(transaction_id, operation)`` and the balance checks are the
last line of defence: were the locking ever wrong, the database would refuse
the second write rather than record it. All of the serialisation is in the
database, so the argument holds for any number of replicas on one database,
and for replicas of the code before 0006 beside those of today.

Migrations and the opening of accounts run at start under a session advisory
lock (one-bigint form, a key space apart from the id locks), so replicas
starting together on an empty database take turns. A failure of the database
during an operation (see :func:`is_storage_failure`) raises
:class:`~server.stores.StorageUnavailable`, for every operation of its group;
the transaction is then rolled back or committed whole, never half applied,
and a retry of each replays or decides it once.

The ledger's position is the last value of the sequence that numbers the
entries (0 before the first). A sequence is not transactional: it counts
numbers taken by transactions still running or rolled back too, so it is
never below what any replica answered before, and it never goes back, except
when a restore (pg_restore sets it from the dump) takes the whole ledger back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import asyncpg

from server.ledger import (
    COMPENSATE_CREDIT,
    COMPENSATE_DEBIT,
    MAX_BALANCE,
    Account,
    Entry,
    IdempotencyKeyReused,
    InvariantViolation,
    Operation,
    Outcome,
    RejectionCode,
)
from server.openings import Opening, OpeningRequest, decide_opening
from server.shared.database_url import DatabaseUrl
from server.shared.migrations import Schema, postgres_migrated
from server.stores import (
    Execution,
    PositionedExecution,
    StorageUnavailable,
    StoreError,
    check_opening,
    new_ledger_id,
    utc_now,
)

T = TypeVar("T")

#: The session advisory lock held while migrating and opening accounts; the
#: per-id locks use the two-int form, which PostgreSQL keeps in another key space.
SETUP_LOCK_KEY: Final = 0x5A6A_1ED6_E500_0001
#: The ledger's versioned schema, sql/postgresql/NNNN_name.sql: see server/shared/migrations.py.
SCHEMA: Final = Schema(
    folder=Path(__file__).resolve().parent / "sql" / "postgresql",
    version_table="schema_version",
    error=StoreError,
    upgrade_first="upgrade the service before starting it on this database",
    lock_key=SETUP_LOCK_KEY,
)

#: Seconds to wait for a pooled connection, and for one statement, before
#: answering storage_unavailable.
ACQUIRE_TIMEOUT_SECONDS: Final = 10.0
COMMAND_TIMEOUT_SECONDS: Final = 30.0
CONNECT_TIMEOUT_SECONDS: Final = 10.0

#: Connections per store: the groups in flight, and the reads beside them.
POOL_SIZE: Final = 16
#: The most operations one call of ledger_execute_group carries. Each runs in
#: a subtransaction, and PostgreSQL keeps up to 64 of a transaction's in
#: shared memory; past that, every snapshot taken anywhere while the group
#: runs has to look the rest up on disk.
GROUP_SIZE: Final = 64
#: Groups sent at once, each on its own connection. An operation that arrives
#: while they are all in flight waits for the next group.
GROUPS_IN_FLIGHT: Final = 1

#: What the client side raises when the way to the database fails, whatever
#: the database would have said: a connection closed, or left mid-operation by
#: one that was lost ("another operation is in progress", "cannot switch to
#: state"), a socket error, or a pool, connect or statement timeout. A
#: connection the server ended (ConnectionDoesNotExistError, AdminShutdownError)
#: is a PostgresError of its own, classified by its SQLSTATE below.
CONNECTION_FAILURES: Final = (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
#: What a database and its driver raise: each is judged by is_storage_failure.
DATABASE_FAILURES: Final = (asyncpg.PostgresError, *CONNECTION_FAILURES)

#: SQLSTATE classes (the first two characters) of a database that failed or
#: cannot serve now, where a retry later may succeed.
_UNAVAILABLE_CLASSES: Final = frozenset(
    {
        "08",  # connection exception: the connection failed or was never made
        "40",  # transaction rollback: a serialization failure or a deadlock, rolled back whole
        "53",  # insufficient resources: too many connections, a full disk, out of memory
        "57",  # operator intervention: pg_terminate_backend, a shutdown, a restart, a cancelled statement
        "58",  # system error: an I/O error under the database
        "XX",  # internal error: the database itself failed, or found its data corrupt
    }
)
#: SQLSTATEs outside those classes that mean the same.
_UNAVAILABLE_STATES: Final = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby answered, as after a failover
        "55P03",  # lock_not_available: lock_timeout passed
        "3D000",  # invalid_catalog_name: the database is gone (a new connection cannot open it)
        "28000",  # invalid_authorization_specification: a new connection was refused
        "28P01",  # invalid_password: likewise
    }
)

_EXECUTE = "SELECT * FROM ledger_execute_with_position($1, $2, $3, $4, $5, $6)"
_EXECUTE_GROUP = "SELECT * FROM ledger_execute_group($1, $2, $3, $4, $5, $6) ORDER BY ordinal"
_POSITION = "SELECT current_ledger_position() AS ledger_position"
_ENTRY_COLUMNS = "sequence, transaction_id, operation, user_id, amount, outcome, balance, rejection"
# The reads with the position in the same query. The position is read once,
# in a materialized CTE (the function is volatile, so it would otherwise be
# read per row), and the LEFT JOIN gives a row to carry it when nothing matches.
_BALANCE_AT_POSITION = (
    "SELECT (SELECT balance FROM accounts WHERE user_id = $1) AS balance, current_ledger_position() AS ledger_position"
)
_ACCOUNTS_AT_POSITION = """
WITH position AS MATERIALIZED (SELECT current_ledger_position() AS ledger_position)
SELECT position.ledger_position, a.user_id, a.balance, coalesce(o.balance, 0) AS opening_balance
FROM position LEFT JOIN accounts a ON true LEFT JOIN opening_balances o ON o.user_id = a.user_id
ORDER BY a.user_id
"""
_TRAIL_AT_POSITION = f"""
WITH position AS MATERIALIZED (SELECT current_ledger_position() AS ledger_position)
SELECT position.ledger_position, {", ".join(f"e.{column}" for column in _ENTRY_COLUMNS.split(", "))}
FROM position LEFT JOIN entries e ON e.transaction_id = $1
ORDER BY e.sequence
"""


class _Request(NamedTuple):
    """One ledger operation as ledger_execute takes it, the balance limit aside."""

    operation: Operation
    transaction_id: str
    user_id: str
    amount: int
    apply_new: bool


def is_storage_failure(error: BaseException) -> bool:
    """Whether ``error`` means the database could not do its work, so a 503 and a retry later are the answer.

    Yes for every failure of the connection (lost, terminated by
    ``pg_terminate_backend``, closed, busy with an operation a lost
    connection never finished, a socket error, a pool or statement timeout)
    and for a database that reports it cannot serve now (see
    :data:`_UNAVAILABLE_CLASSES`). Each call is one transaction, rolled back
    or committed whole, so nothing was half applied.

    No for a statement the database refused for what it says: a constraint,
    a missing function, bad data. The same request would be refused again, so
    it is a bug or a broken schema, answered 500 ``internal_error`` and
    logged with its traceback.
    """
    if isinstance(error, CONNECTION_FAILURES):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES
    return False


class PostgresStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger_id: str,
        *,
        max_balance: int,
        group_commit: bool = True,
        group_size: int = GROUP_SIZE,
        groups_in_flight: int = GROUPS_IN_FLIGHT,
    ) -> None:
        if not 1 <= group_size <= GROUP_SIZE:
            raise ValueError(f"group_size must be from 1 to {GROUP_SIZE}")
        if groups_in_flight < 1:
            raise ValueError("groups_in_flight must be at least 1")
        self.ledger_id = ledger_id
        self._pool = pool
        self._max_balance = max_balance
        self._group_commit = group_commit
        self._group_size = group_size
        self._groups_in_flight = groups_in_flight
        self._queue: list[tuple[_Request, asyncio.Future[PositionedExecution]]] = []
        self._committers: set[asyncio.Task[None]] = set()
        #: Calls of ledger_execute_group made (or attempted), and the requests they carried.
        self.groups = 0
        self.requests_grouped = 0

    @classmethod
    async def open(
        cls,
        dsn: str,
        accounts: Mapping[str, int],
        *,
        max_balance: int = MAX_BALANCE,
        pool_size: int = POOL_SIZE,
        group_commit: bool = True,
        group_size: int = GROUP_SIZE,
        groups_in_flight: int = GROUPS_IN_FLIGHT,
    ) -> PostgresStore:
        """Connect, migrate, and open the accounts that do not exist yet; StoreError says why not.

        With ``group_commit`` (the default) ledger operations are sent in
        groups of up to ``group_size``, at most ``groups_in_flight`` at once,
        each on a connection of its own; without it, each is a call and a
        transaction of its own.
        """
        where = str(DatabaseUrl("postgresql", dsn=dsn))
        check_opening(accounts, max_balance)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                # Explicit, so a database whose default is stricter does not
                # turn lock waits into serialization failures.
                server_settings={"default_transaction_isolation": "read committed"},
                reset=_keep_session,
            )
        except (*DATABASE_FAILURES, ValueError) as error:
            raise StoreError(f"cannot open the PostgreSQL store at {where}: {_one_line(error)}") from None
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
                ledger_id = await _set_up(connection, accounts, where)
        except StoreError:
            await pool.close()
            raise
        except DATABASE_FAILURES as error:
            await pool.close()
            raise StoreError(f"cannot set up the PostgreSQL store at {where}: {_one_line(error)}") from None
        return cls(
            pool,
            ledger_id,
            max_balance=max_balance,
            group_commit=group_commit,
            group_size=group_size,
            groups_in_flight=groups_in_flight,
        )

    async def execute(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> Execution | None:
        execution, _ = await self.execute_with_position(operation, transaction_id, user_id, amount, apply_new=apply_new)
        return execution

    async def execute_with_position(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> PositionedExecution:
        request = _Request(operation, transaction_id, user_id, amount, apply_new)
        if not self._group_commit:
            row = await self._fetch_row(_EXECUTE, *request, self._max_balance, what=operation)
            if row is None:
                raise StorageUnavailable(f"{operation} {transaction_id}: ledger_execute returned nothing")
            return _positioned_execution(request, row)
        done: asyncio.Future[PositionedExecution] = asyncio.get_running_loop().create_future()
        self._queue.append((request, done))
        if len(self._committers) < self._groups_in_flight:
            self._committers.add(asyncio.create_task(self._commit_queued(), name="postgres-ledger-committer"))
        # Shielded: a request cancelled while its group commits must not tear
        # down the call other requests share; its own outcome is then unknown
        # to its caller, exactly as after a lost response.
        return await asyncio.shield(done)

    async def _commit_queued(self) -> None:
        """Send the queued requests in groups, one group at a time, until none is left."""
        try:
            while self._queue:
                group, self._queue = self._queue[: self._group_size], self._queue[self._group_size :]
                requests = [request for request, _ in group]
                try:
                    outcomes = await self._execute_group(requests)
                except Exception as error:  # whatever it was, every caller of the group is answered with it
                    outcomes = [error for _ in group]
                self.groups += 1
                self.requests_grouped += len(group)
                # Only this loop settles a request's future: execute awaits it
                # through asyncio.shield, so a cancelled caller leaves it pending.
                for (_, done), outcome in zip(group, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)
        finally:
            # Here, not in a done callback: a request queued before the
            # callback ran would find no room for a committer, and wait for ever.
            committer = asyncio.current_task()
            assert committer is not None
            self._committers.discard(committer)

    async def _execute_group(self, requests: list[_Request]) -> list[PositionedExecution | Exception]:
        """One call of ledger_execute_group for ``requests``; one outcome per request, in order.

        A storage failure of the call fails every request with a
        StorageUnavailable of its own: the call is one transaction, so none
        of them was applied, or all that succeeded were, and a retry replays them.
        """
        columns = list(zip(*requests, strict=True))
        what = f"a group of {len(requests)}"
        try:
            rows = await self._fetch(_EXECUTE_GROUP, *map(list, columns), self._max_balance, what=what)
        except StorageUnavailable as unavailable:
            return [_unavailable_in_group(request, unavailable) for request in requests]
        return [_group_outcome(request, row) for request, row in zip(requests, rows, strict=True)]

    async def position(self) -> int:
        row = await self._fetch_row(_POSITION, what="position")
        assert row is not None
        return int(row["ledger_position"])

    async def balance_with_position(self, user_id: str) -> tuple[int | None, int]:
        row = await self._fetch_row(_BALANCE_AT_POSITION, user_id, what="balance")
        assert row is not None
        return (None if row["balance"] is None else int(row["balance"])), int(row["ledger_position"])

    async def accounts_with_position(self) -> tuple[list[Account], int]:
        rows = await self._fetch(_ACCOUNTS_AT_POSITION, what="accounts")
        accounts = [
            Account(row["user_id"], row["balance"], row["opening_balance"])
            for row in rows
            if row["user_id"] is not None
        ]
        return accounts, int(rows[0]["ledger_position"])

    async def trail_with_position(self, transaction_id: str) -> tuple[list[Entry], int]:
        rows = await self._fetch(_TRAIL_AT_POSITION, transaction_id, what="trail")
        entries = [_entry(transaction_id, row) for row in rows if row["sequence"] is not None]
        return entries, int(rows[0]["ledger_position"])

    async def balance(self, user_id: str) -> int | None:
        row = await self._fetch_row("SELECT balance FROM accounts WHERE user_id = $1", user_id, what="balance")
        return None if row is None else int(row["balance"])

    async def accounts(self) -> list[Account]:
        rows = await self._fetch(
            "SELECT a.user_id, a.balance, coalesce(o.balance, 0) AS opening_balance FROM accounts a "
            "LEFT JOIN opening_balances o ON o.user_id = a.user_id ORDER BY a.user_id",
            what="accounts",
        )
        return [Account(row["user_id"], row["balance"], row["opening_balance"]) for row in rows]

    async def trail(self, transaction_id: str) -> list[Entry]:
        rows = await self._fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE transaction_id = $1 ORDER BY sequence",
            transaction_id,
            what="trail",
        )
        return [_entry(transaction_id, row) for row in rows]

    async def check_invariants(self) -> None:
        """Raise InvariantViolation unless every balance is its opening balance plus its entries' effects.

        Also checks that every reversal follows the operation it reverses;
        no negative balance and no entry applied twice are constraints of the
        schema itself.
        """
        drifted = await self._fetch(
            """
            SELECT a.user_id, a.balance, coalesce(o.balance, 0) + coalesce(moved.delta, 0) AS expected
            FROM accounts a
            LEFT JOIN opening_balances o ON o.user_id = a.user_id
            LEFT JOIN (
                SELECT user_id, sum(CASE WHEN operation IN ('credit', 'compensate_debit') THEN amount ELSE -amount END)
                    AS delta
                FROM entries WHERE outcome IN ('applied', 'reversed') GROUP BY user_id
            ) moved ON moved.user_id = a.user_id
            WHERE o.user_id IS NULL OR a.balance <> coalesce(o.balance, 0) + coalesce(moved.delta, 0)
            ORDER BY a.user_id
            """,
            what="check_invariants",
        )
        if drifted:
            row = drifted[0]
            raise InvariantViolation(
                f"balance of {row['user_id']!r} is {row['balance']}, but the entries say {row['expected']}"
            )
        orphans = await self._fetch(
            f"""
            SELECT {", ".join(f"r.{column}" for column in _ENTRY_COLUMNS.split(", "))}
            FROM entries r
            WHERE r.outcome = 'reversed' AND NOT EXISTS (
                SELECT 1 FROM entries f
                WHERE f.transaction_id = r.transaction_id AND f.outcome = 'applied' AND f.sequence < r.sequence
                AND f.operation = CASE r.operation WHEN '{COMPENSATE_DEBIT}' THEN 'debit' ELSE 'credit' END
            )
            AND r.operation IN ('{COMPENSATE_DEBIT}', '{COMPENSATE_CREDIT}')
            """,
            what="check_invariants",
        )
        if orphans:
            raise InvariantViolation(f"{_entry(orphans[0]['transaction_id'], orphans[0])!r} reverses nothing")

    async def open_account(self, request: OpeningRequest) -> tuple[Opening, bool]:
        return await self._on_a_connection(
            lambda connection: _open_account(connection, request, self._max_balance), "open_account"
        )

    async def opening(self, transaction_id: str) -> Opening | None:
        row = await self._fetch_row(_OPENING, transaction_id, what="trail")
        return None if row is None else _opening(row)

    async def close(self) -> None:
        # The groups in flight are answered before their connections close.
        while self._committers:
            await asyncio.gather(*self._committers)
        await self._pool.close()

    async def _fetch_row(self, query: str, *arguments: Any, what: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._on_a_connection(
            lambda connection: connection.fetchrow(query, *arguments), what
        )
        return row

    async def _fetch(self, query: str, *arguments: Any, what: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._on_a_connection(
            lambda connection: connection.fetch(query, *arguments), what
        )
        return rows

    async def _on_a_connection(self, work: Callable[[asyncpg.pool.PoolConnectionProxy], Awaitable[T]], what: str) -> T:
        """``work`` on a pooled connection; StorageUnavailable when the database fails under it."""
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
                try:
                    return await work(connection)
                except Exception as error:
                    if _connection_lost(error):
                        # A lost connection may still look open (its end of
                        # stream not read yet, its protocol stuck
                        # mid-operation), and the pool would lend it again:
                        # it is ended here. Whatever ended it (a restart, a
                        # failover, pg_terminate_backend) has most likely
                        # ended its siblings idle in the pool too, so they are
                        # replaced on their next use rather than each failing
                        # one more request.
                        connection.terminate()
                        await self._pool.expire_connections()
                    raise
        except DATABASE_FAILURES as error:
            if is_storage_failure(error):
                raise StorageUnavailable(f"{what}: {_one_line(error)}") from error
            raise


def _positioned_execution(request: _Request, row: asyncpg.Record) -> PositionedExecution:
    """What one row of ledger_execute_with_position answers: raises IdempotencyKeyReused for a reused id."""
    position = int(row["ledger_position"])
    if row["not_applied"]:
        return None, position
    entry = _entry(request.transaction_id, row)
    if row["key_reused"]:
        raise IdempotencyKeyReused(request.transaction_id, request.operation, entry)
    return (entry, bool(row["replayed"])), position


def _group_outcome(request: _Request, row: asyncpg.Record) -> PositionedExecution | Exception:
    """One request's row of ledger_execute_group, as its caller is answered: an execution or the error to raise.

    An error the operation met in its own block comes back as the error
    PostgreSQL raised, judged as it would have been alone: a storage failure
    is StorageUnavailable, anything else is raised as it is.
    """
    if row["error_state"] is not None:
        error = asyncpg.PostgresError.new({"C": row["error_state"], "M": row["error_message"]})
        if is_storage_failure(error):
            return StorageUnavailable(f"{request.operation} {request.transaction_id}: {_one_line(error)}")
        return error
    try:
        return _positioned_execution(request, row)
    except IdempotencyKeyReused as reused:
        return reused


def _unavailable_in_group(request: _Request, unavailable: StorageUnavailable) -> StorageUnavailable:
    """A StorageUnavailable of its own for each request of a failed group, each raised and logged on its own."""
    failure = StorageUnavailable(f"{request.operation} {request.transaction_id}, {unavailable}")
    failure.__cause__ = unavailable.__cause__
    return failure


def _connection_lost(error: BaseException) -> bool:
    """Whether the connection that raised ``error`` can never be used again.

    Not after a timeout (asyncpg cancels the statement and keeps the
    connection), nor after an error the server reports and survives (a
    deadlock, a full disk): only when the connection itself failed or the
    server ended it.
    """
    if isinstance(error, TimeoutError):
        return False
    if isinstance(error, CONNECTION_FAILURES):
        return True
    state = str(getattr(error, "sqlstate", "") or "") if isinstance(error, asyncpg.PostgresError) else ""
    # 57P01-57P03: admin shutdown (pg_terminate_backend), crash shutdown, cannot connect now.
    return state.startswith("08") or state in {"57P01", "57P02", "57P03"}


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Hand a connection back to the pool as it is.

    asyncpg's default reset sends a query on every release (advisory unlocks,
    RESET ALL, ...): a second round trip per operation, measured at a tenth of
    the service's time. Nothing here changes session state: ledger_execute's
    locks are transaction-scoped, and the one session lock, taken at set-up,
    is released there. An open transaction is still rolled back by asyncpg.
    """


async def _set_up(
    connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, accounts: Mapping[str, int], where: str
) -> str:
    """Migrate, open the accounts that do not exist yet, and return the ledger's id; one replica at a time."""
    async with postgres_migrated(connection, SCHEMA, where):
        users = list(accounts)
        await connection.execute(
            """
            WITH opened AS (
                INSERT INTO accounts (user_id, balance)
                SELECT * FROM unnest($1::text[], $2::bigint[])
                ON CONFLICT (user_id) DO NOTHING
                RETURNING user_id, balance
            )
            INSERT INTO opening_balances (user_id, balance) SELECT user_id, balance FROM opened
            """,
            users,
            [accounts[user_id] for user_id in users],
        )
        await connection.execute(
            "INSERT INTO ledger_identity (singleton, ledger_id) VALUES (1, $1) ON CONFLICT (singleton) DO NOTHING",
            new_ledger_id(),
        )
        ledger_id: str = await connection.fetchval("SELECT ledger_id FROM ledger_identity")
    return ledger_id


_OPENING_COLUMNS: Final = "transaction_id, user_id, opening_balance, operator, reason, recorded_at, rejection"
_OPENING: Final = f"SELECT {_OPENING_COLUMNS} FROM account_openings WHERE transaction_id = $1"


async def _open_account(
    connection: asyncpg.pool.PoolConnectionProxy, request: OpeningRequest, max_balance: int
) -> tuple[Opening, bool]:
    """Decide and record one opening in one transaction.

    The id lock (the form ledger_execute takes) makes a repeat of the same
    opening wait for the first and replay it. Two openings of one user under
    different ids meet at the accounts table's key: the second finds the row
    the first inserted and is refused as account_exists.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(1, hashtext($1))", request.transaction_id)
        recorded = await connection.fetchrow(_OPENING, request.transaction_id)
        exists = await connection.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE user_id = $1)", request.user_id)
        opening, replayed = decide_opening(
            request,
            account_exists=bool(exists),
            recorded=None if recorded is None else _opening(recorded),
            max_balance=max_balance,
            now=utc_now(),
        )
        if replayed:
            return opening, True
        if opening.opened:
            inserted = await connection.fetchval(
                "INSERT INTO accounts (user_id, balance) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING RETURNING 1",
                opening.user_id,
                opening.opening_balance,
            )
            if inserted is None:
                opening = dataclasses.replace(opening, rejection="account_exists")
            else:
                await connection.execute(
                    "INSERT INTO opening_balances (user_id, balance) VALUES ($1, $2)",
                    opening.user_id,
                    opening.opening_balance,
                )
        await connection.execute(
            f"INSERT INTO account_openings ({_OPENING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            opening.transaction_id,
            opening.user_id,
            opening.opening_balance,
            opening.operator,
            opening.reason,
            opening.recorded_at,
            opening.rejection,
        )
        return opening, False


def _opening(row: asyncpg.Record) -> Opening:
    return Opening(
        row["transaction_id"],
        row["user_id"],
        row["opening_balance"],
        row["operator"],
        row["reason"],
        row["recorded_at"],
        row["rejection"],
    )


def _entry(transaction_id: str, row: asyncpg.Record) -> Entry:
    outcome: Outcome | None = row["outcome"]
    rejection: RejectionCode | None = row["rejection"]
    return Entry(
        transaction_id,
        row["operation"],
        row["user_id"],
        row["amount"],
        row["sequence"],
        outcome=outcome,
        balance=row["balance"],
        rejection=rejection,
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
