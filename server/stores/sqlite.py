"""The SQLite store: the ledger in one SQLite file, which several processes may share.

Every ledger operation is decided by :func:`server.ledger.decide` inside a
``BEGIN IMMEDIATE`` transaction, which takes the file's write lock before the
first read: no other connection, in this process or another, can write
between the read of the balance and the write of the new one. The file is in
WAL mode with ``synchronous=FULL``, so an answered operation survives a power
cut, and a busy timeout makes a second process wait for the lock rather than fail.

All writes run on one dedicated thread, off the event loop, with group commit:
the thread takes every operation queued at that moment and decides them in
order in one transaction, each inside a savepoint of its own, so one failing
operation rolls back alone while the others still commit with one fsync.
No answer leaves before its commit. Reads run on a second thread with a
connection of their own, so they never wait behind a sync.

The ledger's position is the highest sequence in the entries table: a group
reads it after its last write, inside its transaction, and every request of
the group answers it. A copy of the file made earlier has a lower one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from server.ledger import (
    COMPENSATE_DEBIT,
    CREDIT,
    DEBIT,
    MAX_BALANCE,
    Account,
    Entry,
    InvariantViolation,
    Operation,
    decide,
    replayed,
)
from server.openings import Opening, OpeningRequest, decide_opening
from server.shared.migrations import Schema, apply_sqlite
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

#: How long a connection waits for another one's write lock before the operation fails.
DEFAULT_BUSY_TIMEOUT_SECONDS: Final = 5.0
#: How long a process waits before it retries switching a new file to WAL mode.
_WAL_SWITCH_RETRY_SECONDS: Final = 0.01

#: The ledger's versioned schema, sql/sqlite/NNNN_name.sql: see server/shared/migrations.py.
SCHEMA: Final = Schema(
    folder=Path(__file__).resolve().parent / "sql" / "sqlite",
    version_table="schema_version",
    error=StoreError,
    upgrade_first="upgrade the service before starting it on this database",
)

_ENTRY_COLUMNS: Final = "sequence, transaction_id, operation, user_id, amount, outcome, balance, rejection"
# Entries are never deleted, so the highest sequence only grows; max() of the key is one index lookup.
_POSITION: Final = "SELECT coalesce(max(sequence), 0) FROM entries"

#: Primary result codes (the low byte of an extended code) that mean the file,
#: the disk or another process stood in the way, not that a statement was wrong.
_STORAGE_FAILURE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_PERM,  # the operating system refused access
        sqlite3.SQLITE_BUSY,  # another connection held the lock past the busy timeout
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,  # the file, its folder or its -wal/-shm cannot be written
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,  # disk I/O, fsync, a vanished -wal or -shm
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,  # the disk is full
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,  # a WAL lock race lost too often
        sqlite3.SQLITE_NOLFS,
        sqlite3.SQLITE_NOTADB,  # the file was replaced by something that is not a database
    }
)


@dataclass(frozen=True, slots=True)
class _Request:
    operation: Operation
    transaction_id: str
    user_id: str
    amount: int
    apply_new: bool


#: What the writer thread hands back for one request: its execution and the position, or the error to raise.
_Outcome = PositionedExecution | Exception


def is_storage_failure(error: BaseException) -> bool:
    """Whether ``error`` means the database could not do its work, so a 503 and a retry later are the answer.

    Yes for what the file, the disk or the operating system did: an I/O
    error, a full disk, a lock held past the busy timeout, a file that cannot
    be opened or written or is no database. A failed transaction rolls back
    whole, so nothing was half applied.

    No for a statement SQLite refused (a constraint, a missing table, SQL it
    cannot parse): the same request would be refused again, so it is a bug or
    a broken schema, answered 500 ``internal_error`` and logged with its traceback.
    """
    if not isinstance(error, sqlite3.Error):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _STORAGE_FAILURE_CODES
    # Without a code the error was not SQLite's own; the DB-API files failures
    # of the database's operation, beyond the program's control, as OperationalError.
    return isinstance(error, sqlite3.OperationalError)


class SqliteStore:
    """A :class:`server.stores.LedgerStore` in one SQLite file."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        ledger_id: str,
        *,
        max_balance: int,
        group_commit: bool,
    ) -> None:
        self.ledger_id = ledger_id
        self.path = path
        self._writer_connection = writer
        self._reader_connection = reader
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-ledger-reader")
        self._max_balance = max_balance
        self._group_commit = group_commit
        self._queue: list[tuple[_Request, asyncio.Future[PositionedExecution]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._closed = False
        #: Transactions committed (or attempted) by the writer thread, and the requests they carried.
        self.commits = 0
        self.requests_committed = 0

    @classmethod
    async def open(
        cls,
        path: Path | str,
        accounts: Mapping[str, int],
        *,
        max_balance: int = MAX_BALANCE,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS,
        group_commit: bool = True,
    ) -> SqliteStore:
        """Open the file at ``path``, creating and migrating it where needed.

        The accounts in ``accounts`` are opened only where they do not exist
        yet. Raises StoreError with a one-line reason.
        """
        check_opening(accounts, max_balance)
        path = Path(path)
        loop = asyncio.get_running_loop()
        # Opening blocks on the file lock when another process is migrating, so it too runs off the loop.
        writer, reader, ledger_id = await loop.run_in_executor(None, _open_database, path, accounts, busy_timeout)
        return cls(path, writer, reader, ledger_id, max_balance=max_balance, group_commit=group_commit)

    # -- writes ------------------------------------------------------------------

    async def execute(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> Execution | None:
        execution, _ = await self.execute_with_position(operation, transaction_id, user_id, amount, apply_new=apply_new)
        return execution

    async def execute_with_position(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> PositionedExecution:
        if self._closed:
            raise StorageUnavailable(f"the SQLite store {self.path} is closed")
        done: asyncio.Future[PositionedExecution] = asyncio.get_running_loop().create_future()
        self._queue.append((_Request(operation, transaction_id, user_id, amount, apply_new), done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_queued(), name="sqlite-ledger-committer")
        # Shielded: a request cancelled while its group commits must not tear
        # down the commit other requests share; its own outcome is then
        # unknown to its caller, exactly as after a lost response.
        return await asyncio.shield(done)

    async def _commit_queued(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self._group_commit:
                    group, self._queue = self._queue, []
                else:
                    group, self._queue = self._queue[:1], self._queue[1:]
                requests = [request for request, _ in group]
                try:
                    outcomes = await loop.run_in_executor(
                        self._writer, _write_group, self._writer_connection, requests, self._max_balance, self.path
                    )
                except Exception as error:  # the executor itself failed: nothing is known to be committed
                    outcomes = [_unavailable(self.path, error) for _ in group]
                self.commits += 1
                self.requests_committed += len(group)
                # Only this loop settles a request's future: execute awaits it
                # through asyncio.shield, so a cancelled caller leaves it pending.
                for (_, done), outcome in zip(group, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)
        finally:
            self._committer = None

    # -- reads -------------------------------------------------------------------

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StorageUnavailable(f"the SQLite store {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, query, self._reader_connection)
        except sqlite3.Error as error:
            if is_storage_failure(error):
                raise _unavailable(self.path, error) from error
            raise

    async def open_account(self, request: OpeningRequest) -> tuple[Opening, bool]:
        if self._closed:
            raise StorageUnavailable(f"the SQLite store {self.path} is closed")
        # On the writer's own thread, so it takes its turn between group commits.
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, _open_account, self._writer_connection, request, self._max_balance, self.path
        )

    async def opening(self, transaction_id: str) -> Opening | None:
        return await self._read(lambda connection: _opening_under(connection, transaction_id))

    async def balance(self, user_id: str) -> int | None:
        return await self._read(lambda connection: _balance(connection, user_id))

    async def accounts(self) -> list[Account]:
        return await self._read(_accounts)

    async def trail(self, transaction_id: str) -> list[Entry]:
        return await self._read(lambda connection: _entries_under(connection, transaction_id))

    async def position(self) -> int:
        return await self._read(_position)

    async def balance_with_position(self, user_id: str) -> tuple[int | None, int]:
        return await self._read(lambda connection: (_balance(connection, user_id), _position(connection)))

    async def accounts_with_position(self) -> tuple[list[Account], int]:
        return await self._read(lambda connection: (_accounts(connection), _position(connection)))

    async def trail_with_position(self, transaction_id: str) -> tuple[list[Entry], int]:
        return await self._read(lambda connection: (_entries_under(connection, transaction_id), _position(connection)))

    async def check_invariants(self) -> None:
        """Raise InvariantViolation unless the file's balances agree with its entries.

        Every balance must be non-negative and equal to its opening balance
        plus the changes of the entries that took effect; money moves only for
        accounts that exist; every reversal follows the applied operation it
        reverses, with its amount.
        """
        await self._read(_check_invariants)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            await self._committer
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._writer_connection.close)
        await loop.run_in_executor(self._reader, self._reader_connection.close)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)


# -- opening -------------------------------------------------------------------


def _open_database(
    path: Path, accounts: Mapping[str, int], busy_timeout: float
) -> tuple[sqlite3.Connection, sqlite3.Connection, str]:
    if not path.parent.is_dir():
        raise StoreError(f"cannot open the SQLite database {path}: the folder {path.parent} does not exist")
    writer = None
    try:
        writer = _connect(path, busy_timeout)
        ledger_id = _migrate_and_open_accounts(writer, path, accounts)
        reader = _connect(path, busy_timeout)
    except sqlite3.Error as error:
        if writer is not None:
            writer.close()
        raise StoreError(f"cannot open the SQLite database {path}: {_one_line(error)}") from None
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    return writer, reader, ledger_id


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: the store issues BEGIN and COMMIT itself.
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        mode = _switch_to_wal(connection, busy_timeout)
        if mode != "wal":
            raise sqlite3.OperationalError(f"the file cannot use WAL mode (journal mode {mode})")
        # FULL: a commit is synced to disk before its operation is answered.
        connection.execute("PRAGMA synchronous=FULL")
    except BaseException:
        connection.close()
        raise
    return connection


def _switch_to_wal(connection: sqlite3.Connection, busy_timeout: float) -> str:
    """Put the file in WAL mode (a no-op once it is) and return the journal mode it is in."""
    # When several processes open a new file at once, SQLite answers
    # SQLITE_BUSY to all but one switch at once, without waiting out the busy
    # timeout; the switch is retried here until that timeout instead.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
            return str(mode)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(_WAL_SWITCH_RETRY_SECONDS)


def _migrate_and_open_accounts(connection: sqlite3.Connection, path: Path, accounts: Mapping[str, int]) -> str:
    """Migrate, open the new accounts, and return the ledger's id, made here if the file is new."""
    # One write transaction for all of it: two processes starting together on
    # a new file take turns, and the second finds the first one's work done.
    connection.execute("BEGIN IMMEDIATE")
    try:
        apply_sqlite(connection, SCHEMA, str(path))
        for user_id, balance in accounts.items():
            opened = connection.execute(
                "INSERT INTO accounts (user_id, balance) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING",
                (user_id, balance),
            )
            if opened.rowcount == 1:
                connection.execute("INSERT INTO opening_balances (user_id, balance) VALUES (?, ?)", (user_id, balance))
        connection.execute(
            "INSERT INTO ledger_identity (singleton, ledger_id) VALUES (1, ?) ON CONFLICT (singleton) DO NOTHING",
            (new_ledger_id(),),
        )
        (ledger_id,) = connection.execute("SELECT ledger_id FROM ledger_identity").fetchone()
        connection.execute("COMMIT")
        return str(ledger_id)
    except BaseException:
        _rollback(connection)
        raise


# -- the writer thread ---------------------------------------------------------


def _write_group(
    connection: sqlite3.Connection, requests: Sequence[_Request], max_balance: int, path: Path
) -> list[_Outcome]:
    """Decide ``requests`` in order in one transaction and commit it; one outcome per request.

    A request that fails rolls back to its own savepoint, and the others
    commit. When the transaction itself fails, every request gets the failure
    (StorageUnavailable for a storage failure) and nothing of the group is
    written. Each execution comes with the position after the group's writes.
    """
    executions: list[Execution | Exception | None] = []
    try:
        connection.execute("BEGIN IMMEDIATE")
        (sequence,) = connection.execute(_POSITION).fetchone()
        for request in requests:
            sequence += 1
            connection.execute("SAVEPOINT request")
            try:
                executions.append(_execute(connection, request, sequence, max_balance))
            except Exception as error:
                connection.execute("ROLLBACK TO request")
                executions.append(_unavailable(path, error) if is_storage_failure(error) else error)
            connection.execute("RELEASE request")
        # Read inside the transaction, after every write of the group: no
        # other process can commit in between, and what it committed before is counted.
        (position,) = connection.execute(_POSITION).fetchone()
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        _rollback(connection)
        return [_unavailable(path, error) if is_storage_failure(error) else error for _ in requests]
    return [execution if isinstance(execution, Exception) else (execution, position) for execution in executions]


def _execute(connection: sqlite3.Connection, request: _Request, sequence: int, max_balance: int) -> Execution | None:
    recorded = {entry.operation: entry for entry in _entries_under(connection, request.transaction_id)}
    entry = replayed(
        request.operation, request.transaction_id, request.user_id, request.amount, recorded.get(request.operation)
    )
    if entry is not None:
        return entry, True
    if not request.apply_new:
        return None
    row = connection.execute("SELECT balance FROM accounts WHERE user_id = ?", (request.user_id,)).fetchone()
    entry = decide(
        request.operation,
        request.transaction_id,
        request.user_id,
        request.amount,
        balance=None if row is None else row[0],
        recorded=recorded,
        sequence=sequence,
        max_balance=max_balance,
    )
    if not entry.final:
        return entry, False
    connection.execute(
        f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.sequence,
            entry.transaction_id,
            entry.operation,
            entry.user_id,
            entry.amount,
            entry.outcome,
            entry.balance,
            entry.rejection,
        ),
    )
    if entry.took_effect:
        connection.execute("UPDATE accounts SET balance = ? WHERE user_id = ?", (entry.balance, entry.user_id))
    return entry, False


def _rollback(connection: sqlite3.Connection) -> None:
    # After an I/O error SQLite may already have rolled back, and the rollback itself may fail.
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


# -- rows and checks -----------------------------------------------------------


def _position(connection: sqlite3.Connection) -> int:
    (position,) = connection.execute(_POSITION).fetchone()
    return int(position)


def _balance(connection: sqlite3.Connection, user_id: str) -> int | None:
    row = connection.execute("SELECT balance FROM accounts WHERE user_id = ?", (user_id,)).fetchone()
    return None if row is None else int(row[0])


def _accounts(connection: sqlite3.Connection) -> list[Account]:
    rows = connection.execute(
        "SELECT a.user_id, a.balance, coalesce(o.balance, 0) FROM accounts a "
        "LEFT JOIN opening_balances o ON o.user_id = a.user_id ORDER BY a.user_id"
    ).fetchall()
    return [Account(user_id, balance, opening_balance) for user_id, balance, opening_balance in rows]


_OPENING_COLUMNS: Final = "transaction_id, user_id, opening_balance, operator, reason, recorded_at, rejection"


def _opening_under(connection: sqlite3.Connection, transaction_id: str) -> Opening | None:
    row = connection.execute(
        f"SELECT {_OPENING_COLUMNS} FROM account_openings WHERE transaction_id = ?", (transaction_id,)
    ).fetchone()
    return None if row is None else Opening(*row)


def _open_account(
    connection: sqlite3.Connection, request: OpeningRequest, max_balance: int, path: Path
) -> tuple[Opening, bool]:
    """Decide and record one opening in its own write transaction, on the writer thread."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            opening, replayed = decide_opening(
                request,
                account_exists=_balance(connection, request.user_id) is not None,
                recorded=_opening_under(connection, request.transaction_id),
                max_balance=max_balance,
                now=utc_now(),
            )
            if not replayed:
                connection.execute(
                    f"INSERT INTO account_openings ({_OPENING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        opening.transaction_id,
                        opening.user_id,
                        opening.opening_balance,
                        opening.operator,
                        opening.reason,
                        opening.recorded_at,
                        opening.rejection,
                    ),
                )
                if opening.opened:
                    connection.execute(
                        "INSERT INTO accounts (user_id, balance) VALUES (?, ?)",
                        (opening.user_id, opening.opening_balance),
                    )
                    connection.execute(
                        "INSERT INTO opening_balances (user_id, balance) VALUES (?, ?)",
                        (opening.user_id, opening.opening_balance),
                    )
        except BaseException:
            _rollback(connection)
            raise
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        _rollback(connection)
        if is_storage_failure(error):
            raise _unavailable(path, error) from error
        raise
    return opening, replayed


def _entries_under(connection: sqlite3.Connection, transaction_id: str) -> list[Entry]:
    rows = connection.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE transaction_id = ? ORDER BY sequence", (transaction_id,)
    ).fetchall()
    return [_entry_from_row(row) for row in rows]


def _entry_from_row(row: tuple[Any, ...]) -> Entry:
    sequence, transaction_id, operation, user_id, amount, outcome, balance, rejection = row
    return Entry(
        transaction_id, operation, user_id, amount, sequence, outcome=outcome, balance=balance, rejection=rejection
    )


def _check_invariants(connection: sqlite3.Connection) -> None:
    # One read transaction: a consistent snapshot even while other processes write.
    connection.execute("BEGIN")
    try:
        balances = dict(connection.execute("SELECT user_id, balance FROM accounts").fetchall())
        expected = dict(connection.execute("SELECT user_id, balance FROM opening_balances").fetchall())
        moved = [
            _entry_from_row(row)
            for row in connection.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE outcome IN ('applied', 'reversed') ORDER BY sequence"
            ).fetchall()
        ]
    finally:
        connection.execute("COMMIT")
    if balances.keys() != expected.keys():
        raise InvariantViolation(
            f"accounts without an opening balance: {sorted(balances.keys() - expected.keys())}; "
            f"opening balances without an account: {sorted(expected.keys() - balances.keys())}"
        )
    applied: dict[tuple[str, Operation], Entry] = {}
    for entry in moved:
        if entry.user_id not in balances:
            raise InvariantViolation(f"{entry!r} moved money of a user with no account")
        if entry.outcome == "reversed":
            forward = applied.get((entry.transaction_id, DEBIT if entry.operation == COMPENSATE_DEBIT else CREDIT))
            if forward is None or forward.amount != entry.amount:
                raise InvariantViolation(f"{entry!r} reverses nothing it may reverse")
        else:
            applied[(entry.transaction_id, entry.operation)] = entry
        expected[entry.user_id] += entry.delta
    for user_id, balance in balances.items():
        if type(balance) is not int or balance < 0:
            raise InvariantViolation(f"balance of {user_id!r} is {balance!r}")
        if balance != expected[user_id]:
            raise InvariantViolation(
                f"balance of {user_id!r} is {balance}, but its opening balance and entries say {expected[user_id]}"
            )


def _unavailable(path: Path, error: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"the SQLite database {path} failed: {_one_line(error)}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
