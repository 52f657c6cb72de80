"""One contract for every saga log, memory, SQLite and PostgreSQL: history, submission, claims and leases.

The PostgreSQL cases run against a real server, on a fresh database each
(tests/support/postgres.py); they skip with one line where none listens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from saga import AccountRef, MemorySagaLog, SagaRecord, SagaState, SqliteSagaLog
from saga.ledgers import Acceptance, LedgerMark, Quarantine
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


NAMED_SOURCE = AccountRef("http://a.test", "alice", "bank-a")
NAMED_TARGET = AccountRef("http://b.test,http://b2.test", "bob", "bank-b")


def named(
    transaction_id: str,
    *,
    by: str | None = "api-a",
    key: str | None = None,
    at_ms: int = 1_000,
    source: AccountRef = NAMED_SOURCE,
    target: AccountRef = NAMED_TARGET,
) -> SagaRecord:
    """A saga between named services, as the transfers service submits it for the API caller ``by``."""
    return SagaRecord(
        transaction_id,
        source,
        target,
        100,
        created_at_ms=at_ms,
        updated_at_ms=at_ms,
        idempotency_key=key,
        submitted_by=by,
    )


#: A saga's service names and URLs, each side, and its submitter.
Carried = tuple[str | None, tuple[str, ...], str | None, tuple[str, ...], str | None]


def carried(saga: SagaRecord) -> Carried:
    """What a saga says of its services and its submitter."""
    return saga.source.service, saga.source.urls, saga.target.service, saga.target.urls, saga.submitted_by


NAMED_BY_A: Carried = ("bank-a", ("http://a.test",), "bank-b", ("http://b.test", "http://b2.test"), "api-a")
NAMED_BY_B: Carried = ("bank-a", ("http://a.test",), "bank-b", ("http://b.test", "http://b2.test"), "api-b")
UNNAMED: Carried = (None, ("http://a.test",), None, ("http://b.test", "http://b2.test"), None)


@pytest.mark.parametrize("kind", KINDS)
def test_service_names_and_the_submitter_read_back_through_every_read_of_every_log(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        submitted, created = await log.submit(named("submitted", by="api-a", key="k", at_ms=1_000))
        assert created
        assert carried(submitted) == NAMED_BY_A
        await log.create(named("created", by="api-b", at_ms=1_001), SagaState.DEBITING)
        await log.submit(record("plain", at_ms=1_002))
        expected = {"submitted": NAMED_BY_A, "created": NAMED_BY_B, "plain": UNNAMED}

        for transaction_id, carries in expected.items():
            saga = await log.get(transaction_id)
            assert saga is not None
            assert carried(saga) == carries, transaction_id
        assert {saga.transaction_id: carried(saga) for saga in await log.sagas()} == expected
        assert {saga.transaction_id: carried(saga) for saga in await log.unfinished()} == expected
        assert {saga.transaction_id: carried(saga) for saga in await log.page(limit=10)} == expected
        (debiting,) = await log.page(state=SagaState.DEBITING, limit=10)
        assert carried(debiting) == NAMED_BY_B
        claimed = await log.claim("w1", limit=10, lease_ms=LEASE_MS, now_ms=2_000)
        assert {saga.transaction_id: carried(saga) for saga in claimed} == expected
        # A commit changes the saga's state, never who it is between or who asked for it.
        await log.commit(Change("submitted", 2_001, SagaState.COMPLETED, epoch=1, owner="w1"))
        after_commit = await log.get("submitted")
        assert after_commit is not None
        assert carried(after_commit) == NAMED_BY_A

    run_on(kind, tmp_path, scenario)


def test_sqlite_reads_service_names_and_the_submitter_back_after_a_reopening(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.submit(named("submitted", by="api-a", key="k"))
        await log.create(named("created", by="api-b", at_ms=1_001), SagaState.DEBITING)
        await log.close()

        reopened = await SqliteSagaLog.open(tmp_path / "saga.db", exclusive=False)
        try:
            assert [(saga.transaction_id, carried(saga)) for saga in await reopened.page(limit=10)] == [
                ("created", NAMED_BY_B),
                ("submitted", NAMED_BY_A),
            ]
            again, created = await reopened.submit(named("again", by="api-a", key="k"))
            assert (again.transaction_id, created, carried(again)) == ("submitted", False, NAMED_BY_A)
        finally:
            await reopened.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", KINDS)
def test_a_page_lists_the_newest_first_breaking_ties_by_the_transaction_id_descending(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        # Submitted neither in time order nor in id order, so that neither can pass for the listing's.
        for transaction_id, at_ms in (("c", 2_000), ("a", 1_000), ("e", 2_000), ("b", 3_000), ("d", 2_000)):
            await log.submit(record(transaction_id, at_ms=at_ms))

        assert [saga.transaction_id for saga in await log.page(limit=10)] == ["b", "e", "d", "c", "a"]
        assert [saga.transaction_id for saga in await log.page(limit=2)] == ["b", "e"]
        assert [saga.transaction_id for saga in await log.page(limit=10, after=(2_000, "d"))] == ["c", "a"]
        assert [saga.transaction_id for saga in await log.page(limit=1, after=(3_000, "b"))] == ["e"]
        # The cursor is a position, not a saga: one that the log never held still marks where to go on.
        assert [saga.transaction_id for saga in await log.page(limit=10, after=(2_000, "cz"))] == ["c", "a"]
        assert await log.page(limit=10, after=(1_000, "a")) == []

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_walking_the_pages_with_after_visits_every_saga_exactly_once_newest_first(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        numbers = [7, 2, 10, 0, 5, 9, 1, 4, 8, 3, 6]
        for number in numbers:
            # Only three distinct times among eleven sagas: most of the order rests on the tie-break.
            await log.submit(record(f"s{number:02d}", at_ms=1_000 + number % 3))
        newest_first = sorted(
            ((1_000 + number % 3, f"s{number:02d}") for number in numbers),
            reverse=True,
        )

        walked: list[tuple[int, str]] = []
        sizes: list[int] = []
        after: tuple[int, str] | None = None
        while page := await log.page(limit=3, after=after):
            sizes.append(len(page))
            walked += [(saga.created_at_ms, saga.transaction_id) for saga in page]
            after = walked[-1]
        assert walked == newest_first
        assert sizes == [3, 3, 3, 2]

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_page_of_one_state_lists_only_the_sagas_in_it(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        ends = {"f1": SagaState.FAILED, "c1": SagaState.COMPLETED, "f2": SagaState.FAILED, "f3": SagaState.FAILED}
        for at_ms, (transaction_id, end) in enumerate(ends.items(), start=1_000):
            await log.create(record(transaction_id, at_ms=at_ms), SagaState.DEBITING)
            await log.commit(Change(transaction_id, at_ms + 100, end))
        await log.submit(record("pending", at_ms=5_000))

        assert [saga.transaction_id for saga in await log.page(state=SagaState.FAILED, limit=10)] == ["f3", "f2", "f1"]
        assert [saga.transaction_id for saga in await log.page(state=SagaState.COMPLETED, limit=10)] == ["c1"]
        assert [saga.transaction_id for saga in await log.page(state=SagaState.PENDING, limit=10)] == ["pending"]
        assert await log.page(state=SagaState.CREDITING, limit=10) == []
        # A state and a cursor together: the next failed saga past f3, skipping c1 between them.
        (next_failed,) = await log.page(state=SagaState.FAILED, limit=1, after=(1_003, "f3"))
        assert next_failed.transaction_id == "f2"
        assert {saga.state for saga in await log.page(state=SagaState.FAILED, limit=10)} == {SagaState.FAILED}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_log_gives_an_empty_page_and_no_states(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        assert await log.page(limit=10) == []
        assert await log.page(state=SagaState.PENDING, limit=10, after=(1_000, "t")) == []
        assert await log.states(["t"]) == {}
        assert await log.states([]) == {}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_states_reads_several_sagas_at_once_leaves_out_unknown_ids_and_follows_commits(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        for transaction_id in ("a", "b", "c"):
            await log.submit(record(transaction_id))
        assert await log.states(["a", "b", "unknown"]) == {"a": SagaState.PENDING, "b": SagaState.PENDING}

        (claimed,) = await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=2_000, transaction_id="a")
        await log.commit(Change("a", 2_001, SagaState.DEBITING, epoch=claimed.epoch, owner="w1"))
        await log.commit(Change("b", 2_002, SagaState.FAILED, error="refused"))
        assert await log.states(["c", "b", "a", "a", "gone"]) == {
            "a": SagaState.DEBITING,
            "b": SagaState.FAILED,
            "c": SagaState.PENDING,
        }
        # A commit without a state change leaves the state as it was.
        await log.commit(Change("a", 2_003, fence_credit=True, epoch=claimed.epoch, owner="w1"))
        assert await log.states(["a"]) == {"a": SagaState.DEBITING}
        assert await log.states([]) == {}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_resubmission_naming_the_same_services_at_other_urls_returns_the_first_saga(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        _, created = await log.submit(named("first", key="k1", by="api-a"))
        assert created
        before = await log.history("first")
        # The services moved (or the caller's directory lists other replicas): the names are what count.
        moved = named(
            "second",
            key="k1",
            by="api-a",
            at_ms=9_000,
            source=AccountRef("http://a-new.test", "alice", "bank-a"),
            target=AccountRef("http://b3.test", "bob", "bank-b"),
        )
        again, created_again = await log.submit(moved)
        assert (again.transaction_id, created_again) == ("first", False)
        # The first saga as it was recorded, URLs included, not the resubmission.
        assert (carried(again), again.created_at_ms) == (NAMED_BY_A, 1_000)
        assert [saga.transaction_id for saga in await log.sagas()] == ["first"]
        assert await log.get("second") is None
        assert await log.history("first") == before

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_used_idempotency_key_from_another_caller_or_for_other_services_is_a_conflict(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(named("first", key="k1", by="api-a"))
        before = await log.history("first")

        with pytest.raises(IdempotencyKeyConflict):
            await log.submit(named("from-b", key="k1", by="api-b"))
        with pytest.raises(IdempotencyKeyConflict):
            await log.submit(named("from-nobody", key="k1", by=None))
        with pytest.raises(IdempotencyKeyConflict):
            await log.submit(named("elsewhere", key="k1", by="api-a", target=AccountRef("http://b.test", "bob", "c")))

        assert [saga.transaction_id for saga in await log.sagas()] == ["first"]
        for refused in ("from-b", "from-nobody", "elsewhere"):
            assert await log.get(refused) is None
            assert await log.history(refused) == []
        assert await log.history("first") == before
        saga = await log.get("first")
        assert saga is not None
        assert carried(saga) == NAMED_BY_A
        # The caller that used the key first still gets its saga back.
        again, created = await log.submit(named("retry", key="k1", by="api-a"))
        assert (again.transaction_id, created) == ("first", False)

    run_on(kind, tmp_path, scenario)


#: The tables of a SQLite saga log written before service names and callers were kept (HEAD's _SCHEMA).
BEFORE_SERVICE_NAMES_SCHEMA = """
CREATE TABLE sagas (
    transaction_id TEXT PRIMARY KEY, source_urls TEXT NOT NULL, source_user TEXT NOT NULL,
    target_urls TEXT NOT NULL, target_user TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL, fence_credit INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0, lease_expires_at_ms INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT
);
CREATE INDEX sagas_by_state ON sagas (state);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, transaction_id TEXT NOT NULL REFERENCES sagas (transaction_id),
    at_ms INTEGER NOT NULL, kind TEXT NOT NULL, state TEXT, step TEXT, attempt INTEGER, status INTEGER,
    code TEXT, latency_us INTEGER, detail TEXT, url TEXT, owner TEXT, epoch INTEGER, ledger_id TEXT
);
CREATE INDEX events_by_saga ON events (transaction_id, seq);
CREATE UNIQUE INDEX sagas_by_idempotency_key ON sagas (idempotency_key) WHERE idempotency_key IS NOT NULL;
INSERT INTO sagas VALUES
    ('old', 'http://a.test', 'alice', 'http://b.test,http://b2.test', 'bob', 100, 'CREDITING', 0, 1000, 1001, 1,
     NULL, NULL, 1, 0, 'k-old');
INSERT INTO events (transaction_id, at_ms, kind, state) VALUES ('old', 1000, 'state', 'PENDING');
"""


def test_a_sqlite_log_from_before_service_names_is_upgraded_and_reads_them_as_none(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "saga.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(BEFORE_SERVICE_NAMES_SCHEMA)

    async def reopen() -> None:
        log = await SqliteSagaLog.open(path, create=False)
        try:
            old = await log.get("old")
            assert old is not None
            assert (old.state, old.idempotency_key, carried(old)) == (SagaState.CREDITING, "k-old", UNNAMED)
            assert (old.source, old.target) == (SOURCE, TARGET)
            assert [carried(saga) for saga in await log.page(limit=10)] == [UNNAMED]
            assert await log.states(["old"]) == {"old": SagaState.CREDITING}
            # Its key still finds it, for the same unnamed transfer from no particular caller.
            again, created = await log.submit(record("again", key="k-old"))
            assert (again.transaction_id, created) == ("old", False)
            # And the upgraded file keeps what a new saga carries.
            await log.submit(named("new", by="api-a", at_ms=2_000))
            assert [(saga.transaction_id, carried(saga)) for saga in await log.page(limit=10)] == [
                ("new", NAMED_BY_A),
                ("old", UNNAMED),
            ]
        finally:
            await log.close()

    asyncio.run(reopen())
    with contextlib.closing(sqlite3.connect(path)) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(sagas)")}
    assert {"source_service", "target_service", "submitted_by"} <= columns

    async def read_again() -> list[tuple[str, Carried]]:
        log = await SqliteSagaLog.open(path, create=False, exclusive=False)
        try:
            return [(saga.transaction_id, carried(saga)) for saga in await log.page(limit=10)]
        finally:
            await log.close()

    # A second opening finds nothing left to upgrade and reads the same.
    assert asyncio.run(read_again()) == [("new", NAMED_BY_A), ("old", UNNAMED)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_ledger_mark_only_rises_within_its_ledger_and_generation(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        assert await log.ledger_marks() == {}
        await log.raise_ledger_marks([LedgerMark("bank-a", "L1", 10), LedgerMark("bank-b", "M1", 3)])
        await log.raise_ledger_marks([LedgerMark("bank-a", "L1", 7)])
        await log.raise_ledger_marks([LedgerMark("bank-a", "L1", 12), LedgerMark("bank-a", "L1", 11)])
        # Another ledger's answers are for whoever saw them to judge: the mark stays.
        await log.raise_ledger_marks([LedgerMark("bank-b", "M2", 99)])
        assert await log.ledger_marks() == {
            "bank-a": LedgerMark("bank-a", "L1", 12),
            "bank-b": LedgerMark("bank-b", "M1", 3),
        }

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_quarantine_holds_until_accepted_and_the_acceptance_starts_a_new_generation(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.raise_ledger_marks([LedgerMark("bank-a", "L1", 500)])
        first = Quarantine("bank-a", "went back from 500 to 20", 1_000, "t-1")
        assert await log.quarantine(first)
        assert not await log.quarantine(Quarantine("bank-a", "again", 2_000, "t-2")), "the first reason stands"
        assert await log.quarantines() == [first]
        assert await log.accept("bank-b", "nothing to accept", 3_000) is None

        accepted = await log.accept("bank-a", "restored from last night's backup; trails compared", 3_000)
        assert accepted == Acceptance(
            "bank-a", "restored from last night's backup; trails compared", 3_000, "went back from 500 to 20"
        )
        assert await log.quarantines() == []
        assert await log.acceptances() == [accepted]
        assert (await log.ledger_marks())["bank-a"] == LedgerMark("bank-a", None, 0, 1)
        # A mark of the generation before the decision no longer counts; the first of the new one names the ledger.
        await log.raise_ledger_marks([LedgerMark("bank-a", "L1", 600, 0)])
        await log.raise_ledger_marks([LedgerMark("bank-a", "L1", 25, 1)])
        assert (await log.ledger_marks())["bank-a"] == LedgerMark("bank-a", "L1", 25, 1)
        assert await log.quarantine(Quarantine("bank-a", "went back again", 4_000))
        assert [q.reason for q in await log.quarantines()] == ["went back again"]

    run_on(kind, tmp_path, scenario)


def test_sqlite_keeps_marks_and_quarantines_across_a_reopening(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.raise_ledger_marks([LedgerMark("http://a.test", "L1", 40)])
        await log.quarantine(Quarantine("http://a.test", "went back", 1_000))
        await log.close()
        reader = await SqliteSagaLog.open(tmp_path / "saga.db", create=False, exclusive=False)
        try:
            assert await reader.ledger_marks() == {"http://a.test": LedgerMark("http://a.test", "L1", 40)}
            assert [q.service for q in await reader.quarantines()] == ["http://a.test"]
        finally:
            await reader.close()

    asyncio.run(scenario())
