"""The saga log: a write-ahead record of every saga, state change and attempt.

A saga's state change and the attempt that caused it are committed before the
next request goes out, so that after a crash every unfinished saga can resume
from exactly where it was, under its original transaction_id.

Two implementations share one interface: :class:`SqliteSagaLog`, durable, in
WAL mode with a full sync on every commit and group commit across concurrent
sagas; and :class:`MemorySagaLog`, for simulation and for measuring what
durability costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from saga.records import AccountRef, Attempt, Change, Event, SagaRecord
from saga.states import TERMINAL_STATES, SagaState


class SagaLogError(Exception):
    """The saga log cannot be opened or read."""


class SagaLog(Protocol):
    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        """Record a new saga and its first state in one commit."""

    async def commit(self, change: Change) -> None:
        """Make a change durable; returns once it is."""

    async def get(self, transaction_id: str) -> SagaRecord | None: ...

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]: ...

    async def unfinished(self) -> list[SagaRecord]: ...

    async def history(self, transaction_id: str) -> list[Event]: ...

    async def close(self) -> None: ...


def _apply(saga: SagaRecord, change: Change) -> None:
    if change.state is not None:
        saga.state = change.state
    if change.fence_credit is not None:
        saga.fence_credit = change.fence_credit
    saga.attempts += len(change.attempts)
    if change.error is not None:
        saga.last_error = change.error
    saga.updated_at_ms = change.at_ms


def _events(change: Change) -> list[Event]:
    events = [Event(change.transaction_id, change.at_ms, "attempt", attempt=attempt) for attempt in change.attempts]
    if change.state is not None:
        events.append(Event(change.transaction_id, change.at_ms, "state", state=change.state, detail=change.error))
    return events


def _copy(saga: SagaRecord) -> SagaRecord:
    return SagaRecord(
        saga.transaction_id,
        saga.source,
        saga.target,
        saga.amount,
        saga.state,
        saga.fence_credit,
        saga.created_at_ms,
        saga.updated_at_ms,
        saga.attempts,
        saga.last_error,
    )


class MemorySagaLog:
    """A saga log in memory: every commit is immediate, and nothing survives the process."""

    def __init__(self) -> None:
        self._sagas: dict[str, SagaRecord] = {}
        self._history: dict[str, list[Event]] = {}
        self.commits = 0

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        if saga.transaction_id in self._sagas:
            raise SagaLogError(f"saga {saga.transaction_id} already exists")
        self._sagas[saga.transaction_id] = _copy(saga)
        self._history[saga.transaction_id] = [Event(saga.transaction_id, saga.created_at_ms, "state", state=saga.state)]
        await self.commit(Change(saga.transaction_id, saga.created_at_ms, state=first_state))

    async def commit(self, change: Change) -> None:
        _apply(self._sagas[change.transaction_id], change)
        self._history[change.transaction_id].extend(_events(change))
        self.commits += 1

    async def get(self, transaction_id: str) -> SagaRecord | None:
        saga = self._sagas.get(transaction_id)
        return None if saga is None else _copy(saga)

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]:
        return [_copy(saga) for saga in self._sagas.values() if state is None or saga.state == state]

    async def unfinished(self) -> list[SagaRecord]:
        return [_copy(saga) for saga in self._sagas.values() if saga.state not in TERMINAL_STATES]

    async def history(self, transaction_id: str) -> list[Event]:
        return list(self._history.get(transaction_id, []))

    async def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    transaction_id TEXT PRIMARY KEY,
    source_urls TEXT NOT NULL,  -- the service's URLs, comma-separated, as on the command line
    source_user TEXT NOT NULL,
    target_urls TEXT NOT NULL,
    target_user TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL,
    fence_credit INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS sagas_by_state ON sagas (state);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL REFERENCES sagas (transaction_id),
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT,
    step TEXT,
    attempt INTEGER,
    status INTEGER,
    code TEXT,
    latency_us INTEGER,
    detail TEXT,
    url TEXT
);
CREATE INDEX IF NOT EXISTS events_by_saga ON events (transaction_id, seq);
"""

_SAGA_COLUMNS = (
    "transaction_id, source_urls, source_user, target_urls, target_user, amount, state, "
    "fence_credit, created_at_ms, updated_at_ms, attempts, last_error"
)


def _saga_from_row(row: tuple[Any, ...]) -> SagaRecord:
    return SagaRecord(
        transaction_id=row[0],
        source=AccountRef(row[1], row[2]),
        target=AccountRef(row[3], row[4]),
        amount=row[5],
        state=SagaState(row[6]),
        fence_credit=bool(row[7]),
        created_at_ms=row[8],
        updated_at_ms=row[9],
        attempts=row[10],
        last_error=row[11],
    )


class SqliteSagaLog:
    """A durable saga log in one SQLite file, with group commit.

    Writers hand their changes to a single committer task. While one
    transaction is being written and synced, new changes queue up, and the
    next transaction takes them all: many concurrent sagas share one fsync.
    All database work runs on one dedicated thread, off the event loop.
    """

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._connection = connection
        self._executor = executor
        self._pending: list[tuple[list[tuple[str, tuple[Any, ...]]], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False
        self._lock: int | None = None
        self.commits = 0
        self.changes_committed = 0

    @classmethod
    async def open(cls, path: str | Path, *, create: bool = True, exclusive: bool = True) -> SqliteSagaLog:
        """Open (or create) the log at ``path``; ``create=False`` refuses a missing file.

        ``exclusive`` (for anything that runs sagas) takes a lock that one
        process at a time can hold: two orchestrators resuming the same saga
        would each drive it, and between them lose or mint money. The kernel
        drops the lock with its process, so a crash never leaves it behind.
        Readers (``show``, ``list``) pass ``exclusive=False``.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saga-log")
        loop = asyncio.get_running_loop()
        lock = None
        try:
            if exclusive:
                # Before SQLite opens the file: a refused process must not touch it.
                lock = _lock(Path(path), create)
            connection = await loop.run_in_executor(executor, _connect, Path(path), create)
        except BaseException:
            if lock is not None:
                os.close(lock)
            executor.shutdown(wait=False)
            raise
        log = cls(connection, executor)
        log._lock = lock
        return log

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # -- writes ------------------------------------------------------------------

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                f"INSERT INTO sagas ({_SAGA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    saga.transaction_id,
                    ",".join(saga.source.urls),
                    saga.source.user_id,
                    ",".join(saga.target.urls),
                    saga.target.user_id,
                    saga.amount,
                    saga.state.value,
                    int(saga.fence_credit),
                    saga.created_at_ms,
                    saga.created_at_ms,
                    0,
                    None,
                ),
            ),
            (
                "INSERT INTO events (transaction_id, at_ms, kind, state) VALUES (?, ?, 'state', ?)",
                (saga.transaction_id, saga.created_at_ms, saga.state.value),
            ),
        ]
        statements += _change_statements(Change(saga.transaction_id, saga.created_at_ms, state=first_state))
        await self._enqueue(statements)

    async def commit(self, change: Change) -> None:
        await self._enqueue(_change_statements(change))

    async def _enqueue(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        if self._closed:
            raise SagaLogError("the saga log is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_forever(), name="saga-log-committer")
        self._wakeup.set()
        # Shielded: a saga cancelled mid-commit must not tear down a commit
        # that other sagas share. Its own change may or may not be durable,
        # exactly as after a crash.
        await asyncio.shield(done)

    async def _commit_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                errors = await self._run(_write_batch, self._connection, [statements for statements, _ in batch])
                self.commits += 1
                for (_, done), error in zip(batch, errors, strict=True):
                    if done.done():
                        continue
                    if error is None:
                        self.changes_committed += 1
                        done.set_result(None)
                    else:
                        done.set_exception(SagaLogError(f"saga log commit failed: {error}"))

    # -- reads -------------------------------------------------------------------

    async def get(self, transaction_id: str) -> SagaRecord | None:
        rows = await self._run(
            _query, self._connection, f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE transaction_id = ?", (transaction_id,)
        )
        return _saga_from_row(rows[0]) if rows else None

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]:
        if state is None:
            rows = await self._run(
                _query, self._connection, f"SELECT {_SAGA_COLUMNS} FROM sagas ORDER BY created_at_ms, rowid", ()
            )
        else:
            rows = await self._run(
                _query,
                self._connection,
                f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE state = ? ORDER BY created_at_ms, rowid",
                (state.value,),
            )
        return [_saga_from_row(row) for row in rows]

    async def unfinished(self) -> list[SagaRecord]:
        terminal = tuple(state.value for state in TERMINAL_STATES)
        rows = await self._run(
            _query,
            self._connection,
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE state NOT IN (?, ?, ?) ORDER BY created_at_ms, rowid",
            terminal,
        )
        return [_saga_from_row(row) for row in rows]

    async def history(self, transaction_id: str) -> list[Event]:
        rows = await self._run(
            _query,
            self._connection,
            "SELECT at_ms, kind, state, step, attempt, status, code, latency_us, detail, url "
            "FROM events WHERE transaction_id = ? ORDER BY seq",
            (transaction_id,),
        )
        events = []
        for at_ms, kind, state, step, number, status, code, latency_us, detail, url in rows:
            attempt = None
            if kind == "attempt":
                attempt = Attempt(step, number, status, code, latency_us, detail, url)
                detail = None
            events.append(Event(transaction_id, at_ms, kind, SagaState(state) if state else None, attempt, detail))
        return events

    async def close(self) -> None:
        if self._closed:
            return
        if self._committer is not None:
            # An empty change queued last returns once everything before it is durable.
            await self._enqueue([])
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        self._closed = True
        await self._run(self._connection.close)
        self._executor.shutdown(wait=True)
        if self._lock is not None:
            os.close(self._lock)


def _lock(path: Path, create: bool) -> int:
    """Lock the log's file itself, whatever name it is reached by; returns the descriptor that holds the lock.

    A lock beside the file follows the name given: through a symlink or a
    hard link, a second process would get a lock of its own and drive the
    first one's sagas. ``flock`` on the file's own descriptor is keyed by the
    file (its inode), so every name of it shares the one lock. The lock is
    ``flock`` and SQLite's are ``fcntl`` byte-range locks; on Linux the two do
    not interact.

    Closing any descriptor of a file drops the ``fcntl`` locks this process
    holds on it, SQLite's included: so open a log once per process, and close
    readers of it before the orchestrator's log.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        descriptor = os.open(path, flags, 0o644)
    except OSError as error:
        raise SagaLogError(_open_problem(path, create, error)) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise SagaLogError(f"the saga log {path} is in use by another orchestrator process") from None
    except OSError as error:
        os.close(descriptor)
        raise SagaLogError(f"cannot lock the saga log {path}: {_reason(error)}") from None
    return descriptor


def _open_problem(path: Path, create: bool, error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        if not create:
            return f"no saga log at {path}"
        if not path.parent.is_dir():
            return f"no folder {path.parent} for the saga log"
    return f"cannot open the saga log {path}: {_reason(error)}"


def _reason(error: OSError) -> str:
    text = os.strerror(error.errno) if error.errno else str(error)
    return text[:1].lower() + text[1:]


def count_sagas(path: Path) -> int:
    """How many sagas the log at ``path`` holds, read without a lock; 0 if there is no file yet.

    For watching a log that another process is writing. Raises SagaLogError
    when the file is not (yet) a saga log.
    """
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as connection:
            return int(connection.execute("SELECT count(*) FROM sagas").fetchone()[0])
    except sqlite3.Error as error:
        raise SagaLogError(f"cannot count the sagas in {path}: {error}") from error


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    if not create and not path.is_file():
        raise SagaLogError(f"no saga log at {path}")
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is synced to disk before it is acknowledged.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(_SCHEMA)
        _upgrade(connection)
        connection.execute("SELECT count(*) FROM sagas").fetchone()
    except sqlite3.DatabaseError as error:
        raise SagaLogError(f"{path} is not a usable saga log: {error}") from error
    return connection


def _upgrade(connection: sqlite3.Connection) -> None:
    """Bring a log written when a service had one URL up to this schema, in one transaction.

    Its single URLs are already valid one-item URL lists, so renaming the
    columns is all the sagas need; its attempts just have no URL.
    """

    def upgrades() -> list[str]:
        saga_columns = {row[1] for row in connection.execute("PRAGMA table_info(sagas)")}
        event_columns = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
        statements = []
        if "source_url" in saga_columns:
            statements += [
                "ALTER TABLE sagas RENAME COLUMN source_url TO source_urls",
                "ALTER TABLE sagas RENAME COLUMN target_url TO target_urls",
            ]
        if "url" not in event_columns:
            statements.append("ALTER TABLE events ADD COLUMN url TEXT")
        return statements

    # Checked without the write lock first, so that opening an up-to-date log
    # (a reader beside a busy orchestrator) never waits for it.
    if not upgrades():
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Again under the lock: another process may have upgraded the file meanwhile.
        for statement in upgrades():
            connection.execute(statement)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _change_statements(change: Change) -> list[tuple[str, tuple[Any, ...]]]:
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for attempt in change.attempts:
        statements.append(
            (
                "INSERT INTO events (transaction_id, at_ms, kind, step, attempt, status, code, latency_us, detail, "
                "url) VALUES (?, ?, 'attempt', ?, ?, ?, ?, ?, ?, ?)",
                (
                    change.transaction_id,
                    change.at_ms,
                    attempt.step,
                    attempt.number,
                    attempt.status,
                    attempt.code,
                    attempt.latency_us,
                    attempt.error,
                    attempt.url,
                ),
            )
        )
    if change.state is not None:
        statements.append(
            (
                "INSERT INTO events (transaction_id, at_ms, kind, state, detail) VALUES (?, ?, 'state', ?, ?)",
                (change.transaction_id, change.at_ms, change.state.value, change.error),
            )
        )
    statements.append(
        (
            "UPDATE sagas SET state = coalesce(?, state), fence_credit = coalesce(?, fence_credit), "
            "attempts = attempts + ?, last_error = coalesce(?, last_error), updated_at_ms = ? "
            "WHERE transaction_id = ?",
            (
                change.state.value if change.state is not None else None,
                int(change.fence_credit) if change.fence_credit is not None else None,
                len(change.attempts),
                change.error,
                change.at_ms,
                change.transaction_id,
            ),
        )
    )
    return statements


def _write_batch(
    connection: sqlite3.Connection, changes: list[list[tuple[str, tuple[Any, ...]]]]
) -> list[Exception | None]:
    """Commit all changes in one transaction; returns one error slot per change.

    If the shared transaction fails, each change is retried in a transaction of
    its own, so one bad change cannot fail the sagas it was batched with.
    """
    try:
        _write(connection, [statement for statements in changes for statement in statements])
        return [None] * len(changes)
    except sqlite3.Error as error:
        if len(changes) == 1:
            return [error]
    errors: list[Exception | None] = []
    for statements in changes:
        try:
            _write(connection, statements)
            errors.append(None)
        except sqlite3.Error as error:
            errors.append(error)
    return errors


def _write(connection: sqlite3.Connection, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        for sql, parameters in statements:
            connection.execute(sql, parameters)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _query(connection: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    try:
        return connection.execute(sql, parameters).fetchall()
    except sqlite3.DatabaseError as error:
        raise SagaLogError(f"cannot read the saga log: {error}") from error
