"""The durable saga log: write-ahead records survive reopening, commits are grouped, bad files are refused."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from saga import (
    AccountRef,
    MemorySagaLog,
    Orchestrator,
    RetryPolicy,
    SagaLogError,
    SagaRecord,
    SagaState,
    SqliteSagaLog,
)
from saga.logs import SagaLog
from saga.records import Attempt, Change
from saga.run import TransferResult
from tests.in_process.test_saga_workflow import ScriptedTransport, bank, ledger, steps

SOURCE = AccountRef("http://a.test", "alice")
TARGET = AccountRef("http://b.test", "bob")


def record(transaction_id: str, amount: int = 100) -> SagaRecord:
    return SagaRecord(transaction_id, SOURCE, TARGET, amount, created_at_ms=1_000, updated_at_ms=1_000)


async def write_history(log: SagaLog) -> None:
    await log.create(record("t1"), SagaState.DEBITING)
    await log.commit(Change("t1", 1_001, SagaState.CREDITING, attempts=[Attempt("debit", 1, 200, None, 1_500)]))
    await log.commit(Change("t1", 1_002, attempts=[Attempt("credit", 1, 500, "injected_fault", 900)]))
    await log.commit(Change("t1", 1_003, SagaState.COMPENSATING, fence_credit=True, error="credit outcome unknown"))
    await log.create(record("t2"), SagaState.DEBITING)
    await log.commit(
        Change("t2", 1_004, SagaState.FAILED, attempts=[Attempt("debit", 1, 409, "insufficient_funds", 7)])
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_history_and_state(kind: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        log: SagaLog = MemorySagaLog() if kind == "memory" else await SqliteSagaLog.open(tmp_path / "saga.db")
        await write_history(log)
        saga = await log.get("t1")
        assert saga is not None
        assert (saga.state, saga.fence_credit, saga.attempts, saga.last_error) == (
            SagaState.COMPENSATING,
            True,
            2,
            "credit outcome unknown",
        )
        assert [saga.transaction_id for saga in await log.unfinished()] == ["t1"]
        assert [saga.transaction_id for saga in await log.sagas(SagaState.FAILED)] == ["t2"]
        history = await log.history("t1")
        assert [(event.kind, event.state, event.attempt.code if event.attempt else None) for event in history] == [
            ("state", SagaState.PENDING, None),
            ("state", SagaState.DEBITING, None),
            ("attempt", None, None),
            ("state", SagaState.CREDITING, None),
            ("attempt", None, "injected_fault"),
            ("state", SagaState.COMPENSATING, None),
        ]
        await log.close()

    asyncio.run(scenario())


def test_sqlite_log_survives_reopening(tmp_path: Path) -> None:
    async def write() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await write_history(log)
        await log.close()

    async def read() -> SagaRecord | None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db", create=False)
        try:
            return await log.get("t1")
        finally:
            await log.close()

    asyncio.run(write())
    reopened = asyncio.run(read())
    assert reopened is not None
    assert (reopened.state, reopened.source, reopened.target, reopened.amount) == (
        SagaState.COMPENSATING,
        SOURCE,
        TARGET,
        100,
    )


def test_sqlite_log_uses_wal_and_full_sync(tmp_path: Path) -> None:
    import sqlite3

    asyncio.run(_open_and_close(tmp_path / "saga.db"))
    with sqlite3.connect(tmp_path / "saga.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def _open_and_close(path: Path) -> None:
    log = await SqliteSagaLog.open(path)
    await log.close()


def test_concurrent_sagas_share_commits(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await asyncio.gather(*(log.create(record(f"t{i}"), SagaState.DEBITING) for i in range(200)))
        await log.close()
        return log.commits, log.changes_committed

    commits, changes = asyncio.run(scenario())
    assert changes == 201  # 200 sagas and the closing flush
    assert commits < 50, f"200 concurrent creates took {commits} commits"


def test_one_bad_change_does_not_fail_the_changes_batched_with_it(tmp_path: Path) -> None:
    async def scenario() -> list[BaseException | None]:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("dup"), SagaState.DEBITING)
        results = await asyncio.gather(
            log.create(record("dup"), SagaState.DEBITING),
            *(log.create(record(f"ok{i}"), SagaState.DEBITING) for i in range(5)),
            return_exceptions=True,
        )
        assert len(await log.sagas()) == 6
        await log.close()
        return list(results)

    results = asyncio.run(scenario())
    assert isinstance(results[0], SagaLogError)
    assert results[1:] == [None] * 5


def test_a_missing_log_is_refused_when_it_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SagaLogError, match="no saga log"):
        asyncio.run(SqliteSagaLog.open(tmp_path / "absent.db", create=False))


def test_a_corrupt_log_is_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SagaLogError, match="not a usable saga log"):
        asyncio.run(SqliteSagaLog.open(corrupt, create=False))


def test_amounts_must_be_positive_integers_in_the_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        try:
            with pytest.raises(SagaLogError):
                await log.create(record("t1", amount=0), SagaState.DEBITING)
        finally:
            await log.close()

    asyncio.run(scenario())


def test_retry_delays_back_off_to_the_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(
        maximum_attempts=6, initial_interval=0.1, backoff_coefficient=2.0, maximum_interval=0.5, jitter=0.2
    )
    rng = random.Random(1)
    assert policy.delay_before(1, rng) == 0.0
    delays = [policy.delay_before(attempt, rng) for attempt in range(2, 7)]
    for delay, nominal in zip(delays, [0.1, 0.2, 0.4, 0.5, 0.5], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    assert policy.allows(6)
    assert not policy.allows(7)
    assert RetryPolicy(maximum_attempts=None).allows(10_000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"maximum_attempts": 0},
        {"initial_interval": -1.0},
        {"initial_interval": 2.0, "maximum_interval": 1.0},
        {"backoff_coefficient": 0.5},
        {"jitter": 1.5},
        {"request_timeout": 0.0},
        {"request_timeout": float("nan")},
        {"request_timeout": float("inf")},
    ],
)
def test_invalid_retry_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_one_orchestrator_process_at_a_time_holds_a_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = await SqliteSagaLog.open(tmp_path / "saga.db")
        with pytest.raises(SagaLogError, match="in use by another orchestrator"):
            await SqliteSagaLog.open(tmp_path / "saga.db")
        reader = await SqliteSagaLog.open(tmp_path / "saga.db", create=False, exclusive=False)
        assert await reader.sagas() == []
        await reader.close()
        await first.close()
        again = await SqliteSagaLog.open(tmp_path / "saga.db")
        await again.close()

    asyncio.run(scenario())


REPLICATED_SOURCE = AccountRef(("http://a1.test", "http://a2.test"), "alice")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_log_keeps_every_url_of_a_service_and_each_attempts_url(kind: str, tmp_path: Path) -> None:
    async def scenario() -> tuple[SagaRecord | None, list[str | None]]:
        log: SagaLog = MemorySagaLog() if kind == "memory" else await SqliteSagaLog.open(tmp_path / "saga.db")
        saga = SagaRecord("t1", REPLICATED_SOURCE, TARGET, 100, created_at_ms=1_000, updated_at_ms=1_000)
        await log.create(saga, SagaState.DEBITING)
        attempts = [
            Attempt("debit", 1, None, None, 80, "unreachable: ConnectError", "http://a1.test"),
            Attempt("debit", 1, 200, None, 900, None, "http://a2.test"),
        ]
        await log.commit(Change("t1", 1_001, attempts=attempts))
        (unfinished,) = await log.unfinished()
        urls = [event.attempt.url for event in await log.history("t1") if event.attempt]
        await log.close()
        return unfinished, urls

    unfinished, urls = asyncio.run(scenario())
    assert unfinished is not None
    assert (unfinished.source.urls, unfinished.target.urls) == (
        ("http://a1.test", "http://a2.test"),
        ("http://b.test",),
    )
    assert urls == ["http://a1.test", "http://a2.test"]


#: The schema of a saga log written when every service had exactly one URL.
ONE_URL_SCHEMA = """
CREATE TABLE sagas (
    transaction_id TEXT PRIMARY KEY, source_url TEXT NOT NULL, source_user TEXT NOT NULL,
    target_url TEXT NOT NULL, target_user TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL, fence_credit INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX sagas_by_state ON sagas (state);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, transaction_id TEXT NOT NULL REFERENCES sagas (transaction_id),
    at_ms INTEGER NOT NULL, kind TEXT NOT NULL, state TEXT, step TEXT, attempt INTEGER, status INTEGER,
    code TEXT, latency_us INTEGER, detail TEXT
);
INSERT INTO sagas VALUES ('old', 'http://a.test', 'alice', 'http://b.test', 'bob', 100, 'CREDITING', 0, 1, 2, 1, NULL);
INSERT INTO events (transaction_id, at_ms, kind, step, attempt, status, code, latency_us, detail)
    VALUES ('old', 2, 'attempt', 'debit', 1, 200, NULL, 500, NULL);
"""


def test_a_log_from_before_several_urls_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "saga.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(ONE_URL_SCHEMA)

    async def reopen_and_continue() -> tuple[list[SagaRecord], list[Attempt]]:
        log = await SqliteSagaLog.open(path, create=False)
        try:
            await log.commit(Change("old", 3, attempts=[Attempt("credit", 1, 200, None, 700, None, "http://b.test")]))
            return await log.unfinished(), [event.attempt for event in await log.history("old") if event.attempt]
        finally:
            await log.close()

    unfinished, attempts = asyncio.run(reopen_and_continue())
    assert [(saga.transaction_id, saga.state, saga.source, saga.target) for saga in unfinished] == [
        ("old", SagaState.CREDITING, SOURCE, TARGET)
    ]
    assert [(attempt.step, attempt.url) for attempt in attempts] == [("debit", None), ("credit", "http://b.test")]
    # A second opening finds nothing left to upgrade.
    assert len(asyncio.run(reopen_and_continue())[1]) == 3


def test_a_saga_from_a_log_written_before_leases_is_recovered_as_a_resumed_saga(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "saga.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(ONE_URL_SCHEMA)
        connection.execute("UPDATE sagas SET state = 'DEBITING', source_url = target_url, attempts = 0")
        connection.execute("DELETE FROM events")
    # The old version's run debited alice, then crashed before it logged the answer.
    service = bank(token="s3cret")
    ledger(service).execute("debit", "old", "alice", 100)

    async def recover_without_the_token() -> tuple[TransferResult, SagaRecord | None]:
        log = await SqliteSagaLog.open(path, create=False)
        try:
            (result,) = await Orchestrator(log, transport=ScriptedTransport(service)).recover()
            return result, await log.get("old")
        finally:
            await log.close()

    result, saga = asyncio.run(recover_without_the_token())
    assert saga is not None
    assert saga.epoch == 2, "the old version's run was the first"
    # A resumed saga reads the trail first, and a 401 there sends it to compensating.
    assert steps(result)[0] == ("compensate_credit", 401)
    # A 401 says nothing of the debit the old run sent: the saga waits to give it back.
    assert result.state is SagaState.COMPENSATING
    assert ledger(service).balance("alice") == 900
