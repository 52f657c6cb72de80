"""The SQLite saga log: durable, in WAL mode with a full sync on every commit, and group commit.

A saga's state change and the attempt that caused it are committed before the
next request goes out, so that after a crash every unfinished saga can resume
from exactly where it was, under its original transaction_id.

One process at a time holds the file (see :func:`_lock`), so every lease in
it at open belongs to a process that is gone: opening for writing releases
them all. The lease rules of :mod:`saga.logs.base` still hold within the
process, so the same contract tests run on it. The schema is versioned SQL
in ``sql/sqlite/``, applied at open (see :mod:`server.shared.migrations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from saga.ledgers import Acceptance, LedgerMark, Quarantine
from saga.logs.base import (
    EVENT_COLUMNS,
    RECENT_MS,
    TERMINAL_VALUES,
    LeaseLost,
    Overview,
    SagaLogError,
    UnknownSaga,
    action_row,
    event_from_row,
    key_conflict,
    saga_from_row,
    same_transfer,
    sent_at,
    take_action,
)
from saga.operator import Effect
from saga.records import Change, Event, OperatorAction, SagaRecord
from saga.states import SagaState
from server.shared.migrations import Schema, migrate_sqlite, sqlite_write_transaction

#: The log's versioned schema, sql/sqlite/NNNN_name.sql: see server/shared/migrations.py.
SCHEMA = Schema(
    folder=Path(__file__).resolve().parent / "sql" / "sqlite",
    version_table="saga_log_schema",
    error=SagaLogError,
    upgrade_first="upgrade the orchestrator first",
)

_SAGA_COLUMNS = (
    "transaction_id, source_urls, source_user, target_urls, target_user, amount, state, "
    "fence_credit, created_at_ms, updated_at_ms, attempts, last_error, owner, epoch, lease_expires_at_ms, "
    "idempotency_key, source_service, target_service, submitted_by, deadline_ms, code"
)
_UNFINISHED = f"state NOT IN ({', '.join(repr(value) for value in TERMINAL_VALUES)})"

_PAST_DEADLINE = f"deadline_ms <= ?1 AND deadline_ms IS NOT NULL AND {_UNFINISHED}"

#: The whole overview in one statement, so that its figures and its stuck
#: list come from one snapshot: ?1 is the overview's time, ?2 the creation
#: time up to which a COMPENSATING saga is stuck, ?3 the start of "recently",
#: ?4 the stuck list's limit. One row per stuck saga, each with the figures;
#: one row of figures with NULL saga columns when none is stuck. The indexes
#: these reads go through are in sql/sqlite/.
_OVERVIEW = f"""
WITH figures AS (
    SELECT
        (SELECT json_group_object(state, sagas) FROM (SELECT state, count(*) AS sagas FROM sagas GROUP BY state))
            AS by_state,
        -- Named: without statistics SQLite would walk every COMPLETED saga through sagas_by_state.
        (SELECT count(*) FROM sagas INDEXED BY sagas_completed WHERE state = 'COMPLETED' AND updated_at_ms > ?3)
            AS completed_recently,
        (SELECT count(*) FROM sagas WHERE state = 'COMPENSATING' AND created_at_ms <= ?2) AS compensating_too_long,
        (SELECT count(*) FROM sagas WHERE {_PAST_DEADLINE}) AS deadlines_expired,
        (SELECT min(created_at_ms) FROM sagas WHERE state = 'NEEDS_ATTENTION') AS oldest_needs_attention_ms
), stuck AS (
    SELECT {_SAGA_COLUMNS} FROM sagas
    WHERE state = 'NEEDS_ATTENTION' OR (state = 'COMPENSATING' AND created_at_ms <= ?2) OR ({_PAST_DEADLINE})
    ORDER BY created_at_ms, transaction_id
    LIMIT ?4
)
SELECT figures.*, stuck.* FROM figures LEFT JOIN stuck ON 1 ORDER BY stuck.created_at_ms, stuck.transaction_id
"""

#: ?1 is the user, ?2 the service's name or NULL for any, ?3 the limit.
_BY_ACCOUNT = f"""
SELECT {_SAGA_COLUMNS} FROM sagas
WHERE (source_user = ?1 AND (?2 IS NULL OR source_service = ?2))
   OR (target_user = ?1 AND (?2 IS NULL OR target_service = ?2))
ORDER BY created_at_ms DESC, transaction_id DESC
LIMIT ?3
"""


class SqliteSagaLog:
    """A durable saga log in one SQLite file, with group commit.

    Writers hand their changes to a single committer task. While one
    transaction is being written and synced, new changes queue up, and the
    next transaction takes them all: many concurrent sagas share one fsync.
    All database work runs on one dedicated thread, off the event loop.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        reader: sqlite3.Connection,
        reader_executor: ThreadPoolExecutor,
    ) -> None:
        self._connection = connection
        self._executor = executor
        self._reader = reader
        self._reader_executor = reader_executor
        self._pending: list[tuple[list[_Statement], asyncio.Future[None]]] = []
        self._listeners: list[Callable[[], None]] = []
        self._retry_listeners: list[Callable[[str], None]] = []
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
        reader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saga-log-reader")
        loop = asyncio.get_running_loop()
        lock = None
        connection = None
        try:
            if exclusive:
                # Before SQLite opens the file: a refused process must not touch it.
                lock = _lock(Path(path), create)
            connection = await loop.run_in_executor(executor, _connect, Path(path), create, exclusive)
            # After the writer made (or upgraded) the schema, which the reader only reads.
            reader = await loop.run_in_executor(reader_executor, _connect_reader, Path(path))
        except BaseException:
            if connection is not None:
                connection.close()
            if lock is not None:
                os.close(lock)
            executor.shutdown(wait=False)
            reader_executor.shutdown(wait=False)
            raise
        log = cls(connection, executor, reader, reader_executor)
        log._lock = lock
        return log

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[sqlite3.Row]:
        """Rows of a query, read on a connection and a thread of their own.

        Reads never wait behind the writer, whose thread spends most of its
        time in fsync: WAL lets a reader see every commit made before its
        query began, so an answer read after a commit returned includes it.
        """
        loop = asyncio.get_running_loop()
        rows: list[sqlite3.Row] = await loop.run_in_executor(
            self._reader_executor, _query, self._reader, sql, parameters
        )
        return rows

    # -- writes ------------------------------------------------------------------

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        statements = _insert_statements(saga)
        statements += _change_statements(
            Change(saga.transaction_id, saga.created_at_ms, state=first_state, epoch=saga.epoch, owner=saga.owner)
        )
        await self._enqueue(statements)

    async def submit(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        key = saga.idempotency_key
        pending = SagaRecord(
            saga.transaction_id,
            saga.source,
            saga.target,
            saga.amount,
            created_at_ms=saga.created_at_ms,
            updated_at_ms=saga.created_at_ms,
            idempotency_key=key,
            submitted_by=saga.submitted_by,
            deadline_ms=saga.deadline_ms,
        )
        try:
            # The insert first: a new key, the common case, costs no read. The
            # unique index on the key refuses a key already used.
            await self._enqueue(_insert_statements(pending))
        except SagaLogError:
            if key is None:
                raise
            first = await self._by_key(key)
            if first is None:
                raise
            if not same_transfer(first, saga):
                raise key_conflict(key) from None
            return first, False
        self._wake()
        return pending, True

    async def _by_key(self, key: str) -> SagaRecord | None:
        rows = await self._read(f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE idempotency_key = ?", (key,))
        return saga_from_row(rows[0]) if rows else None

    @property
    def exclusive(self) -> bool:
        """Opened for driving sagas: this process holds the file's lock until it ends."""
        return self._lock is not None

    async def commit(self, change: Change) -> None:
        await self._enqueue(_change_statements(change))

    async def commit_all(self, changes: Sequence[Change]) -> None:
        await self._enqueue([statement for change in changes for statement in _change_statements(change)])

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease_ms: int,
        now_ms: int,
        transaction_id: str | None = None,
        include_waiting: bool = False,
    ) -> list[SagaRecord]:
        rows = await self._run(
            _claim, self._connection, owner, limit, lease_ms, now_ms, transaction_id, include_waiting
        )
        return [saga_from_row(row) for row in rows]

    async def renew(self, owner: str, held: Mapping[str, int], *, lease_ms: int, now_ms: int) -> set[str]:
        renewed: set[str] = await self._run(_renew, self._connection, dict(held), now_ms + lease_ms)
        return set(held) - renewed

    async def release(self, transaction_id: str, epoch: int, *, not_before_ms: int = 0) -> bool:
        state = await self._run(_release, self._connection, transaction_id, epoch, not_before_ms)
        if state is not None and state not in TERMINAL_VALUES and not not_before_ms:
            self._wake()
        return state is not None

    async def listen(self, wake: Callable[[], None], retry: Callable[[str], None] | None = None) -> None:
        # Only this process writes the file, so only its own submissions, releases and actions can wake it.
        self._listeners.append(wake)
        if retry is not None:
            self._retry_listeners.append(retry)

    def _wake(self) -> None:
        for wake in self._listeners:
            wake()

    async def act(self, action: OperatorAction) -> SagaRecord:
        # On the writer's thread, like every commit and claim: the rule reads
        # the saga as no other write can change it until the action is written.
        acted: tuple[SagaRecord, Effect] = await self._run(_act, self._connection, action)
        saga, effect = acted
        if effect.state is None:
            if saga.owner is None:
                self._wake()
            for retry in self._retry_listeners:
                retry(saga.transaction_id)
        return saga

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        rows = await self._read(_OVERVIEW, (now_ms, now_ms - stuck_after_ms, now_ms - RECENT_MS, limit))
        figures = rows[0]
        counts = dict.fromkeys(SagaState, 0)
        counts.update({SagaState(state): count for state, count in json.loads(figures["by_state"] or "{}").items()})
        return Overview(
            counts,
            figures["completed_recently"],
            [saga_from_row(row) for row in rows if row["transaction_id"] is not None],
            figures["compensating_too_long"],
            counts[SagaState.NEEDS_ATTENTION],
            figures["deadlines_expired"],
            figures["oldest_needs_attention_ms"],
            now_ms,
        )

    async def by_account(self, user_id: str, *, service: str | None = None, limit: int) -> list[SagaRecord]:
        rows = await self._read(_BY_ACCOUNT, (user_id, service, limit))
        return [saga_from_row(row) for row in rows]

    async def action_counts(self) -> dict[str, int]:
        rows = await self._read("SELECT step, count(*) AS actions FROM events WHERE kind = 'action' GROUP BY step", ())
        return {row["step"]: row["actions"] for row in rows}

    async def _enqueue(self, statements: list[_Statement]) -> None:
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
                try:
                    errors = await self._run(_write_batch, self._connection, [statements for statements, _ in batch])
                except Exception as unexpected:
                    # A failure _write_batch does not sort out must still reach
                    # every saga waiting on this batch; the committer lives on
                    # for the next one.
                    errors = [unexpected] * len(batch)
                else:
                    self.commits += 1
                for (_, done), error in zip(batch, errors, strict=True):
                    if error is None:
                        self.changes_committed += 1
                        done.set_result(None)
                    elif isinstance(error, LeaseLost):
                        done.set_exception(error)
                    else:
                        done.set_exception(SagaLogError(f"saga log commit failed: {error}"))

    # -- ledger marks and quarantines (see saga/ledgers.py) --------------------------

    async def raise_ledger_marks(self, marks: Sequence[LedgerMark]) -> None:
        await self._enqueue([(RAISE_MARK, (m.service, m.ledger_id, m.position, m.generation), None) for m in marks])

    async def ledger_marks(self) -> dict[str, LedgerMark]:
        rows = await self._read("SELECT service, ledger_id, position, generation FROM ledger_marks", ())
        return {
            row["service"]: LedgerMark(row["service"], row["ledger_id"], row["position"], row["generation"])
            for row in rows
        }

    async def quarantine(self, quarantine: Quarantine) -> bool:
        q = quarantine
        inserted: bool = await self._run(
            _in_transaction,
            self._connection,
            lambda: self._connection.execute(QUARANTINE, (q.service, q.reason, q.transaction_id, q.at_ms)).rowcount > 0,
        )
        return inserted

    async def quarantines(self) -> list[Quarantine]:
        rows = await self._read(
            "SELECT service, reason, at_ms, transaction_id FROM quarantines WHERE lifted_at_ms IS NULL ORDER BY seq", ()
        )
        return [Quarantine(row["service"], row["reason"], row["at_ms"], row["transaction_id"]) for row in rows]

    async def accept(self, service: str, reason: str, at_ms: int) -> Acceptance | None:
        def work() -> Acceptance | None:
            row = self._connection.execute(LIFT_QUARANTINE, (at_ms, reason, service)).fetchone()
            if row is None:
                return None
            self._connection.execute(NEW_GENERATION, (service,))
            return Acceptance(service, reason, at_ms, row["reason"])

        accepted: Acceptance | None = await self._run(_in_transaction, self._connection, work)
        return accepted

    async def acceptances(self) -> list[Acceptance]:
        rows = await self._read(
            "SELECT service, lifted_because, lifted_at_ms, reason FROM quarantines "
            "WHERE lifted_at_ms IS NOT NULL ORDER BY lifted_at_ms, seq",
            (),
        )
        return [Acceptance(row["service"], row["lifted_because"], row["lifted_at_ms"], row["reason"]) for row in rows]

    # -- reads -------------------------------------------------------------------

    async def get(self, transaction_id: str) -> SagaRecord | None:
        rows = await self._read(f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE transaction_id = ?", (transaction_id,))
        return saga_from_row(rows[0]) if rows else None

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]:
        if state is None:
            rows = await self._read(f"SELECT {_SAGA_COLUMNS} FROM sagas ORDER BY created_at_ms, rowid", ())
        else:
            rows = await self._read(
                f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE state = ? ORDER BY created_at_ms, rowid",
                (state.value,),
            )
        return [saga_from_row(row) for row in rows]

    async def unfinished(self) -> list[SagaRecord]:
        rows = await self._read(
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE {_UNFINISHED} ORDER BY created_at_ms, rowid",
            (),
        )
        return [saga_from_row(row) for row in rows]

    async def history(self, transaction_id: str) -> list[Event]:
        rows = await self._read(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE transaction_id = ? ORDER BY seq",
            (transaction_id,),
        )
        # In EVENT_COLUMNS' order, which event_from_row shares with the PostgreSQL log.
        return [event_from_row(transaction_id, tuple(row)) for row in rows]

    async def page(
        self, *, state: SagaState | None = None, limit: int, after: tuple[int, str] | None = None
    ) -> list[SagaRecord]:
        conditions: list[str] = []
        parameters: list[object] = []
        if state is not None:
            conditions.append("state = ?")
            parameters.append(state.value)
        if after is not None:
            conditions.append("(created_at_ms, transaction_id) < (?, ?)")
            parameters += list(after)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._read(
            f"SELECT {_SAGA_COLUMNS} FROM sagas {where} ORDER BY created_at_ms DESC, transaction_id DESC LIMIT ?",
            (*parameters, limit),
        )
        return [saga_from_row(row) for row in rows]

    async def states(self, transaction_ids: Sequence[str]) -> dict[str, SagaState]:
        rows = await self._read(
            "SELECT transaction_id, state FROM sagas WHERE transaction_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(transaction_ids)),),
        )
        return {row["transaction_id"]: SagaState(row["state"]) for row in rows}

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
        await asyncio.get_running_loop().run_in_executor(self._reader_executor, self._reader.close)
        self._reader_executor.shutdown(wait=True)
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


def _connect(path: Path, create: bool, exclusive: bool = False) -> sqlite3.Connection:
    if not create and not path.is_file():
        raise SagaLogError(f"no saga log at {path}")
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as error:
        raise SagaLogError(f"{path} is not a usable saga log: {error}") from error
    connection.row_factory = sqlite3.Row
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is synced to disk before it is acknowledged.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        migrate_sqlite(connection, SCHEMA, str(path), _version_before_numbering)
        if exclusive:
            # This process holds the file's lock: whoever held these leases is
            # gone. A saga no one holds keeps its wait (see release's not_before_ms).
            connection.execute("UPDATE sagas SET owner = NULL, lease_expires_at_ms = 0 WHERE owner IS NOT NULL")
        connection.execute("SELECT count(*) FROM sagas").fetchone()
    except sqlite3.DatabaseError as error:
        connection.close()
        raise SagaLogError(f"{path} is not a usable saga log: {error}") from error
    except BaseException:
        connection.close()
        raise
    return connection


def _connect_reader(path: Path) -> sqlite3.Connection:
    try:
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader.execute("PRAGMA query_only=ON")
    except sqlite3.DatabaseError as error:
        raise SagaLogError(f"{path} is not a usable saga log: {error}") from error
    reader.row_factory = sqlite3.Row
    return reader


def _version_before_numbering(connection: sqlite3.Connection) -> int:
    """The version of a log written before saga_log_schema, from what its tables hold; 0 for a new file.

    Each release before it made or upgraded the whole schema of its day at
    every start, so the newest thing a log has tells its version. One written
    when a service had one URL is at 1; one from before leases at 2, before
    service names at 3, before ledger marks at 4, before deadlines at 5.
    """
    sagas = {row["name"] for row in connection.execute("PRAGMA table_info(sagas)")}
    if not sagas:
        return 0
    if "source_url" in sagas:
        return 1
    if "owner" not in sagas:
        return 2
    if "source_service" not in sagas:
        return 3
    if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_marks'").fetchone():
        return 6 if "deadline_ms" in sagas else 5
    return 4


#: Keeps the highest position of the service's current generation and ledger;
#: a mark from an older generation, or from another ledger, changes nothing.
RAISE_MARK = """
INSERT INTO ledger_marks (service, ledger_id, position, generation) VALUES (?, ?, ?, ?)
ON CONFLICT (service) DO UPDATE SET
    ledger_id = coalesce(ledger_marks.ledger_id, excluded.ledger_id),
    position = CASE WHEN ledger_marks.ledger_id IS NULL OR excluded.position > ledger_marks.position
                    THEN excluded.position ELSE ledger_marks.position END
WHERE ledger_marks.generation = excluded.generation
  AND (ledger_marks.ledger_id IS NULL OR ledger_marks.ledger_id = excluded.ledger_id)
"""
QUARANTINE = """
INSERT INTO quarantines (service, reason, transaction_id, at_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (service) WHERE lifted_at_ms IS NULL DO NOTHING
"""
LIFT_QUARANTINE = """
UPDATE quarantines SET lifted_at_ms = ?, lifted_because = ? WHERE service = ? AND lifted_at_ms IS NULL RETURNING reason
"""
#: After an accepted decision the next answer names the ledger and its position anew.
NEW_GENERATION = """
INSERT INTO ledger_marks (service, ledger_id, position, generation) VALUES (?, NULL, 0, 1)
ON CONFLICT (service) DO UPDATE SET ledger_id = NULL, position = 0, generation = ledger_marks.generation + 1
"""

#: One statement of a write: SQL, parameters, and the saga whose epoch it
#: checks (None: no check). A checked statement that changes no row fails
#: the write with LeaseLost.
_Statement = tuple[str, tuple[Any, ...], "tuple[str, int] | None"]


def _insert_statements(saga: SagaRecord) -> list[_Statement]:
    return [
        (
            f"INSERT INTO sagas ({_SAGA_COLUMNS}) VALUES ({', '.join('?' * 21)})",
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
                saga.owner,
                saga.epoch,
                saga.lease_expires_at_ms,
                saga.idempotency_key,
                saga.source.service,
                saga.target.service,
                saga.submitted_by,
                saga.deadline_ms,
                saga.code,
            ),
            None,
        ),
        (
            "INSERT INTO events (transaction_id, at_ms, kind, state) VALUES (?, ?, 'state', ?)",
            (saga.transaction_id, saga.created_at_ms, saga.state.value),
            None,
        ),
    ]


def _change_statements(change: Change) -> list[_Statement]:
    # The conditional update first: when the epoch is stale nothing else is written.
    statements: list[_Statement] = [
        (
            "UPDATE sagas SET state = coalesce(?, state), fence_credit = coalesce(?, fence_credit), "
            "attempts = attempts + ?, last_error = coalesce(?, last_error), updated_at_ms = ?, "
            "code = CASE WHEN ? THEN ? ELSE coalesce(?, code) END, "
            # A terminal state ends the lease with the saga.
            "owner = CASE WHEN ? THEN NULL ELSE owner END, "
            "lease_expires_at_ms = CASE WHEN ? THEN 0 ELSE lease_expires_at_ms END "
            "WHERE transaction_id = ? AND (? IS NULL OR epoch = ?)",
            (
                change.state.value if change.state is not None else None,
                int(change.fence_credit) if change.fence_credit is not None else None,
                len(change.attempts),
                change.error,
                change.at_ms,
                change.state is not None and change.state.is_terminal,
                change.code,
                change.code,
                change.state is not None and change.state.is_terminal,
                change.state is not None and change.state.is_terminal,
                change.transaction_id,
                change.epoch,
                change.epoch,
            ),
            (change.transaction_id, change.epoch) if change.epoch is not None else None,
        )
    ]
    for attempt in change.attempts:
        statements.append(
            (
                "INSERT INTO events (transaction_id, at_ms, kind, step, attempt, status, code, latency_us, detail, "
                "url, owner, epoch, ledger_id) VALUES (?, ?, 'attempt', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    change.transaction_id,
                    sent_at(change, attempt),
                    attempt.step,
                    attempt.number,
                    attempt.status,
                    attempt.code,
                    attempt.latency_us,
                    attempt.error,
                    attempt.url,
                    change.owner,
                    change.epoch,
                    attempt.ledger_id,
                ),
                None,
            )
        )
    if change.state is not None:
        statements.append(
            (
                "INSERT INTO events (transaction_id, at_ms, kind, state, detail, owner, epoch) "
                "VALUES (?, ?, 'state', ?, ?, ?, ?)",
                (change.transaction_id, change.at_ms, change.state.value, change.error, change.owner, change.epoch),
                None,
            )
        )
    return statements


def _write_batch(connection: sqlite3.Connection, changes: list[list[_Statement]]) -> list[Exception | None]:
    """Commit all changes in one transaction; returns one error slot per change.

    If the shared transaction fails, each change is retried in a transaction of
    its own, so one bad change (or one stale epoch) cannot fail the sagas it
    was batched with.
    """
    try:
        _write(connection, [statement for statements in changes for statement in statements])
        return [None] * len(changes)
    except (sqlite3.Error, LeaseLost) as error:
        if len(changes) == 1:
            return [error]
    errors: list[Exception | None] = []
    for statements in changes:
        try:
            _write(connection, statements)
            errors.append(None)
        except (sqlite3.Error, LeaseLost) as error:
            errors.append(error)
    return errors


def _write(connection: sqlite3.Connection, statements: list[_Statement]) -> None:
    with sqlite_write_transaction(connection):
        for sql, parameters, fenced in statements:
            cursor = connection.execute(sql, parameters)
            if fenced is not None and cursor.rowcount == 0:
                transaction_id, epoch = fenced
                raise LeaseLost(transaction_id, epoch)


def _in_transaction(connection: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    try:
        with sqlite_write_transaction(connection):
            return work()
    except sqlite3.DatabaseError as error:
        raise SagaLogError(f"cannot write the saga log: {error}") from error


def _claim(
    connection: sqlite3.Connection,
    owner: str,
    limit: int,
    lease_ms: int,
    now_ms: int,
    transaction_id: str | None,
    include_waiting: bool,
) -> list[sqlite3.Row]:
    def work() -> list[sqlite3.Row]:
        chosen = "transaction_id = ?" if transaction_id is not None else "1"
        rows = connection.execute(
            f"UPDATE sagas SET owner = ?, epoch = epoch + 1, lease_expires_at_ms = ? WHERE rowid IN ("
            f"SELECT rowid FROM sagas WHERE {_UNFINISHED} "
            f"AND (lease_expires_at_ms <= ? OR (? AND owner IS NULL)) AND {chosen} "
            f"ORDER BY created_at_ms, rowid LIMIT ?) RETURNING {_SAGA_COLUMNS}",
            (
                owner,
                now_ms + lease_ms,
                now_ms,
                include_waiting,
                *((transaction_id,) if transaction_id is not None else ()),
                limit,
            ),
        ).fetchall()
        rows.sort(key=lambda row: (row["created_at_ms"], row["transaction_id"]))
        connection.executemany(
            "INSERT INTO events (transaction_id, at_ms, kind, owner, epoch) VALUES (?, ?, 'claim', ?, ?)",
            [(row["transaction_id"], now_ms, row["owner"], row["epoch"]) for row in rows],
        )
        return rows

    rows: list[sqlite3.Row] = _in_transaction(connection, work)
    return rows


def _renew(connection: sqlite3.Connection, held: dict[str, int], expires_at_ms: int) -> set[str]:
    def work() -> set[str]:
        renewed = set()
        for transaction_id, epoch in held.items():
            cursor = connection.execute(
                "UPDATE sagas SET lease_expires_at_ms = ? WHERE transaction_id = ? AND epoch = ?",
                (expires_at_ms, transaction_id, epoch),
            )
            if cursor.rowcount:
                renewed.add(transaction_id)
        return renewed

    renewed: set[str] = _in_transaction(connection, work)
    return renewed


def _release(connection: sqlite3.Connection, transaction_id: str, epoch: int, not_before_ms: int) -> str | None:
    def work() -> str | None:
        row = connection.execute(
            "UPDATE sagas SET owner = NULL, lease_expires_at_ms = ? WHERE transaction_id = ? AND epoch = ? "
            "RETURNING state",
            (not_before_ms, transaction_id, epoch),
        ).fetchone()
        return None if row is None else str(row["state"])

    state: str | None = _in_transaction(connection, work)
    return state


def _act(connection: sqlite3.Connection, action: OperatorAction) -> tuple[SagaRecord, Effect]:
    """Record ``action`` as saga/logs/memory.py does, in one write transaction; the saga after it, and the effect."""

    def work() -> tuple[SagaRecord, Effect]:
        row = connection.execute(
            f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE transaction_id = ?", (action.transaction_id,)
        ).fetchone()
        if row is None:
            raise UnknownSaga(f"no saga has the id {action.transaction_id!r}")
        saga = saga_from_row(row)
        event, effect = take_action(saga, action)
        step, code = action_row(event)
        connection.execute(
            "INSERT INTO events (transaction_id, at_ms, kind, state, step, code, detail, owner, epoch) "
            "VALUES (?, ?, 'action', ?, ?, ?, ?, ?, ?)",
            (
                event.transaction_id,
                event.at_ms,
                None if event.state is None else event.state.value,
                step,
                code,
                event.detail,
                event.owner,
                event.epoch,
            ),
        )
        connection.execute(
            "UPDATE sagas SET state = ?, last_error = ?, code = ?, updated_at_ms = ?, owner = ?, "
            "lease_expires_at_ms = ? WHERE transaction_id = ?",
            (
                saga.state.value,
                saga.last_error,
                saga.code,
                saga.updated_at_ms,
                saga.owner,
                saga.lease_expires_at_ms,
                saga.transaction_id,
            ),
        )
        return saga, effect

    acted: tuple[SagaRecord, Effect] = _in_transaction(connection, work)
    return acted


def _query(connection: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> list[sqlite3.Row]:
    try:
        return connection.execute(sql, parameters).fetchall()
    except sqlite3.DatabaseError as error:
        raise SagaLogError(f"cannot read the saga log: {error}") from error
