"""The shared saga log in PostgreSQL: many orchestrator processes, each saga driven by one at a time.

Workers claim sagas with ``FOR UPDATE SKIP LOCKED``, so that they never queue
behind each other's claims, and hold them by a lease (owner, epoch, expiry)
that they renew while they drive. Every commit of a driver is one statement,
``UPDATE … WHERE transaction_id = $1 AND epoch = $2`` with the saga's events
written by the same statement only when that update found its row: a worker
whose saga was taken over (its epoch raised by the new claim) gets
:class:`~saga.logs.base.LeaseLost` and writes nothing. Each event keeps the
owner and epoch it was committed under, as evidence.

Submissions and hand-backs ``NOTIFY`` the channel ``saga_work`` in their own
transaction, so idle workers wake at once; an expired lease wakes no one,
which is why workers also poll. An operator's retry notifies ``saga_retry``
with the saga's id, for whichever process drives it. The schema is versioned
SQL in ``sql/postgresql/`` and is applied at open under a session advisory
lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import asyncpg

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
from server.shared.database_url import DatabaseUrl
from server.shared.migrations import Schema, migrate_postgres

NOTIFY_CHANNEL: Final = "saga_work"
#: An operator asked for a saga (the payload) to be tried again at once.
RETRY_CHANNEL: Final = "saga_retry"
#: Held while migrating; a key apart from the accounts service's own.
SETUP_LOCK_KEY: Final = 0x5A6A_1ED6_E500_0002
#: The log's versioned schema, sql/postgresql/NNNN_name.sql: see server/shared/migrations.py.
SCHEMA: Final = Schema(
    folder=Path(__file__).resolve().parent / "sql" / "postgresql",
    version_table="saga_log_schema",
    error=SagaLogError,
    upgrade_first="upgrade the orchestrator first",
    lock_key=SETUP_LOCK_KEY,
)

#: Connections for statements; with the one LISTEN connection a process stays within 16.
DEFAULT_POOL_SIZE: Final = 12
CONNECT_TIMEOUT_SECONDS: Final = 10.0
COMMAND_TIMEOUT_SECONDS: Final = 30.0
# InternalClientError is what asyncpg raises on a connection whose backend was
# terminated mid-statement ("cannot switch to state 12"): an outage like the rest.
DATABASE_FAILURES: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

_SAGA_COLUMNS = (
    "transaction_id, source_urls, source_user, target_urls, target_user, amount, state, fence_credit, "
    "created_at_ms, updated_at_ms, attempts, last_error, owner, epoch, lease_expires_at_ms, idempotency_key, "
    "source_service, target_service, submitted_by, deadline_ms, code"
)
_TERMINAL = ", ".join(repr(value) for value in TERMINAL_VALUES)
_UNFINISHED = f"state NOT IN ({_TERMINAL})"

_INSERT = f"""
WITH saga AS (
    INSERT INTO saga_sagas ({_SAGA_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8, $8, 0, NULL, $9, $10, $11, $12, $13, $14, $15, $16, $17)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING transaction_id
), first AS (
    INSERT INTO saga_events (transaction_id, at_ms, kind, state)
    SELECT transaction_id, $8, 'state', $7 FROM saga
)
SELECT count(*) FROM saga
"""

#: One statement per commit: the events are written only if the fenced update found its row.
_COMMIT = f"""
WITH fenced AS (
    UPDATE saga_sagas SET
        state = coalesce($3, state),
        fence_credit = coalesce($4, fence_credit),
        attempts = attempts + $5,
        last_error = coalesce($6, last_error),
        updated_at_ms = $2,
        -- A terminal state says why itself, with no code of the state before it left over.
        code = CASE WHEN $3 IN ({_TERMINAL}) THEN $20 ELSE coalesce($20, code) END,
        -- A terminal state ends the lease with the saga.
        owner = CASE WHEN coalesce($3, state) IN ({_TERMINAL}) THEN NULL ELSE owner END,
        lease_expires_at_ms = CASE WHEN coalesce($3, state) IN ({_TERMINAL}) THEN 0 ELSE lease_expires_at_ms END
    WHERE transaction_id = $1 AND ($7::bigint IS NULL OR epoch = $7::bigint)
    RETURNING transaction_id
), written AS (
    INSERT INTO saga_events (transaction_id, at_ms, kind, state, step, attempt, status, code, latency_us, detail, url,
                             owner, epoch, ledger_id)
    SELECT fenced.transaction_id, e.at_ms, e.kind, e.state, e.step, e.attempt, e.status, e.code, e.latency_us,
           e.detail, e.url, $8, $7::bigint, e.ledger_id
    FROM fenced CROSS JOIN unnest($9::text[], $10::text[], $11::text[], $12::int[], $13::int[], $14::text[],
                                  $15::bigint[], $16::text[], $17::text[], $18::text[], $19::bigint[])
         WITH ORDINALITY AS e(kind, state, step, attempt, status, code, latency_us, detail, url, ledger_id, at_ms,
                              position)
    ORDER BY e.position
)
SELECT count(*) FROM fenced
"""

_CLAIM = f"""
WITH claimable AS (
    SELECT transaction_id FROM saga_sagas
    WHERE {_UNFINISHED} AND (lease_expires_at_ms <= $3 OR ($6 AND owner IS NULL))
      AND ($5::text IS NULL OR transaction_id = $5)
    ORDER BY position
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE saga_sagas AS saga SET owner = $1, epoch = saga.epoch + 1, lease_expires_at_ms = $3 + $2
    FROM claimable WHERE saga.transaction_id = claimable.transaction_id
    RETURNING saga.position, {", ".join(f"saga.{column.strip()}" for column in _SAGA_COLUMNS.split(","))}
), logged AS (
    INSERT INTO saga_events (transaction_id, at_ms, kind, owner, epoch)
    SELECT transaction_id, $3, 'claim', owner, epoch FROM claimed ORDER BY position
)
SELECT {_SAGA_COLUMNS} FROM claimed ORDER BY position
"""

_RENEW = """
UPDATE saga_sagas AS saga SET lease_expires_at_ms = $3
FROM unnest($1::text[], $2::bigint[]) AS held(transaction_id, epoch)
WHERE saga.transaction_id = held.transaction_id AND saga.epoch = held.epoch
RETURNING saga.transaction_id
"""

_RELEASE = f"""
WITH released AS (
    UPDATE saga_sagas SET owner = NULL, lease_expires_at_ms = $3
    WHERE transaction_id = $1 AND epoch = $2
    RETURNING state
)
SELECT state, CASE WHEN {_UNFINISHED} AND $3 = 0 THEN pg_notify('{NOTIFY_CHANNEL}', $1) END FROM released
"""

#: The action's event and its change in one statement, under the row lock
#: that act() took to decide it; the notifications go out when it commits.
_ACT = f"""
WITH acted AS (
    UPDATE saga_sagas SET state = $2, last_error = $3, code = $4, updated_at_ms = $5, owner = $6,
                          lease_expires_at_ms = $7
    WHERE transaction_id = $1
), logged AS (
    INSERT INTO saga_events (transaction_id, at_ms, kind, state, step, code, detail, owner, epoch)
    VALUES ($1, $5, 'action', $8, $9, $10, $11, $12, $13)
)
SELECT CASE WHEN $14 THEN pg_notify('{NOTIFY_CHANNEL}', $1) END,
       CASE WHEN $15 THEN pg_notify('{RETRY_CHANNEL}', $1) END
"""

_PAST_DEADLINE = f"deadline_ms <= $1 AND deadline_ms IS NOT NULL AND {_UNFINISHED}"

#: The whole overview in one statement and one round trip, from one
#: snapshot: $1 is the overview's time, $2 the creation time up to which a
#: COMPENSATING saga is stuck, $3 the start of "recently", $4 the stuck list's
#: limit. One row per stuck saga, each with the figures; one row of figures
#: with NULL saga columns when none is stuck.
_OVERVIEW = f"""
WITH figures AS (
    SELECT
        (SELECT coalesce(json_object_agg(state, sagas), '{{}}')
         FROM (SELECT state, count(*) AS sagas FROM saga_sagas GROUP BY state) AS by_state) AS by_state,
        (SELECT count(*) FROM saga_sagas WHERE state = 'COMPLETED' AND updated_at_ms > $3) AS completed_recently,
        (SELECT count(*) FROM saga_sagas WHERE state = 'COMPENSATING' AND created_at_ms <= $2)
            AS compensating_too_long,
        (SELECT count(*) FROM saga_sagas WHERE {_PAST_DEADLINE}) AS deadlines_expired,
        (SELECT min(created_at_ms) FROM saga_sagas WHERE state = 'NEEDS_ATTENTION') AS oldest_needs_attention_ms
)
SELECT figures.*, stuck.* FROM figures LEFT JOIN (
    SELECT {_SAGA_COLUMNS} FROM saga_sagas
    WHERE state = 'NEEDS_ATTENTION' OR (state = 'COMPENSATING' AND created_at_ms <= $2) OR ({_PAST_DEADLINE})
    -- Ids compare byte by byte, as in the other logs, whatever the database's collation.
    ORDER BY created_at_ms, transaction_id COLLATE "C"
    LIMIT $4
) AS stuck ON true
ORDER BY stuck.created_at_ms, stuck.transaction_id COLLATE "C"
"""

#: $1 is the user, $2 the service's name or NULL for any, $3 the limit.
_BY_ACCOUNT = f"""
SELECT {_SAGA_COLUMNS} FROM saga_sagas
WHERE (source_user = $1 AND ($2::text IS NULL OR source_service = $2))
   OR (target_user = $1 AND ($2::text IS NULL OR target_service = $2))
ORDER BY created_at_ms DESC, transaction_id COLLATE "C" DESC
LIMIT $3
"""

#: See saga/logs/sqlite.py's RAISE_MARK: one row per service, raised from every mark at once.
_RAISE_MARKS = """
INSERT INTO saga_ledger_marks AS mark (service, ledger_id, position, generation)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[])
ON CONFLICT (service) DO UPDATE SET
    ledger_id = coalesce(mark.ledger_id, excluded.ledger_id),
    position = CASE WHEN mark.ledger_id IS NULL THEN excluded.position
                    ELSE greatest(mark.position, excluded.position) END
WHERE mark.generation = excluded.generation AND (mark.ledger_id IS NULL OR mark.ledger_id = excluded.ledger_id)
"""
_QUARANTINE = """
INSERT INTO saga_quarantines (service, reason, transaction_id, at_ms) VALUES ($1, $2, $3, $4)
ON CONFLICT (service) WHERE lifted_at_ms IS NULL DO NOTHING
RETURNING seq
"""
_ACCEPT = """
WITH lifted AS (
    UPDATE saga_quarantines SET lifted_at_ms = $2, lifted_because = $3
    WHERE service = $1 AND lifted_at_ms IS NULL
    RETURNING reason
), renewed AS (
    INSERT INTO saga_ledger_marks AS mark (service, ledger_id, position, generation)
    SELECT $1, NULL, 0, 1 FROM lifted
    ON CONFLICT (service) DO UPDATE SET ledger_id = NULL, position = 0, generation = mark.generation + 1
)
SELECT reason FROM lifted
"""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


class PostgresSagaLog:
    """A saga log that any number of orchestrator processes share."""

    #: Shared: every commit is epoch-checked before the request that depends on it.
    exclusive = False

    def __init__(self, pool: asyncpg.Pool, dsn: str, where: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._where = where
        self._listener: asyncpg.Connection | None = None
        self._wakers: list[Callable[[], None]] = []
        self._retriers: list[Callable[[str], None]] = []

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> PostgresSagaLog:
        """Connect and bring the schema up to date; SagaLogError says in one line why not."""
        where = str(DatabaseUrl("postgresql", dsn=dsn))
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings={"default_transaction_isolation": "read committed"},
            )
        except (*DATABASE_FAILURES, ValueError) as error:
            raise SagaLogError(f"cannot open the saga log at {where}: {_one_line(error)}") from None
        try:
            async with pool.acquire() as connection:
                await migrate_postgres(connection, SCHEMA, where)
        except SagaLogError:
            await pool.close()
            raise
        except DATABASE_FAILURES as error:
            await pool.close()
            raise SagaLogError(f"cannot set up the saga log at {where}: {_one_line(error)}") from None
        return cls(pool, dsn, where)

    async def _fetch(self, sql: str, *arguments: Any) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._pool.fetch(sql, *arguments)
        except asyncpg.UniqueViolationError as error:
            raise SagaLogError(f"saga log write refused: {_one_line(error)}") from error
        except DATABASE_FAILURES as error:
            raise SagaLogError(f"the saga log at {self._where} failed: {_one_line(error)}") from error
        return rows

    # -- writes ------------------------------------------------------------------

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                inserted = await connection.fetchval(_INSERT, *_insert_arguments(saga))
                if not inserted:
                    raise SagaLogError(f"saga {saga.transaction_id} already exists")
                change = Change(
                    saga.transaction_id, saga.created_at_ms, state=first_state, epoch=saga.epoch, owner=saga.owner
                )
                await connection.fetchval(_COMMIT, *_commit_arguments(change))
        except asyncpg.UniqueViolationError:
            raise SagaLogError(f"saga {saga.transaction_id} already exists") from None
        except DATABASE_FAILURES as error:
            raise SagaLogError(f"the saga log at {self._where} failed: {_one_line(error)}") from error

    async def submit(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        pending = SagaRecord(
            saga.transaction_id,
            saga.source,
            saga.target,
            saga.amount,
            created_at_ms=saga.created_at_ms,
            updated_at_ms=saga.created_at_ms,
            idempotency_key=saga.idempotency_key,
            submitted_by=saga.submitted_by,
            deadline_ms=saga.deadline_ms,
        )
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if await connection.fetchval(_INSERT, *_insert_arguments(pending)):
                    await connection.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, saga.transaction_id)
                    return pending, True
                row = await connection.fetchrow(
                    f"SELECT {_SAGA_COLUMNS} FROM saga_sagas WHERE idempotency_key = $1", saga.idempotency_key
                )
        except asyncpg.UniqueViolationError:
            raise SagaLogError(f"saga {saga.transaction_id} already exists") from None
        except DATABASE_FAILURES as error:
            raise SagaLogError(f"the saga log at {self._where} failed: {_one_line(error)}") from error
        if row is None or saga.idempotency_key is None:
            raise SagaLogError(f"saga {saga.transaction_id} was not recorded")
        first = saga_from_row(row)
        if not same_transfer(first, saga):
            raise key_conflict(saga.idempotency_key)
        return first, False

    async def commit(self, change: Change) -> None:
        (row,) = await self._fetch(_COMMIT, *_commit_arguments(change))
        if row[0] == 0:
            if change.epoch is not None:
                raise LeaseLost(change.transaction_id, change.epoch)
            raise SagaLogError(f"no saga {change.transaction_id} in the log")

    async def commit_all(self, changes: Sequence[Change]) -> None:
        for change in changes:
            await self.commit(change)

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
        rows = await self._fetch(_CLAIM, owner, lease_ms, now_ms, limit, transaction_id, include_waiting)
        return [saga_from_row(row) for row in rows]

    async def renew(self, owner: str, held: Mapping[str, int], *, lease_ms: int, now_ms: int) -> set[str]:
        if not held:
            return set()
        rows = await self._fetch(_RENEW, list(held), list(held.values()), now_ms + lease_ms)
        return set(held) - {row[0] for row in rows}

    async def release(self, transaction_id: str, epoch: int, *, not_before_ms: int = 0) -> bool:
        return bool(await self._fetch(_RELEASE, transaction_id, epoch, not_before_ms))

    async def listen(self, wake: Callable[[], None], retry: Callable[[str], None] | None = None) -> None:
        self._wakers.append(wake)
        if retry is not None:
            self._retriers.append(retry)
        if self._listener is not None:
            return
        try:
            self._listener = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_SECONDS)
            # Both channels at once, whatever this first call asked for: a later one may add a retrier.
            await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)
            await self._listener.add_listener(RETRY_CHANNEL, self._retry_asked)
        except DATABASE_FAILURES as error:
            raise SagaLogError(f"cannot listen on the saga log at {self._where}: {_one_line(error)}") from error

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        for wake in self._wakers:
            wake()

    def _retry_asked(self, connection: object, pid: int, channel: str, payload: object) -> None:
        for retry in self._retriers:
            retry(str(payload))

    async def act(self, action: OperatorAction) -> SagaRecord:
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                # Locked until the action commits: a claim skips the row meanwhile,
                # and a driver's commit waits, then lands only if its epoch still holds.
                row = await connection.fetchrow(
                    f"SELECT {_SAGA_COLUMNS} FROM saga_sagas WHERE transaction_id = $1 FOR UPDATE",
                    action.transaction_id,
                )
                if row is None:
                    raise UnknownSaga(f"no saga has the id {action.transaction_id!r}")
                saga = saga_from_row(row)
                event, effect = take_action(saga, action)
                await connection.execute(_ACT, *_act_arguments(saga, event, effect))
        except DATABASE_FAILURES as error:
            raise SagaLogError(f"the saga log at {self._where} failed: {_one_line(error)}") from error
        return saga

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        rows = await self._fetch(_OVERVIEW, now_ms, now_ms - stuck_after_ms, now_ms - RECENT_MS, limit)
        figures = rows[0]
        counts = dict.fromkeys(SagaState, 0)
        counts.update({SagaState(state): count for state, count in json.loads(figures["by_state"]).items()})
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
        rows = await self._fetch(_BY_ACCOUNT, user_id, service, limit)
        return [saga_from_row(row) for row in rows]

    async def action_counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT step, count(*) FROM saga_events WHERE kind = 'action' GROUP BY step")
        return {row[0]: row[1] for row in rows}

    # -- reads -------------------------------------------------------------------

    async def get(self, transaction_id: str) -> SagaRecord | None:
        rows = await self._fetch(f"SELECT {_SAGA_COLUMNS} FROM saga_sagas WHERE transaction_id = $1", transaction_id)
        return saga_from_row(rows[0]) if rows else None

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]:
        rows = await self._fetch(
            f"SELECT {_SAGA_COLUMNS} FROM saga_sagas WHERE $1::text IS NULL OR state = $1 ORDER BY position",
            None if state is None else state.value,
        )
        return [saga_from_row(row) for row in rows]

    async def unfinished(self) -> list[SagaRecord]:
        rows = await self._fetch(f"SELECT {_SAGA_COLUMNS} FROM saga_sagas WHERE {_UNFINISHED} ORDER BY position")
        return [saga_from_row(row) for row in rows]

    async def history(self, transaction_id: str) -> list[Event]:
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM saga_events WHERE transaction_id = $1 ORDER BY seq", transaction_id
        )
        return [event_from_row(transaction_id, tuple(row)) for row in rows]

    async def page(
        self, *, state: SagaState | None = None, limit: int, after: tuple[int, str] | None = None
    ) -> list[SagaRecord]:
        rows = await self._fetch(
            f"SELECT {_SAGA_COLUMNS} FROM saga_sagas WHERE ($1::text IS NULL OR state = $1) "
            # Ids compare byte by byte, as in the other logs, whatever the database's collation.
            'AND ($2::bigint IS NULL OR (created_at_ms, transaction_id COLLATE "C") < ($2::bigint, $3::text)) '
            'ORDER BY created_at_ms DESC, transaction_id COLLATE "C" DESC LIMIT $4',
            None if state is None else state.value,
            None if after is None else after[0],
            None if after is None else after[1],
            limit,
        )
        return [saga_from_row(row) for row in rows]

    async def states(self, transaction_ids: Sequence[str]) -> dict[str, SagaState]:
        rows = await self._fetch(
            "SELECT transaction_id, state FROM saga_sagas WHERE transaction_id = ANY($1::text[])", list(transaction_ids)
        )
        return {row["transaction_id"]: SagaState(row["state"]) for row in rows}

    async def raise_ledger_marks(self, marks: Sequence[LedgerMark]) -> None:
        # One row per service in one statement: ON CONFLICT may touch a row only once.
        highest: dict[str, LedgerMark] = {}
        for mark in marks:
            kept = highest.get(mark.service)
            if kept is None or (kept.generation, kept.position) < (mark.generation, mark.position):
                highest[mark.service] = mark
        if highest:
            values = list(highest.values())
            await self._fetch(
                _RAISE_MARKS,
                [m.service for m in values],
                [m.ledger_id for m in values],
                [m.position for m in values],
                [m.generation for m in values],
            )

    async def ledger_marks(self) -> dict[str, LedgerMark]:
        rows = await self._fetch("SELECT service, ledger_id, position, generation FROM saga_ledger_marks")
        return {row[0]: LedgerMark(*row) for row in rows}

    async def quarantine(self, quarantine: Quarantine) -> bool:
        q = quarantine
        return bool(await self._fetch(_QUARANTINE, q.service, q.reason, q.transaction_id, q.at_ms))

    async def quarantines(self) -> list[Quarantine]:
        rows = await self._fetch(
            "SELECT service, reason, at_ms, transaction_id FROM saga_quarantines "
            "WHERE lifted_at_ms IS NULL ORDER BY seq"
        )
        return [Quarantine(*row) for row in rows]

    async def accept(self, service: str, reason: str, at_ms: int) -> Acceptance | None:
        rows = await self._fetch(_ACCEPT, service, at_ms, reason)
        return Acceptance(service, reason, at_ms, rows[0][0]) if rows else None

    async def acceptances(self) -> list[Acceptance]:
        rows = await self._fetch(
            "SELECT service, lifted_because, lifted_at_ms, reason FROM saga_quarantines "
            "WHERE lifted_at_ms IS NOT NULL ORDER BY lifted_at_ms, seq"
        )
        return [Acceptance(*row) for row in rows]

    async def all_events(self) -> list[Event]:
        """Every event of every saga, in commit order: for auditing the whole log at once."""
        rows = await self._fetch(f"SELECT transaction_id, {EVENT_COLUMNS} FROM saga_events ORDER BY seq")
        return [event_from_row(row[0], tuple(row)[1:]) for row in rows]

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await listener.close(timeout=5)
            except DATABASE_FAILURES:
                listener.terminate()
        await self._pool.close()


def _insert_arguments(saga: SagaRecord) -> tuple[Any, ...]:
    return (
        saga.transaction_id,
        ",".join(saga.source.urls),
        saga.source.user_id,
        ",".join(saga.target.urls),
        saga.target.user_id,
        saga.amount,
        saga.state.value,
        saga.created_at_ms,
        saga.owner,
        saga.epoch,
        saga.lease_expires_at_ms,
        saga.idempotency_key,
        saga.source.service,
        saga.target.service,
        saga.submitted_by,
        saga.deadline_ms,
        saga.code,
    )


def _commit_arguments(change: Change) -> tuple[Any, ...]:
    rows: list[tuple[Any, ...]] = [
        (
            "attempt",
            None,
            a.step,
            a.number,
            a.status,
            a.code,
            a.latency_us,
            a.error,
            a.url,
            a.ledger_id,
            sent_at(change, a),
        )
        for a in change.attempts
    ]
    if change.state is not None:
        rows.append(("state", change.state.value, None, None, None, None, None, change.error, None, None, change.at_ms))
    # One array per column, as unnest() in _COMMIT reads them back into rows.
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(11)]
    return (
        change.transaction_id,
        change.at_ms,
        None if change.state is None else change.state.value,
        change.fence_credit,
        len(change.attempts),
        change.error,
        change.epoch,
        change.owner,
        *columns,
        change.code,
    )


def _act_arguments(saga: SagaRecord, event: Event, effect: Effect) -> tuple[Any, ...]:
    """_ACT's arguments: ``saga`` as the action left it, and the action's event."""
    retried = effect.state is None
    step, code = action_row(event)
    return (
        saga.transaction_id,
        saga.state.value,
        saga.last_error,
        saga.code,
        saga.updated_at_ms,
        saga.owner,
        saga.lease_expires_at_ms,
        None if event.state is None else event.state.value,
        step,
        code,
        event.detail,
        event.owner,
        event.epoch,
        # Claimers wake only for a saga no one holds; its driver, if any, hears the retry.
        retried and saga.owner is None,
        retried,
    )
