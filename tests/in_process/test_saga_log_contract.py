"""One contract for every saga log, memory, SQLite and PostgreSQL: history, submission, claims and leases.

The PostgreSQL cases run against a real server, on a fresh database each
(tests/support/postgres.py); they skip with one line where none listens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from saga import AccountRef, MemorySagaLog, SagaRecord, SagaState, SqliteSagaLog
from saga.ledgers import Acceptance, LedgerMark, Quarantine
from saga.logs import IdempotencyKeyConflict, LeaseLost, SagaLog, SagaLogError
from saga.logs.base import RECENT_MS, UnknownSaga, overview_of
from saga.logs.postgres import PostgresSagaLog
from saga.operator import ActionRefused
from saga.records import ActionKind, Attempt, Change, Event, OperatorAction, Resolution
from tests.support.postgres import fresh_database_async
from tests.support.schemas import SAGA_LOG_POSTGRESQL, create_postgres, postgres_catalog

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
            await connection.execute("INSERT INTO saga_log_schema (version, name) VALUES (999, 'from_the_future')")
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
def test_an_attempt_is_logged_at_the_time_its_request_was_sent_not_when_it_was_committed(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("t"))
        sent_early = Attempt("debit", 1, None, None, 5, "timeout", sent_at_ms=1_010)
        unstamped = Attempt("debit", 2, 200, None, 7)
        await log.commit(Change("t", 1_020, SagaState.CREDITING, attempts=[sent_early, unstamped]))
        history = await log.history("t")
        assert [(event.kind, event.at_ms) for event in history] == [
            ("state", 1_000),
            ("attempt", 1_010),
            # Without a time of its own, an attempt is logged at its commit's.
            ("attempt", 1_020),
            ("state", 1_020),
        ]
        assert [event.attempt.sent_at_ms for event in history if event.attempt is not None] == [1_010, 1_020]
        saga = await log.get("t")
        assert saga is not None
        assert saga.updated_at_ms == 1_020

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


# -- operator actions, deadlines, the overview ------------------------------------------------

REASON = "ticket 42"


def by_operator(
    transaction_id: str, kind: ActionKind, *, at_ms: int = 5_000, resolution: Resolution | None = None
) -> OperatorAction:
    return OperatorAction(transaction_id, kind, "ops-ana", REASON, at_ms, resolution)


async def leased_in(
    log: SagaLog, transaction_id: str, state: SagaState, *, owner: str = "w1", at_ms: int = 1_000
) -> None:
    """A saga created leased to ``owner`` at epoch 1 (until ``at_ms`` + LEASE_MS), then committed into ``state``."""
    saga = record(transaction_id, at_ms=at_ms)
    saga.owner, saga.epoch, saga.lease_expires_at_ms = owner, 1, at_ms + LEASE_MS
    await log.create(saga, SagaState.DEBITING)
    if state is not SagaState.DEBITING:
        await log.commit(Change(transaction_id, at_ms + 1, state, epoch=1, owner=owner))


class Heard:
    """What a log's listeners were told: how many wake-ups, and which retries, in order."""

    def __init__(self) -> None:
        self.wakes = 0
        self.retries: list[str] = []
        self._told = asyncio.Event()

    def wake(self) -> None:
        self.wakes += 1
        self._told.set()

    def retry(self, transaction_id: str) -> None:
        self.retries.append(transaction_id)
        self._told.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._told.clear()
            await asyncio.wait_for(self._told.wait(), timeout=10)


async def read(log: SagaLog, transaction_id: str) -> SagaRecord:
    saga = await log.get(transaction_id)
    assert saga is not None, transaction_id
    return saga


@pytest.mark.parametrize("kind", KINDS)
def test_a_deadline_and_an_end_code_read_back_through_every_read(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        submitted = record("submitted", at_ms=1_000)
        submitted.deadline_ms = 61_000
        recorded, _ = await log.submit(submitted)
        assert (recorded.deadline_ms, recorded.code) == (61_000, None)
        created = record("created", at_ms=1_001)
        created.deadline_ms = 31_001
        await log.create(created, SagaState.DEBITING)
        await log.create(record("plain", at_ms=1_002), SagaState.DEBITING)
        await log.commit(Change("created", 2_000, SagaState.FAILED, error="refused", code="insufficient_funds"))

        def ends(sagas: list[SagaRecord]) -> dict[str, tuple[int | None, str | None]]:
            return {saga.transaction_id: (saga.deadline_ms, saga.code) for saga in sagas}

        expected = {"submitted": (61_000, None), "created": (31_001, "insufficient_funds"), "plain": (None, None)}
        running = {"submitted": (61_000, None), "plain": (None, None)}
        assert ends([await read(log, transaction_id) for transaction_id in expected]) == expected
        assert ends(await log.sagas()) == expected
        assert ends(await log.page(limit=10)) == expected
        assert ends(await log.by_account("alice", limit=10)) == expected
        assert ends(await log.unfinished()) == running
        overview = await log.overview(now_ms=61_000, stuck_after_ms=60_000, limit=10)
        assert ends(list(overview.stuck)) == {"submitted": (61_000, None)}
        assert ends(await log.claim("w1", limit=10, lease_ms=LEASE_MS, now_ms=3_000)) == running
        # A commit that names no code leaves the saga's as it was.
        await log.commit(Change("created", 3_001, fence_credit=False))
        assert (await read(log, "created")).code == "insufficient_funds"

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_terminal_state_carries_its_own_code_and_none_of_the_state_before(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.create(record("stood", at_ms=1_000), SagaState.DEBITING)
        await log.commit(Change("stood", 1_100, SagaState.COMPENSATING, code="deadline_exceeded"))
        assert (await read(log, "stood")).code == "deadline_exceeded"
        # The fence found the credit standing: COMPLETED, and no leftover reason to say otherwise.
        await log.commit(Change("stood", 1_200, SagaState.COMPLETED))
        assert (await read(log, "stood")).code is None

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancel_lands_only_on_a_saga_no_run_has_claimed(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("waiting"))
        await log.submit(record("claimed", at_ms=1_001))
        await log.claim("w1", limit=1, lease_ms=LEASE_MS, now_ms=2_000, transaction_id="claimed")
        await log.create(record("ended", at_ms=1_002), SagaState.DEBITING)
        await log.commit(Change("ended", 1_500, SagaState.COMPLETED))

        cancelled = await log.act(by_operator("waiting", ActionKind.CANCEL, at_ms=3_000))
        assert (cancelled.state, cancelled.code, cancelled.updated_at_ms) == (SagaState.CANCELLED, "cancelled", 3_000)
        assert (cancelled.owner, cancelled.epoch, cancelled.lease_expires_at_ms) == (None, 0, 0)
        assert cancelled.last_error == f"cancelled by ops-ana: {REASON}"
        assert await log.get("waiting") == cancelled

        for transaction_id, refusal in (
            ("claimed", "transfer_in_progress"),
            ("ended", "transfer_already_ended"),
            ("waiting", "transfer_already_ended"),
        ):
            before = await log.get(transaction_id), await log.history(transaction_id)
            with pytest.raises(ActionRefused) as refused:
                await log.act(by_operator(transaction_id, ActionKind.CANCEL, at_ms=4_000))
            assert refused.value.code == refusal, transaction_id
            assert (await log.get(transaction_id), await log.history(transaction_id)) == before
        with pytest.raises(UnknownSaga):
            await log.act(by_operator("absent", ActionKind.CANCEL))

        # Cancelled, it is never claimed, not even by a recovery that takes the sagas that wait.
        assert await log.claim("w2", limit=10, lease_ms=LEASE_MS, now_ms=99_999, transaction_id="waiting") == []
        taken = await log.claim("w2", limit=10, lease_ms=LEASE_MS, now_ms=99_999, include_waiting=True)
        assert [saga.transaction_id for saga in taken] == ["claimed"]
        assert await log.action_counts() == {"cancel": 1}

    run_on(kind, tmp_path, scenario)


async def check_one_winner_each(
    log: SagaLog, names: Sequence[str], claimed: Sequence[str], cancelled: Sequence[str]
) -> None:
    """Every saga was either claimed or cancelled, never both, and the log agrees."""
    assert sorted([*claimed, *cancelled]) == sorted(names)
    for name in names:
        saga = await read(log, name)
        kinds = [event.kind for event in await log.history(name)]
        if name in cancelled:
            assert (saga.state, saga.epoch, "claim" in kinds) == (SagaState.CANCELLED, 0, False), name
        else:
            assert (saga.state, saga.epoch, "action" in kinds) == (SagaState.PENDING, 1, False), name


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancel_racing_a_claim_has_exactly_one_winner(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        names = [f"r{number:02d}" for number in range(12)]
        for number, name in enumerate(names):
            await log.submit(record(name, at_ms=1_000 + number))

        async def cancel(name: str) -> str:
            try:
                await log.act(by_operator(name, ActionKind.CANCEL))
            except ActionRefused as refused:
                return refused.code
            return "cancelled"

        # The claim goes in between the cancels: some of them are decided before it, some after.
        half = len(names) // 2
        first, claims, second = await asyncio.gather(
            asyncio.gather(*(cancel(name) for name in names[:half])),
            log.claim("w1", limit=len(names), lease_ms=LEASE_MS, now_ms=2_000),
            asyncio.gather(*(cancel(name) for name in names[half:])),
        )
        outcomes = dict(zip(names, [*first, *second], strict=True))
        assert set(outcomes.values()) <= {"cancelled", "transfer_in_progress"}
        cancelled = [name for name, outcome in outcomes.items() if outcome == "cancelled"]
        await check_one_winner_each(log, names, [saga.transaction_id for saga in claims], cancelled)

    run_on(kind, tmp_path, scenario)


def test_postgres_a_cancel_and_a_claim_from_two_processes_never_both_land() -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            operator = await PostgresSagaLog.open(dsn, pool_size=4)
            worker = await PostgresSagaLog.open(dsn, pool_size=4)
            try:
                names = [f"r{number:03d}" for number in range(60)]
                for number, name in enumerate(names):
                    await worker.submit(record(name, at_ms=number))

                async def claimant() -> list[str]:
                    mine: list[str] = []
                    while batch := await worker.claim("w1", limit=3, lease_ms=LEASE_MS, now_ms=10_000):
                        mine += [saga.transaction_id for saga in batch]
                    return mine

                async def cancel(name: str) -> tuple[str, str]:
                    try:
                        await operator.act(by_operator(name, ActionKind.CANCEL))
                    except ActionRefused as refused:
                        return name, refused.code
                    return name, "cancelled"

                claimed, *outcomes = await asyncio.gather(claimant(), *(cancel(name) for name in reversed(names)))
                assert {outcome for _, outcome in outcomes} <= {"cancelled", "transfer_in_progress"}
                cancelled = [name for name, outcome in outcomes if outcome == "cancelled"]
                await check_one_winner_each(worker, names, claimed, cancelled)
            finally:
                await operator.close()
                await worker.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", KINDS)
def test_a_resolution_settles_only_a_saga_waiting_for_an_operator_and_is_kept_as_its_code(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        await leased_in(log, "stopped", SagaState.NEEDS_ATTENTION)
        await leased_in(log, "running", SagaState.CREDITING, at_ms=1_001)
        settled = by_operator("stopped", ActionKind.RESOLVE, at_ms=6_000, resolution=Resolution.MOVED_BY_HAND)

        resolved = await log.act(settled)
        assert (resolved.state, resolved.code, resolved.updated_at_ms) == (SagaState.RESOLVED, "moved_by_hand", 6_000)
        assert resolved.last_error == f"resolved (moved_by_hand) by ops-ana: {REASON}"
        assert (resolved.owner, resolved.epoch, resolved.lease_expires_at_ms) == (None, 1, 0)
        assert await log.get("stopped") == resolved
        assert (await log.history("stopped"))[-1] == Event(
            "stopped", 6_000, "action", SagaState.RESOLVED, detail=REASON, owner="ops-ana", epoch=1, action=settled
        )

        for transaction_id in ("running", "stopped"):
            before = await log.history(transaction_id)
            with pytest.raises(ActionRefused) as refused:
                await log.act(by_operator(transaction_id, ActionKind.RESOLVE, resolution=Resolution.NOTHING_TO_MOVE))
            assert refused.value.code == "transfer_not_awaiting_operator"
            assert await log.history(transaction_id) == before
        assert (await read(log, "running")).state is SagaState.CREDITING
        assert await log.action_counts() == {"resolve": 1}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_makes_a_waiting_compensation_claimable_now_and_tells_the_retry_listeners(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        heard = Heard()
        await log.listen(heard.wake, heard.retry)
        await leased_in(log, "blocked", SagaState.COMPENSATING)
        assert await log.release("blocked", 1, not_before_ms=600_000)
        assert await log.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=5_000) == []

        asked = by_operator("blocked", ActionKind.RETRY, at_ms=5_000)
        retried = await log.act(asked)
        assert (retried.state, retried.code, retried.updated_at_ms) == (SagaState.COMPENSATING, None, 5_000)
        assert retried.last_error == f"retry asked by ops-ana: {REASON}"
        assert (retried.owner, retried.epoch, retried.lease_expires_at_ms) == (None, 1, 0)
        assert await log.get("blocked") == retried
        # Told in commit order: the retry's wake-up comes before the retry, and the release woke no one.
        await heard.until(lambda: heard.retries == ["blocked"])
        assert heard.wakes == 1

        (claimed,) = await log.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=5_001)
        assert (claimed.transaction_id, claimed.owner, claimed.epoch) == ("blocked", "w2", 2)
        assert [event for event in await log.history("blocked") if event.kind == "action"] == [
            Event("blocked", 5_000, "action", None, detail=REASON, owner="ops-ana", epoch=1, action=asked)
        ]
        assert await log.action_counts() == {"retry": 1}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_of_a_saga_in_its_backoff_tells_its_driver_and_leaves_its_lease(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        heard = Heard()
        await log.listen(heard.wake, heard.retry)
        await leased_in(log, "backing-off", SagaState.COMPENSATING)

        retried = await log.act(by_operator("backing-off", ActionKind.RETRY))
        assert (retried.owner, retried.epoch, retried.lease_expires_at_ms) == ("w1", 1, 1_000 + LEASE_MS)
        await heard.until(lambda: heard.retries == ["backing-off"])
        assert heard.wakes == 0, "no claimer wakes for a saga someone holds"
        assert await log.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=2_000) == []
        # Its driver's epoch still holds: it goes on committing.
        await log.commit(Change("backing-off", 6_000, SagaState.COMPENSATED, epoch=1, owner="w1"))
        assert (await read(log, "backing-off")).state is SagaState.COMPENSATED

    run_on(kind, tmp_path, scenario)


def test_postgres_a_retry_reaches_the_retry_listener_of_another_process() -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            operator = await PostgresSagaLog.open(dsn, pool_size=2)
            worker = await PostgresSagaLog.open(dsn, pool_size=2)
            try:
                heard = Heard()
                await worker.listen(heard.wake, heard.retry)
                await leased_in(worker, "blocked", SagaState.COMPENSATING)
                await leased_in(worker, "backing-off", SagaState.COMPENSATING, owner="w9")
                await worker.release("blocked", 1, not_before_ms=600_000)

                await operator.act(by_operator("blocked", ActionKind.RETRY))
                await operator.act(by_operator("backing-off", ActionKind.RETRY))
                await heard.until(lambda: heard.retries == ["blocked", "backing-off"])
                assert heard.wakes == 1
                claimed = await worker.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=5_000)
                assert [saga.transaction_id for saga in claimed] == ["blocked"]
            finally:
                await operator.close()
                await worker.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_of_anything_but_a_compensating_saga_is_refused(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("pending"))
        await log.submit(record("cancelled"))
        await log.act(by_operator("cancelled", ActionKind.CANCEL))
        for state in (SagaState.DEBITING, SagaState.CREDITING, SagaState.COMPLETED, SagaState.NEEDS_ATTENTION):
            await leased_in(log, state.value, state)

        for transaction_id in ("pending", "cancelled", "DEBITING", "CREDITING", "COMPLETED", "NEEDS_ATTENTION"):
            before = await log.get(transaction_id), await log.history(transaction_id)
            with pytest.raises(ActionRefused) as refused:
                await log.act(by_operator(transaction_id, ActionKind.RETRY))
            assert refused.value.code == "transfer_not_retryable", transaction_id
            assert (await log.get(transaction_id), await log.history(transaction_id)) == before
        assert await log.action_counts() == {"cancel": 1}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_a_saga_released_to_wait_is_claimed_when_its_time_comes_or_by_a_recovery_that_includes_waiting(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        heard = Heard()
        await log.listen(heard.wake, heard.retry)
        await leased_in(log, "waits", SagaState.COMPENSATING)
        await leased_in(log, "held", SagaState.COMPENSATING, owner="w9", at_ms=1_001)
        await log.submit(record("expired", at_ms=1_002))
        await log.claim("w8", limit=1, lease_ms=1, now_ms=1_002, transaction_id="expired")

        assert await log.release("waits", 1, not_before_ms=50_000)
        waiting = await read(log, "waits")
        assert (waiting.owner, waiting.epoch, waiting.lease_expires_at_ms) == (None, 1, 50_000)
        assert await log.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=49_999, transaction_id="waits") == []
        # A recovery an operator starts takes it now, and what any claim takes, but never a saga someone holds.
        taken = await log.claim("w2", limit=5, lease_ms=LEASE_MS, now_ms=2_000, include_waiting=True)
        assert [(saga.transaction_id, saga.epoch) for saga in taken] == [("waits", 2), ("expired", 2)]

        assert await log.release("waits", 2, not_before_ms=50_000)
        assert await log.claim("w3", limit=5, lease_ms=LEASE_MS, now_ms=49_999, transaction_id="waits") == []
        (due,) = await log.claim("w3", limit=5, lease_ms=LEASE_MS, now_ms=50_000, transaction_id="waits")
        assert due.epoch == 3
        # Heard in commit order: by the retry of the held saga, any wake-up from a release would have come.
        await log.act(by_operator("held", ActionKind.RETRY))
        await heard.until(lambda: heard.retries == ["held"])
        assert heard.wakes == 1, "the submission woke the claimers; a release with a time to wait wakes no one"

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_every_action_reads_back_from_the_history_with_who_why_and_how(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await log.submit(record("c"))
        await leased_in(log, "r", SagaState.COMPENSATING)
        await leased_in(log, "s", SagaState.NEEDS_ATTENTION)
        cancel = OperatorAction("c", ActionKind.CANCEL, "cli:ana@host", "customer asked, ticket 7", 7_000)
        retry = OperatorAction("r", ActionKind.RETRY, "ops-bo", "bank B is back", 7_001)
        again = OperatorAction("r", ActionKind.RETRY, "ops-bo", "once more", 7_002)
        resolve = OperatorAction(
            "s", ActionKind.RESOLVE, "ops-cy", "trails compared", 7_003, Resolution.NOTHING_TO_MOVE
        )
        for action in (cancel, retry, again, resolve):
            await log.act(action)

        actions = {
            transaction_id: [event for event in await log.history(transaction_id) if event.kind == "action"]
            for transaction_id in ("c", "r", "s")
        }
        assert actions == {
            "c": [Event("c", 7_000, "action", SagaState.CANCELLED, None, cancel.reason, cancel.actor, 0, cancel)],
            "r": [
                Event("r", 7_001, "action", None, None, retry.reason, retry.actor, 1, retry),
                Event("r", 7_002, "action", None, None, again.reason, again.actor, 1, again),
            ],
            "s": [Event("s", 7_003, "action", SagaState.RESOLVED, None, resolve.reason, resolve.actor, 1, resolve)],
        }
        # The action is the last word of each history: nothing else was written with it.
        assert [(await log.history(name))[-1].kind for name in ("c", "r", "s")] == ["action"] * 3
        assert await log.action_counts() == {"cancel": 1, "retry": 2, "resolve": 1}

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_log_has_an_empty_overview_and_no_actions(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        overview = await log.overview(now_ms=1_000_000, stuck_after_ms=60_000, limit=10)
        assert overview == overview_of([], now_ms=1_000_000, stuck_after_ms=60_000, limit=10)
        assert (overview.counts[SagaState.PENDING], overview.stuck, overview.oldest_needs_attention_ms) == (0, [], None)
        assert await log.action_counts() == {}
        assert await log.by_account("alice", limit=10) == []

    run_on(kind, tmp_path, scenario)


NOW_MS = 10_000_000
STUCK_AFTER_MS = 60_000


async def fill_for_the_overview(log: SagaLog) -> None:
    """Sagas on each side of every line the overview draws, at NOW_MS with STUCK_AFTER_MS."""

    async def saga(
        transaction_id: str,
        created_at_ms: int,
        state: SagaState,
        *,
        updated_at_ms: int | None = None,
        deadline_ms: int | None = None,
    ) -> None:
        new = record(transaction_id, at_ms=created_at_ms)
        new.deadline_ms = deadline_ms
        await log.create(new, SagaState.DEBITING)
        if state is not SagaState.DEBITING:
            await log.commit(Change(transaction_id, updated_at_ms or created_at_ms + 1, state))

    await saga("done-lately", 100, SagaState.COMPLETED, updated_at_ms=NOW_MS - RECENT_MS + 1)
    await saga("done-just-before", 101, SagaState.COMPLETED, updated_at_ms=NOW_MS - RECENT_MS)
    await saga("done-long-ago", 102, SagaState.COMPLETED)
    await saga("compensating-too-long", NOW_MS - STUCK_AFTER_MS, SagaState.COMPENSATING)
    await saga("compensating-lately", NOW_MS - STUCK_AFTER_MS + 1, SagaState.COMPENSATING)
    await saga("attention-b", 5_000, SagaState.NEEDS_ATTENTION)
    await saga("attention-a", 5_000, SagaState.NEEDS_ATTENTION)
    await saga("attention-late", 7_000, SagaState.NEEDS_ATTENTION)
    await saga("past-deadline", 6_000, SagaState.CREDITING, deadline_ms=NOW_MS)
    await saga("before-deadline", 6_001, SagaState.CREDITING, deadline_ms=NOW_MS + 1)
    await saga("ended-past-deadline", 6_002, SagaState.FAILED, deadline_ms=1)
    await saga("stuck-twice", 4_000, SagaState.COMPENSATING, deadline_ms=2)
    await log.submit(record("pending", at_ms=8_000))
    await log.submit(record("cancelled", at_ms=8_001))
    await log.act(by_operator("cancelled", ActionKind.CANCEL))


@pytest.mark.parametrize("kind", KINDS)
def test_the_overview_counts_what_an_operator_looks_at_first(kind: str, tmp_path: Path) -> None:
    async def scenario(log: SagaLog) -> None:
        await fill_for_the_overview(log)

        overview = await log.overview(now_ms=NOW_MS, stuck_after_ms=STUCK_AFTER_MS, limit=4)
        assert {state: count for state, count in overview.counts.items() if count} == {
            SagaState.COMPLETED: 3,
            SagaState.COMPENSATING: 3,
            SagaState.NEEDS_ATTENTION: 3,
            SagaState.CREDITING: 2,
            SagaState.FAILED: 1,
            SagaState.PENDING: 1,
            SagaState.CANCELLED: 1,
        }
        assert set(overview.counts) == set(SagaState)
        assert overview.completed_recently == 1
        assert (overview.compensating_too_long, overview.needs_attention, overview.deadlines_expired) == (2, 3, 2)
        assert (overview.oldest_needs_attention_ms, overview.at_ms) == (5_000, NOW_MS)
        # Oldest first, equal times by id; a saga stuck twice over is listed once.
        assert [saga.transaction_id for saga in overview.stuck] == [
            "stuck-twice",
            "attention-a",
            "attention-b",
            "past-deadline",
        ]
        everything = await log.overview(now_ms=NOW_MS, stuck_after_ms=STUCK_AFTER_MS, limit=100)
        assert [saga.transaction_id for saga in everything.stuck][4:] == ["attention-late", "compensating-too-long"]
        assert everything.stuck[0] == await log.get("stuck-twice")
        # The reference computation over every saga agrees, figure for figure.
        for limit in (0, 1, 4, 100):
            expected = overview_of(await log.sagas(), now_ms=NOW_MS, stuck_after_ms=STUCK_AFTER_MS, limit=limit)
            assert await log.overview(now_ms=NOW_MS, stuck_after_ms=STUCK_AFTER_MS, limit=limit) == expected

    run_on(kind, tmp_path, scenario)


@pytest.mark.parametrize("kind", KINDS)
def test_the_sagas_of_an_account_are_listed_newest_first_at_any_service_or_at_the_one_named(
    kind: str, tmp_path: Path
) -> None:
    async def scenario(log: SagaLog) -> None:
        at_c = AccountRef("http://c.test", "alice", "bank-c")
        await log.submit(named("sent", at_ms=1_000))  # alice@bank-a -> bob@bank-b
        await log.submit(named("received", at_ms=3_000, source=NAMED_TARGET, target=at_c))  # bob -> alice@bank-c
        await log.submit(named("tie-a", at_ms=2_000, target=at_c))  # alice@bank-a -> alice@bank-c
        await log.submit(named("tie-b", at_ms=2_000))
        await log.submit(record("unnamed", at_ms=4_000))  # alice at URLs only -> bob
        await log.submit(named("others", at_ms=5_000, source=AccountRef("http://c.test", "carol", "bank-c")))

        async def listed(user_id: str, service: str | None = None, limit: int = 10) -> list[str]:
            return [saga.transaction_id for saga in await log.by_account(user_id, service=service, limit=limit)]

        assert await listed("alice") == ["unnamed", "received", "tie-b", "tie-a", "sent"]
        assert await listed("alice", limit=2) == ["unnamed", "received"]
        assert await listed("alice", "bank-a") == ["tie-b", "tie-a", "sent"]
        assert await listed("alice", "bank-c") == ["received", "tie-a"]
        assert await listed("bob", "bank-b") == ["others", "received", "tie-b", "sent"]
        assert await listed("bob", "bank-a") == []
        assert await listed("carol") == ["others"]
        assert await listed("nobody") == []
        # A service is matched by its name, never by its URLs.
        assert await listed("alice", "http://a.test") == []

    run_on(kind, tmp_path, scenario)


def test_sqlite_refuses_to_update_or_delete_an_event(tmp_path: Path) -> None:
    import sqlite3

    async def write() -> list[Event]:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        try:
            await log.submit(record("t"))
            await log.act(by_operator("t", ActionKind.CANCEL))
            return await log.history("t")
        finally:
            await log.close()

    history = asyncio.run(write())
    with contextlib.closing(sqlite3.connect(tmp_path / "saga.db")) as connection:
        for statement in (
            "UPDATE events SET detail = 'rewritten' WHERE kind = 'action'",
            "DELETE FROM events WHERE kind = 'action'",
            "DELETE FROM events",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(statement)

    async def read_again() -> list[Event]:
        log = await SqliteSagaLog.open(tmp_path / "saga.db", exclusive=False)
        try:
            return await log.history("t")
        finally:
            await log.close()

    assert asyncio.run(read_again()) == history


def test_postgres_refuses_to_update_delete_or_truncate_an_event() -> None:
    import asyncpg

    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            log = await PostgresSagaLog.open(dsn)
            try:
                await log.submit(record("t"))
                await log.act(by_operator("t", ActionKind.CANCEL))
                history = await log.history("t")
                connection = await asyncpg.connect(dsn)
                try:
                    for statement in (
                        "UPDATE saga_events SET detail = 'rewritten' WHERE kind = 'action'",
                        "DELETE FROM saga_events WHERE kind = 'action'",
                        "TRUNCATE saga_events CASCADE",
                    ):
                        with pytest.raises(asyncpg.PostgresError, match="append-only"):
                            await connection.execute(statement)
                finally:
                    await connection.close()
                assert await log.history("t") == history
            finally:
                await log.close()

    asyncio.run(scenario())


def test_sqlite_keeps_a_wait_across_a_reopening_and_releases_only_the_leases(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await leased_in(log, "waits", SagaState.COMPENSATING)
        await leased_in(log, "held", SagaState.CREDITING, owner="dead", at_ms=1_001)
        await log.release("waits", 1, not_before_ms=600_000)
        await log.close()

        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        try:
            waiting = await read(log, "waits")
            assert (waiting.owner, waiting.lease_expires_at_ms) == (None, 600_000)
            taken = await log.claim("alive", limit=5, lease_ms=LEASE_MS, now_ms=2_000)
            assert [saga.transaction_id for saga in taken] == ["held"]
            waited = await log.claim("alive", limit=5, lease_ms=LEASE_MS, now_ms=2_000, include_waiting=True)
            assert [saga.transaction_id for saga in waited] == ["waits"]
        finally:
            await log.close()

    asyncio.run(scenario())


def test_a_sqlite_log_from_before_operator_actions_is_upgraded_and_then_works(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "saga.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(BEFORE_SERVICE_NAMES_SCHEMA)
        connection.execute(
            "INSERT INTO sagas VALUES ('waiting', 'http://a.test', 'alice', 'http://b.test,http://b2.test', 'bob', "
            "50, 'PENDING', 0, 900, 900, 0, NULL, NULL, 0, 0, NULL)"
        )
        connection.execute(
            "INSERT INTO events (transaction_id, at_ms, kind, state) VALUES ('waiting', 900, 'state', 'PENDING')"
        )
        connection.commit()

    async def reopen() -> None:
        log = await SqliteSagaLog.open(path, create=False)
        try:
            old = await read(log, "old")
            assert (old.state, old.epoch, old.deadline_ms, old.code) == (SagaState.CREDITING, 1, None, None)
            with pytest.raises(ActionRefused, match="cannot be cancelled"):
                await log.act(by_operator("old", ActionKind.CANCEL))
            cancelled = await log.act(by_operator("waiting", ActionKind.CANCEL))
            assert (cancelled.state, cancelled.code) == (SagaState.CANCELLED, "cancelled")
            new = record("new", at_ms=2_000)
            new.deadline_ms = 3_000
            await log.submit(new)
            assert (await read(log, "new")).deadline_ms == 3_000
            overview = await log.overview(now_ms=3_000, stuck_after_ms=60_000, limit=10)
            assert [saga.transaction_id for saga in overview.stuck] == ["new"]
            assert await log.action_counts() == {"cancel": 1}
            assert [saga.transaction_id for saga in await log.by_account("alice", limit=10)] == [
                "new",
                "old",
                "waiting",
            ]
        finally:
            await log.close()

    asyncio.run(reopen())
    with contextlib.closing(sqlite3.connect(path)) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(sagas)")}
        triggers = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM events WHERE transaction_id = 'old'")
    assert {"deadline_ms", "code"} <= columns
    assert triggers == {"events_are_never_updated", "events_are_never_deleted"}

    async def read_again() -> list[tuple[str, SagaState, int | None, str | None]]:
        log = await SqliteSagaLog.open(path, create=False)
        try:
            return [(saga.transaction_id, saga.state, saga.deadline_ms, saga.code) for saga in await log.sagas()]
        finally:
            await log.close()

    # A second opening finds nothing left to upgrade, and reads the same.
    assert asyncio.run(read_again()) == [
        ("waiting", SagaState.CANCELLED, None, "cancelled"),
        ("old", SagaState.CREDITING, None, None),
        ("new", SagaState.PENDING, 3_000, None),
    ]


def test_a_postgres_log_at_schema_version_3_is_upgraded_like_a_fresh_one_and_then_works() -> None:
    import asyncpg

    async def scenario() -> None:
        async with fresh_database_async() as old_dsn, fresh_database_async() as fresh_dsn:
            # As the code of migration 0003 left it, with a saga of that time.
            (at_version_3,) = [earlier for earlier in SAGA_LOG_POSTGRESQL if earlier.version == 3]
            await create_postgres(old_dsn, at_version_3)
            connection = await asyncpg.connect(old_dsn)
            try:
                await connection.execute(
                    "INSERT INTO saga_sagas (transaction_id, source_urls, source_user, target_urls, target_user, "
                    "amount, state, created_at_ms, updated_at_ms) "
                    "VALUES ('old', 'http://a.test', 'alice', 'http://b.test,http://b2.test', 'bob', 100, 'PENDING', "
                    "1000, 1000)"
                )
                await connection.execute(
                    "INSERT INTO saga_events (transaction_id, at_ms, kind, state) "
                    "VALUES ('old', 1000, 'state', 'PENDING')"
                )
            finally:
                await connection.close()

            upgraded = await PostgresSagaLog.open(old_dsn)
            try:
                old = await read(upgraded, "old")
                assert (old.state, old.deadline_ms, old.code, old.source, old.target) == (
                    SagaState.PENDING,
                    None,
                    None,
                    SOURCE,
                    TARGET,
                )
                cancelled = await upgraded.act(by_operator("old", ActionKind.CANCEL))
                assert (cancelled.state, cancelled.code) == (SagaState.CANCELLED, "cancelled")
                new = record("new", at_ms=2_000)
                new.deadline_ms = 3_000
                await upgraded.submit(new)
                overview = await upgraded.overview(now_ms=3_000, stuck_after_ms=60_000, limit=10)
                assert [saga.transaction_id for saga in overview.stuck] == ["new"]
                assert overview.counts[SagaState.CANCELLED] == 1
                assert await upgraded.action_counts() == {"cancel": 1}
                assert [saga.transaction_id for saga in await upgraded.by_account("bob", limit=5)] == ["new", "old"]
            finally:
                await upgraded.close()

            fresh = await PostgresSagaLog.open(fresh_dsn)
            await fresh.close()
            assert await postgres_catalog(old_dsn, "saga_log_schema") == await postgres_catalog(
                fresh_dsn, "saga_log_schema"
            )

    asyncio.run(scenario())
