"""What a commit to the saga log writes, field by field, on both logs; how the SQLite log counts and groups commits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from saga import AccountRef, MemorySagaLog, SagaLogError, SagaRecord, SagaState, SqliteSagaLog
from saga.logs import SagaLog
from saga.logs import sqlite as sqlite_log
from saga.records import Attempt, Change, Event

SOURCE = AccountRef(("http://a1.test", "http://a2.test"), "alice")
TARGET = AccountRef(("http://b1.test", "http://b2.test"), "bob")


async def open_log(kind: str, folder: Path) -> SagaLog:
    return MemorySagaLog() if kind == "memory" else await SqliteSagaLog.open(folder / "saga.db")


def record(transaction_id: str) -> SagaRecord:
    return SagaRecord(transaction_id, SOURCE, TARGET, 250, created_at_ms=1_000, updated_at_ms=1_000)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_saga_reads_back_with_every_field_as_committed(kind: str, tmp_path: Path) -> None:
    debit = Attempt("debit", 1, 200, None, 1_500, None, "http://a1.test")
    credit = Attempt("credit", 2, 500, "injected_fault", 900, "retrying", "http://b2.test")

    async def scenario() -> tuple[SagaRecord | None, SagaRecord | None, list[Event]]:
        log = await open_log(kind, tmp_path)
        await log.create(record("t1"), SagaState.DEBITING)
        fresh = await log.get("t1")
        await log.commit(Change("t1", 1_005, SagaState.CREDITING, attempts=[debit]))
        await log.commit(Change("t1", 1_007, attempts=[credit], error="credit 500 injected_fault"))
        await log.commit(Change("t1", 1_009, SagaState.COMPENSATING, fence_credit=True, error="credit outcome unknown"))
        await log.commit(Change("t1", 1_011, fence_credit=False))
        later = await log.get("t1")
        history = await log.history("t1")
        await log.close()
        return fresh, later, history

    fresh, later, history = asyncio.run(scenario())
    assert fresh == SagaRecord(
        "t1", SOURCE, TARGET, 250, SagaState.DEBITING, False, 1_000, 1_000, attempts=0, last_error=None
    )
    assert later == SagaRecord(
        "t1",
        SOURCE,
        TARGET,
        250,
        SagaState.COMPENSATING,
        fence_credit=False,
        created_at_ms=1_000,
        updated_at_ms=1_011,
        attempts=2,
        last_error="credit outcome unknown",
    )
    assert history == [
        Event("t1", 1_000, "state", SagaState.PENDING),
        Event("t1", 1_000, "state", SagaState.DEBITING, epoch=0),
        Event("t1", 1_005, "attempt", attempt=debit),
        Event("t1", 1_005, "state", SagaState.CREDITING),
        Event("t1", 1_007, "attempt", attempt=credit),
        Event("t1", 1_009, "state", SagaState.COMPENSATING, detail="credit outcome unknown"),
    ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_fence_is_kept_until_a_change_lifts_it_and_states_are_listed_by_what_they_are(
    kind: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        log = await open_log(kind, tmp_path)
        await log.create(record("t1"), SagaState.DEBITING)
        await log.create(record("t2"), SagaState.DEBITING)
        await log.commit(Change("t1", 1_001, SagaState.COMPENSATING, fence_credit=True))
        await log.commit(Change("t1", 1_002, attempts=[Attempt("compensate_credit", 1, None, None, 5)]))
        fenced = await log.get("t1")
        assert fenced is not None
        assert (fenced.fence_credit, fenced.attempts, fenced.updated_at_ms) == (True, 1, 1_002)
        await log.commit(Change("t2", 1_003, SagaState.COMPLETED))
        assert [saga.transaction_id for saga in await log.sagas(SagaState.COMPENSATING)] == ["t1"]
        assert [saga.transaction_id for saga in await log.sagas()] == ["t1", "t2"]
        assert [saga.transaction_id for saga in await log.unfinished()] == ["t1"]
        assert await log.get("absent") is None
        assert await log.history("absent") == []
        await log.close()

    asyncio.run(scenario())


def test_a_copy_read_from_the_memory_log_is_not_the_log_itself() -> None:
    async def scenario() -> None:
        log = MemorySagaLog()
        saga = record("t1")
        await log.create(saga, SagaState.DEBITING)
        saga.state = SagaState.FAILED
        read = await log.get("t1")
        assert read is not None
        read.state = SagaState.COMPLETED
        again = await log.get("t1")
        assert again is not None
        assert again.state is SagaState.DEBITING
        with pytest.raises(SagaLogError, match="saga t1 already exists"):
            await log.create(record("t1"), SagaState.DEBITING)
        assert log.commits == 1
        await log.commit(Change("t1", 1_001, SagaState.CREDITING))
        await log.commit(Change("t1", 1_002, SagaState.COMPLETED))
        assert log.commits == 3

    asyncio.run(scenario())


def test_the_sqlite_log_counts_every_commit_and_every_change(tmp_path: Path) -> None:
    async def scenario() -> SqliteSagaLog:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("t1"), SagaState.DEBITING)
        await log.commit(Change("t1", 1_001, SagaState.CREDITING))
        await log.commit(Change("t1", 1_002, SagaState.COMPLETED))
        assert (log.commits, log.changes_committed) == (3, 3)
        await log.close()
        return log

    log = asyncio.run(scenario())
    assert (log.commits, log.changes_committed) == (4, 4), "closing flushes with one more, empty, commit"


def test_a_closed_sqlite_log_refuses_commits(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("t1"), SagaState.DEBITING)
        await log.close()
        await log.close()
        with pytest.raises(SagaLogError, match=r"^the saga log is closed$"):
            await log.commit(Change("t1", 1_001, SagaState.CREDITING))

    asyncio.run(scenario())


@pytest.mark.parametrize("bad_first", [True, False])
def test_a_bad_change_batched_with_one_good_one_fails_alone(tmp_path: Path, bad_first: bool) -> None:
    async def scenario() -> list[BaseException | None]:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("dup"), SagaState.DEBITING)
        changes = [log.create(record("dup"), SagaState.DEBITING), log.create(record("ok"), SagaState.DEBITING)]
        results = await asyncio.gather(*(changes if bad_first else changes[::-1]), return_exceptions=True)
        assert [saga.transaction_id for saga in await log.sagas()] == ["dup", "ok"]
        await log.close()
        return list(results if bad_first else results[::-1])

    bad, good = asyncio.run(scenario())
    assert good is None
    assert isinstance(bad, SagaLogError)
    assert str(bad) == "saga log commit failed: UNIQUE constraint failed: sagas.transaction_id"


def test_a_single_bad_change_fails_with_the_databases_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("dup"), SagaState.DEBITING)
        with pytest.raises(
            SagaLogError, match=r"^saga log commit failed: UNIQUE constraint failed: sagas\.transaction_id$"
        ):
            await log.create(record("dup"), SagaState.DEBITING)
        assert (log.commits, log.changes_committed) == (2, 1)
        # The log goes on committing after a failed change.
        await log.commit(Change("dup", 1_001, SagaState.CREDITING))
        saga = await log.get("dup")
        assert saga is not None
        assert saga.state is SagaState.CREDITING
        await log.close()

    asyncio.run(scenario())


def test_a_reopened_sqlite_log_reads_back_every_field_and_event_as_committed(tmp_path: Path) -> None:
    debit = Attempt("debit", 1, 200, None, 1_500, None, "http://a1.test", "ledger-a")
    credit = Attempt("credit", 1, 503, "unavailable", 900, "retrying", "http://b2.test", "ledger-b")
    leased = SagaRecord("t1", SOURCE, TARGET, 250, created_at_ms=1_000, updated_at_ms=1_000, idempotency_key="key-1")
    leased.owner, leased.epoch, leased.lease_expires_at_ms = "w1", 2, 9_000

    async def write() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(leased, SagaState.DEBITING)
        await log.commit_all(
            [
                Change("t1", 1_005, SagaState.CREDITING, attempts=[debit], epoch=2, owner="w1"),
                Change("t1", 1_007, attempts=[credit], fence_credit=True, error="credit unknown", epoch=2, owner="w1"),
            ]
        )
        await log.close()

    async def read(exclusive: bool) -> tuple[SagaRecord | None, list[Event]]:
        log = await SqliteSagaLog.open(tmp_path / "saga.db", create=False, exclusive=exclusive)
        try:
            return await log.get("t1"), await log.history("t1")
        finally:
            await log.close()

    asyncio.run(write())
    saga, history = asyncio.run(read(exclusive=False))
    expected = SagaRecord(
        "t1",
        SOURCE,
        TARGET,
        250,
        SagaState.CREDITING,
        fence_credit=True,
        created_at_ms=1_000,
        updated_at_ms=1_007,
        attempts=2,
        last_error="credit unknown",
        owner="w1",
        epoch=2,
        lease_expires_at_ms=9_000,
        idempotency_key="key-1",
    )
    assert saga == expected
    assert history == [
        Event("t1", 1_000, "state", SagaState.PENDING),
        Event("t1", 1_000, "state", SagaState.DEBITING, owner="w1", epoch=2),
        Event("t1", 1_005, "attempt", attempt=debit, owner="w1", epoch=2),
        Event("t1", 1_005, "state", SagaState.CREDITING, owner="w1", epoch=2),
        Event("t1", 1_007, "attempt", attempt=credit, owner="w1", epoch=2),
    ]
    # Opened to drive sagas, the log frees the leases of the process that is gone, and keeps their epochs.
    driven, _ = asyncio.run(read(exclusive=True))
    expected.owner, expected.lease_expires_at_ms = None, 0
    assert driven == expected


def test_a_failed_group_write_fails_each_bad_change_with_its_reason_and_the_log_goes_on(tmp_path: Path) -> None:
    attempt = Attempt("debit", 1, 200, None, 5)

    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("t1"), SagaState.DEBITING)
        results = await asyncio.gather(
            log.commit(Change("ghost", 1_001, SagaState.CREDITING, attempts=[attempt])),
            log.commit_all([Change("t1", 1_001, SagaState.CREDITING, attempts=[attempt])]),
            log.commit_all([Change("t1", 1_002, fence_credit=True), Change("phantom", 1_002, SagaState.FAILED)]),
            return_exceptions=True,
        )
        ghost, good, half_bad = results
        assert good is None
        for failed in (ghost, half_bad):
            assert isinstance(failed, SagaLogError)
            assert str(failed) == "saga log commit failed: FOREIGN KEY constraint failed"
        saga = await log.get("t1")
        assert saga is not None
        # The group that failed wrote none of its changes, its good first one included.
        assert (saga.state, saga.attempts, saga.fence_credit, saga.updated_at_ms) == (
            SagaState.CREDITING,
            1,
            False,
            1_001,
        )
        assert await log.get("ghost") is None
        assert await log.history("ghost") == []
        assert (log.commits, log.changes_committed) == (2, 2)
        await log.commit(Change("t1", 1_003, SagaState.COMPLETED))
        done = await log.get("t1")
        assert done is not None
        assert done.state is SagaState.COMPLETED
        await log.close()

    asyncio.run(scenario())


def test_a_write_failing_in_a_way_the_writer_does_not_expect_fails_its_sagas_and_the_log_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_batch = sqlite_log._write_batch
    failures = iter([RuntimeError("the disk went away")])

    def write_batch_failing_once(*args: object) -> object:
        for failure in failures:
            raise failure
        return real_write_batch(*args)  # type: ignore[arg-type]

    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.create(record("t1"), SagaState.DEBITING)
        monkeypatch.setattr(sqlite_log, "_write_batch", write_batch_failing_once)
        first, second = await asyncio.wait_for(
            asyncio.gather(
                log.commit(Change("t1", 1_001, SagaState.CREDITING)),
                log.commit(Change("t1", 1_001, fence_credit=True)),
                return_exceptions=True,
            ),
            timeout=10,
        )
        for failed in (first, second):
            assert isinstance(failed, SagaLogError)
            assert str(failed) == "saga log commit failed: the disk went away"
        await asyncio.wait_for(log.commit(Change("t1", 1_002, SagaState.COMPLETED)), timeout=10)
        saga = await log.get("t1")
        assert saga is not None
        assert (saga.state, saga.fence_credit, saga.updated_at_ms) == (SagaState.COMPLETED, False, 1_002)
        await log.close()

    asyncio.run(scenario())
