"""One contract for every saga log, memory, SQLite and PostgreSQL: history, submission, claims and leases.

The PostgreSQL cases run against a real server, on a fresh database each
(tests/support/postgres.py); they skip with one line where none listens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from saga import AccountRef, MemorySagaLog, SagaRecord, SagaState, SqliteSagaLog
from saga.logs import IdempotencyKeyConflict, LeaseLost, SagaLog, SagaLogError
from saga.logs.postgres import PostgresSagaLog
from saga.records import Attempt, Change, Event
from tests.support.postgres import fresh_database_async

KINDS = ["memory", "sqlite", "postgresql"]
SOURCE = AccountRef("http://a.test", "alice")
TARGET = AccountRef("http://b.test,http://b2.test", "bob")
LEASE_MS = 10_000


@asynccontextmanager
async def opened(kind: str, folder: Path) -> AsyncIterator[SagaLog]:
    if kind == "memory":
        yield MemorySagaLog()
        return
    if kind == "sqlite":
        sqlite = await SqliteSagaLog.open(folder / "saga.db")
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    async with fresh_database_async() as dsn:
        postgres = await PostgresSagaLog.open(dsn)
        try:
            yield postgres
        finally:
            await postgres.close()


def run_on(kind: str, folder: Path, scenario: Callable[[SagaLog], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opened(kind, folder) as log:
            await scenario(log)

    asyncio.run(main())


def record(transaction_id: str, amount: int = 100, *, key: str | None = None, at_ms: int = 1_000) -> SagaRecord:
    return SagaRecord(
        transaction_id, SOURCE, TARGET, amount, created_at_ms=at_ms, updated_at_ms=at_ms, idempotency_key=key
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_saga_is_created_committed_and_replayed_from_its_history(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        leased = record("t1")
        leased.owner, leased.epoch, leased.lease_expires_at_ms = "w1", 1, 1_000 + LEASE_MS
        await log.create(leased, SagaState.DEBITING)
        debit = Attempt("debit", 1, 200, None, 1_500, url="http://a.test", ledger_id="ledger-of-a")
        await log.commit(Change("t1", 1_001, SagaState.CREDITING, attempts=[debit], epoch=1, owner="w1"))
        credit = Attempt("credit", 1, 500, "injected_fault", 900, "boom", "http://b2.test")
        await log.commit(Change("t1", 1_002, attempts=[credit], epoch=1, owner="w1"))
        await log.commit(
            Change("t1", 1_003, SagaState.COMPENSATING, fence_credit=True, error="credit outcome unknown", epoch=1)
        )
        await log.create(record("t2", at_ms=1_010), SagaState.DEBITING)
        await log.commit(Change("t2", 1_011, SagaState.FAILED, attempts=[Attempt("debit", 1, 409, "x", 7)]))

        saga = await log.get("t1")
        assert saga is not None
        assert (saga.state, saga.fence_credit, saga.attempts, saga.last_error, saga.updated_at_ms) == (
            SagaState.COMPENSATING,
            True,
            2,
            "credit outcome unknown",
            1_003,
        )
        assert (saga.source, saga.target, saga.amount, saga.owner, saga.epoch) == (SOURCE, TARGET, 100, "w1", 1)
        assert await log.get("absent") is None
        assert [saga.transaction_id for saga in await log.unfinished()] == ["t1"]
        assert [saga.transaction_id for saga in await log.sagas(SagaState.FAILED)] == ["t2"]
        assert [saga.transaction_id for saga in await log.sagas()] == ["t1", "t2"]
        history = await log.history("t1")
        assert [(event.kind, event.state, event.epoch) for event in history] == [
            ("state", SagaState.PENDING, None),
            ("state", SagaState.DEBITING, 1),
            ("attempt", None, 1),
            ("state", SagaState.CREDITING, 1),
            ("attempt", None, 1),
            ("state", SagaState.COMPENSATING, 1),
        ]
        assert history[2].attempt == debit
        assert history[2].attempt.ledger_id == "ledger-of-a"
        assert history[4].attempt == credit
        assert history[4].owner == "w1"
        assert history[5].detail == "credit outcome unknown"

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_claim_leases_unfinished_sagas_in_order_and_raises_each_epoch(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        for number in range(5):
            await log.submit(record(f"s{number}", at_ms=1_000 + number))
        await log.create(record("done", at_ms=999), SagaState.DEBITING)
        await log.commit(Change("done", 1_000, SagaState.COMPLETED))

        first = await log.claim("w1", limit=3, lease_ms=LEASE_MS, now_ms=2_000)
        assert [(saga.transaction_id, saga.owner, saga.epoch, saga.state) for saga in first] == [
            (f"s{number}", "w1", 1, SagaState.PENDING) for number in range(3)
        ]
        assert {saga.lease_expires_at_ms for saga in first} == {2_000 + LEASE_MS}
        second = await log.claim("w2", limit=10, lease_ms=LEASE_MS, now_ms=2_001)
        assert [saga.transaction_id for saga in second] == ["s3", "s4"]
        assert await log.claim("w3", limit=10, lease_ms=LEASE_MS, now_ms=2_000 + LEASE_MS - 1) == []

        # Once w1's leases run out, another takes them over, one epoch up.
        taken = await log.claim("w3", limit=10, lease_ms=LEASE_MS, now_ms=2_000 + LEASE_MS)
        assert [(saga.transaction_id, saga.owner, saga.epoch) for saga in taken] == [
            (f"s{number}", "w3", 2) for number in range(3)
        ]
        history = await log.history("s0")
        assert [(event.kind, event.owner, event.epoch) for event in history if event.kind == "claim"] == [
            ("claim", "w1", 1),
            ("claim", "w3", 2),
        ]

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_commit_from_a_stale_epoch_raises_lease_lost_and_writes_nothing(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("t"))
        (old,) = await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=2_000)
        await log.commit(Change("t", 2_001, SagaState.DEBITING, epoch=old.epoch, owner="w1"))
        (new,) = await log.claim("w2", limit=1, lease_ms=LEASE_MS, now_ms=2_000 + LEASE_MS)
        assert new.epoch == old.epoch + 1
        before = await log.history("t")

        stale = Change(
            "t", 20_000, SagaState.CREDITING, attempts=[Attempt("debit", 1, 200, None, 5)], epoch=old.epoch, owner="w1"
        )
        with pytest.raises(LeaseLost):
            await log.commit(stale)
        assert await log.history("t") == before
        saga = await log.get("t")
        assert saga is not None
        assert (saga.state, saga.attempts, saga.owner, saga.epoch) == (SagaState.DEBITING, 0, "w2", new.epoch)

        await log.commit(Change("t", 20_001, SagaState.CREDITING, epoch=new.epoch, owner="w2"))
        assert (await log.history("t"))[-1].owner == "w2"

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_renewal_keeps_a_lease_and_reports_the_ones_taken_over(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("kept", at_ms=1))
        await log.submit(record("taken", at_ms=2))
        held = {saga.transaction_id: saga.epoch for saga in await log.claim("w1", limit=2, lease_ms=100, now_ms=0)}
        assert await log.renew("w1", {"kept": held["kept"]}, lease_ms=100, now_ms=90) == set()
        (taken,) = await log.claim("w2", limit=5, lease_ms=100, now_ms=150)
        assert taken.transaction_id == "taken"
        assert await log.renew("w1", held, lease_ms=100, now_ms=160) == {"taken"}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_released_saga_is_claimable_at_once_and_a_stale_release_does_nothing(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("t"))
        (first,) = await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=0)
        assert await log.release("t", first.epoch)
        (second,) = await log.claim("w2", limit=1, lease_ms=LEASE_MS, now_ms=1)
        assert second.epoch == first.epoch + 1
        assert not await log.release("t", first.epoch)
        assert await log.claim("w3", limit=1, lease_ms=LEASE_MS, now_ms=2) == []

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_claim_by_id_takes_that_saga_only(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        for name in ("a", "b"):
            await log.submit(record(name))
        (claimed,) = await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=0, transaction_id="b")
        assert claimed.transaction_id == "b"
        assert await log.claim("w2", limit=1, lease_ms=LEASE_MS, now_ms=0, transaction_id="b") == []

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_submitting_with_a_used_idempotency_key_returns_the_first_saga(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        first, created = await log.submit(record("first", key="k1"))
        assert created
        assert (first.state, first.owner, first.epoch) == (SagaState.PENDING, None, 0)
        again, created_again = await log.submit(record("second", key="k1"))
        assert (again.transaction_id, created_again) == ("first", False)
        with pytest.raises(IdempotencyKeyConflict):
            await log.submit(record("third", amount=5, key="k1"))
        assert [saga.transaction_id for saga in await log.sagas()] == ["first"]
        with pytest.raises(SagaLogError):
            await log.submit(record("first"))

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_submission_and_a_hand_back_wake_the_listeners(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        woken = asyncio.Event()
        await log.listen(woken.set)
        await log.submit(record("t"))
        await asyncio.wait_for(woken.wait(), timeout=10)
        woken.clear()
        (claimed,) = await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=0)
        await log.release("t", claimed.epoch)
        await asyncio.wait_for(woken.wait(), timeout=10)

    run_on(kind, tmp_path, scenario)


def test_sqlite_releases_every_lease_when_a_process_opens_it_to_drive(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.submit(record("t"))
        (claimed,) = await log.claim("dead", limit=1, lease_ms=LEASE_MS, now_ms=0)
        await log.close()
        reader = await SqliteSagaLog.open(tmp_path / "saga.db", exclusive=False)
        assert (await reader.claim("reader", limit=1, lease_ms=LEASE_MS, now_ms=1)) == []
        await reader.close()
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        (again,) = await log.claim("alive", limit=1, lease_ms=LEASE_MS, now_ms=1)
        assert again.epoch == claimed.epoch + 1
        await log.close()

    asyncio.run(scenario())


def test_postgres_claimants_on_separate_connections_never_claim_one_saga_twice() -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            logs = [await PostgresSagaLog.open(dsn, pool_size=4) for _ in range(3)]
            try:
                for number in range(300):
                    await logs[0].submit(record(f"t{number:03d}", at_ms=number))

                async def claimant(log: PostgresSagaLog, owner: str) -> list[str]:
                    mine: list[str] = []
                    while batch := await log.claim(owner, limit=7, lease_ms=LEASE_MS, now_ms=10_000):
                        mine += [saga.transaction_id for saga in batch]
                    return mine

                shares = await asyncio.gather(*(claimant(logs[i % 3], f"w{i}") for i in range(6)))
                claimed = [transaction_id for share in shares for transaction_id in share]
                assert sorted(claimed) == [f"t{number:03d}" for number in range(300)]
                assert sum(1 for share in shares if share) > 1
            finally:
                for log in logs:
                    await log.close()

    asyncio.run(scenario())


def test_postgres_refuses_a_schema_newer_than_the_code() -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            log = await PostgresSagaLog.open(dsn)
            await log.close()
            import asyncpg

            connection = await asyncpg.connect(dsn)
            await connection.execute("INSERT INTO saga_log_schema (version) VALUES (999)")
            await connection.close()
            with pytest.raises(SagaLogError, match="newer than this code"):
                await PostgresSagaLog.open(dsn)

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", KINDS)
def test_every_event_keeps_who_committed_it_and_under_which_epoch(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        leased = record("t")
        leased.owner, leased.epoch, leased.lease_expires_at_ms = "w1", 3, 1_000 + LEASE_MS
        await log.create(leased, SagaState.DEBITING)
        debit = Attempt("debit", 1, 200, None, 1_500, "slow", "http://a.test", "ledger-a")
        credit = Attempt("credit", 2, 503, "unavailable", 900, "retrying", "http://b2.test", None)
        await log.commit(
            Change("t", 1_001, SagaState.CREDITING, attempts=[debit, credit], error="why", epoch=3, owner="w1")
        )
        await log.commit(Change("t", 1_002, fence_credit=True, epoch=3, owner="w1"))

        assert await log.history("t") == [
            Event("t", 1_000, "state", SagaState.PENDING),
            Event("t", 1_000, "state", SagaState.DEBITING, owner="w1", epoch=3),
            Event("t", 1_001, "attempt", attempt=debit, owner="w1", epoch=3),
            Event("t", 1_001, "attempt", attempt=credit, owner="w1", epoch=3),
            Event("t", 1_001, "state", SagaState.CREDITING, detail="why", owner="w1", epoch=3),
        ]
        saga = await log.get("t")
        assert saga is not None
        assert (saga.state, saga.fence_credit, saga.attempts, saga.last_error, saga.updated_at_ms) == (
            SagaState.CREDITING,
            True,
            2,
            "why",
            1_002,
        )
        assert (saga.owner, saga.epoch, saga.lease_expires_at_ms) == ("w1", 3, 1_000 + LEASE_MS)

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("end", [SagaState.COMPLETED, SagaState.FAILED])
def test_a_saga_that_ends_gives_up_its_lease_and_one_still_running_keeps_it(
    kind: str, end: SagaState, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        for name in ("ends", "runs"):
            await log.submit(record(name))
            await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=2_000, transaction_id=name)
            await log.commit(Change(name, 2_001, SagaState.DEBITING, epoch=1, owner="w1"))
        await log.commit(Change("ends", 2_002, end, epoch=1, owner="w1"))
        await log.commit(Change("runs", 2_002, SagaState.CREDITING, epoch=1, owner="w1"))

        ended, running = await log.get("ends"), await log.get("runs")
        assert ended is not None
        assert running is not None
        assert (ended.state, ended.owner, ended.epoch, ended.lease_expires_at_ms) == (end, None, 1, 0)
        assert (running.state, running.owner, running.epoch, running.lease_expires_at_ms) == (
            SagaState.CREDITING,
            "w1",
            1,
            2_000 + LEASE_MS,
        )
        # Ended, it is no one's and never claimable again; the running one stays w1's until its lease expires.
        assert await log.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=2_000 + LEASE_MS - 1) == []
        assert [saga.transaction_id for saga in await log.claim("w2", limit=5, lease_ms=1, now_ms=99_999)] == ["runs"]

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_lease_lost_names_the_saga_and_the_stale_epoch(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("t"))
        await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=0)
        await log.claim("w2", limit=1, lease_ms=LEASE_MS, now_ms=LEASE_MS)
        with pytest.raises(LeaseLost) as lost:
            await log.commit(Change("t", LEASE_MS + 1, SagaState.DEBITING, epoch=1, owner="w1"))
        assert (lost.value.transaction_id, lost.value.epoch) == ("t", 1)
        assert str(lost.value) == "saga t is no longer held at epoch 1: another orchestrator took it over"

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_commit_all_writes_several_changes_of_one_saga_in_order(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("t"))
        await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=0)
        debit = Attempt("debit", 1, 200, None, 5, url="http://a.test", ledger_id="ledger-a")
        await log.commit_all(
            [
                Change("t", 10, SagaState.DEBITING, epoch=1, owner="w1"),
                Change("t", 11, SagaState.CREDITING, attempts=[debit], epoch=1, owner="w1"),
                Change("t", 12, fence_credit=True, error="credit outcome unknown", epoch=1, owner="w1"),
            ]
        )
        saga = await log.get("t")
        assert saga is not None
        assert (saga.state, saga.fence_credit, saga.attempts, saga.last_error, saga.updated_at_ms) == (
            SagaState.CREDITING,
            True,
            1,
            "credit outcome unknown",
            12,
        )
        assert [event for event in await log.history("t") if event.kind != "claim"][1:] == [
            Event("t", 10, "state", SagaState.DEBITING, owner="w1", epoch=1),
            Event("t", 11, "attempt", attempt=debit, owner="w1", epoch=1),
            Event("t", 11, "state", SagaState.CREDITING, owner="w1", epoch=1),
        ]

        # Taken over: a stale group of changes writes none of them.
        await log.claim("w2", limit=1, lease_ms=LEASE_MS, now_ms=LEASE_MS)
        before = await log.history("t")
        with pytest.raises(LeaseLost) as lost:
            await log.commit_all(
                [
                    Change("t", 20, SagaState.COMPENSATING, attempts=[debit], epoch=1, owner="w1"),
                    Change("t", 21, SagaState.FAILED, epoch=1, owner="w1"),
                ]
            )
        assert (lost.value.transaction_id, lost.value.epoch) == ("t", 1)
        assert await log.history("t") == before
        after = await log.get("t")
        assert after is not None
        assert (after.state, after.attempts, after.owner, after.epoch) == (SagaState.CREDITING, 1, "w2", 2)

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_claimed_saga_reads_back_with_its_lease_and_idempotency_key(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("t", key="k-1"))
        (claimed,) = await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=500)
        read = await log.get("t")
        for saga in (claimed, read):
            assert saga is not None
            assert (saga.owner, saga.epoch, saga.lease_expires_at_ms, saga.idempotency_key) == (
                "w1",
                1,
                500 + LEASE_MS,
                "k-1",
            )
            assert (saga.state, saga.fence_credit, saga.attempts, saga.last_error) == (
                SagaState.PENDING,
                False,
                0,
                None,
            )
            assert (saga.created_at_ms, saga.updated_at_ms, saga.source, saga.target) == (1_000, 1_000, SOURCE, TARGET)

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_commits_of_several_sagas_fail_only_the_stale_one(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        for name in ("a", "stale", "c"):
            await log.submit(record(name))
        await log.claim("w1", limit=3, lease_ms=LEASE_MS, now_ms=0)
        await log.claim("w2", limit=1, lease_ms=LEASE_MS, now_ms=LEASE_MS, transaction_id="stale")
        debit = Attempt("debit", 1, 200, None, 5)
        results = await asyncio.gather(
            *(
                log.commit(Change(name, LEASE_MS + 1, SagaState.CREDITING, attempts=[debit], epoch=1, owner="w1"))
                for name in ("a", "stale", "c")
            ),
            return_exceptions=True,
        )
        first, stale, third = results
        assert (first, third) == (None, None)
        assert isinstance(stale, LeaseLost)
        assert (stale.transaction_id, stale.epoch) == ("stale", 1)
        states = {saga.transaction_id: (saga.state, saga.attempts) for saga in await log.sagas()}
        assert states == {"a": (SagaState.CREDITING, 1), "stale": (SagaState.PENDING, 0), "c": (SagaState.CREDITING, 1)}
        assert [event.kind for event in await log.history("stale")] == ["state", "claim", "claim"]

    run_on(kind, tmp_path, scenario)
