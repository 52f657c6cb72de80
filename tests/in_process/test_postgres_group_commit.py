"""The PostgreSQL store's group commit, against a real server: many operations, one call and one commit.

Operations that arrive together go to ledger_execute_group in one call; the
tests here check what that may never change: each answers what it would have
answered alone, one that fails fails alone, a lost connection fails the whole
group and applies none of it, and concurrent groups on shared accounts, from
one store or from two on one database, neither deadlock nor lose an update.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from server.ledger import OPERATIONS, Entry, IdempotencyKeyReused, Ledger, Operation
from server.stores import Execution, PositionedExecution, StorageUnavailable
from server.stores.postgres import PostgresStore
from tests.support.aio import run
from tests.support.postgres import fresh_database_async

Request = tuple[Operation, str, str, int]

#: Few accounts and small balances, so that the operations meet on the same
#: rows and some are refused for want of money or of room.
ACCOUNTS = {"ann": 300, "ben": 100, "cy": 0, "dee": 250, "eve": 480}
MAX_BALANCE = 500


@asynccontextmanager
async def stores_on_one_database(
    accounts: Mapping[str, int], *settings: Mapping[str, Any]
) -> AsyncIterator[tuple[str, list[PostgresStore]]]:
    """One fresh database, and a store on it for each of ``settings``: replicas sharing one ledger."""
    async with fresh_database_async("group") as dsn, AsyncExitStack() as stack:
        stores = []
        for options in settings:
            store = await PostgresStore.open(dsn, accounts, max_balance=MAX_BALANCE, **options)
            stack.push_async_callback(store.close)
            stores.append(store)
        yield dsn, stores


async def recorded_entries(dsn: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(
            await connection.fetch(
                "SELECT transaction_id, operation, user_id, amount, outcome, balance, rejection, sequence "
                "FROM entries ORDER BY sequence"
            )
        )
    finally:
        await connection.close()


def mixed_requests(seed: int, count: int = 64) -> list[Request]:
    """Transfers over the same few accounts: forwards and compensations in any order, resent and reused ids."""
    draw = random.Random(seed)
    users = sorted(ACCOUNTS)
    transfers = {f"t{number}": (draw.choice(users), draw.choice(users), draw.randint(1, 200)) for number in range(16)}
    requests: list[Request] = []
    while len(requests) < count:
        transaction_id = draw.choice(sorted(transfers))
        payer, payee, amount = transfers[transaction_id]
        operation: Operation = draw.choice(OPERATIONS)
        user_id = payer if operation in ("debit", "compensate_debit") else payee
        if draw.random() < 0.1:
            # The same id with another body: answered idempotency_key_reused, or decided as a stranger's request.
            user_id, amount = draw.choice([*users, "nobody"]), draw.randint(1, 200)
        requests.append((operation, transaction_id, user_id, amount))
        if draw.random() < 0.15:
            requests.append(requests[-1])
    return requests[:count]


@dataclass(frozen=True)
class Answered:
    request: Request
    execution: PositionedExecution | None
    reused: IdempotencyKeyReused | None


async def answered(store: PostgresStore, request: Request) -> Answered:
    try:
        return Answered(request, await store.execute_with_position(*request), None)
    except IdempotencyKeyReused as reused:
        return Answered(request, None, reused)


def decided(execution: Execution | None) -> Execution:
    assert execution is not None
    return execution


def view(entry: Entry) -> tuple[Any, ...]:
    return (
        entry.transaction_id,
        entry.operation,
        entry.user_id,
        entry.amount,
        entry.outcome,
        entry.balance,
        entry.rejection,
    )


def replayed_in_order_of_record(rows: list[asyncpg.Record]) -> Ledger:
    """The pure ledger, given every recorded request in the order the database recorded them.

    Two operations that share an account or a transaction id are recorded
    in the order they were decided, under the same locks, so the rules
    applied in that order must decide each as the database did.
    """
    ledger = Ledger(ACCOUNTS, max_balance=MAX_BALANCE)
    for row in rows:
        entry, replay = ledger.execute(row["operation"], row["transaction_id"], row["user_id"], row["amount"])
        assert not replay, row
        recorded = (*row.values(),)[:7]
        assert view(entry) == recorded, f"the rules decide {entry!r}, the database recorded {recorded}"
    return ledger


# One store, one group of all 64; two replicas with four small groups in
# flight at once, locking against each other; and a replica still sending one
# operation per call beside one sending groups, as during a rolling upgrade.
CONCURRENT_SETUPS = {
    "postgres-one-store-one-group": ({},),
    "postgres-two-stores-small-groups-in-flight": (
        {"group_size": 4, "groups_in_flight": 4},
        {"group_size": 4, "groups_in_flight": 4},
    ),
    "postgres-grouped-beside-one-at-a-time": ({"group_size": 8, "groups_in_flight": 2}, {"group_commit": False}),
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("setup", sorted(CONCURRENT_SETUPS))
def test_64_concurrent_operations_on_shared_accounts_neither_deadlock_nor_lose_an_update(setup: str, seed: int) -> None:
    requests = mixed_requests(seed)

    async def scenario() -> None:
        async with stores_on_one_database(ACCOUNTS, *CONCURRENT_SETUPS[setup]) as (dsn, stores):
            # Any wait that never ended would fail here; a deadlock PostgreSQL
            # found would be a StorageUnavailable, which gather raises.
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(answered(stores[number % len(stores)], request) for number, request in enumerate(requests))
                ),
                timeout=60,
            )
            rows = await recorded_entries(dsn)
            ledger = replayed_in_order_of_record(rows)
            assert [(account.user_id, account.balance) for account in await stores[0].accounts()] == [
                (account.user_id, account.balance) for account in ledger.accounts()
            ]
            recorded = {(row["transaction_id"], row["operation"]): row for row in rows}
            for answer in answers:
                operation, transaction_id, user_id, amount = answer.request
                if answer.reused is not None:
                    assert not answer.reused.recorded.matches(user_id, amount)
                    continue
                assert answer.execution is not None
                execution, position = answer.execution
                assert execution is not None
                entry, _ = execution
                if not entry.final:
                    assert (transaction_id, operation) not in recorded
                    continue
                row = recorded[(transaction_id, operation)]
                assert view(entry) == (*row.values(),)[:7]
                assert entry.sequence <= position <= rows[-1]["sequence"]
            for store in stores:
                await store.check_invariants()
            grouped = [store for store in stores if store.groups]
            assert grouped
            # Operations did go to the database together.
            assert sum(store.groups for store in grouped) < sum(store.requests_grouped for store in grouped)

    run(scenario())


def test_operations_that_arrive_together_share_one_call_and_are_decided_in_order_postgres() -> None:
    async def scenario() -> None:
        async with stores_on_one_database({"ann": 100, "ben": 0}, {}) as (_, (store,)):
            executions = await asyncio.gather(*(store.execute("debit", f"t{i}", "ann", 30) for i in range(5)))
            assert (store.groups, store.requests_grouped) == (1, 5)
            assert [(entry.outcome, entry.balance, entry.rejection) for entry, _ in map(decided, executions)] == [
                ("applied", 70, None),
                ("applied", 40, None),
                ("applied", 10, None),
                (None, None, "insufficient_funds"),
                (None, None, "insufficient_funds"),
            ]

    run(scenario())


def test_the_same_request_twice_in_one_group_is_applied_once_and_replayed_once_postgres() -> None:
    async def scenario() -> None:
        async with stores_on_one_database({"ann": 100, "ben": 0}, {}) as (_, (store,)):
            first, second, reversal, late = await asyncio.gather(
                store.execute_with_position("debit", "t1", "ann", 30),
                store.execute_with_position("debit", "t1", "ann", 30),
                store.execute_with_position("compensate_debit", "t1", "ann", 30),
                store.execute_with_position("compensate_debit", "t1", "ann", 30),
            )
            assert store.groups == 1
            (debit, replayed), (resent, resent_replayed) = decided(first[0]), decided(second[0])
            assert (debit.balance, replayed) == (70, False)
            assert (view(resent), resent.sequence, resent_replayed) == (view(debit), debit.sequence, True)
            reversed_debit, reversal_replayed = decided(reversal[0])
            assert (reversed_debit.outcome, reversed_debit.balance, reversal_replayed) == ("reversed", 100, False)
            assert decided(late[0])[1] is True
            # Each answers the position after its own write, as it would alone.
            assert [first[1], second[1], reversal[1], late[1]] == [1, 1, 2, 2]
            assert await store.balance("ann") == 100

    run(scenario())


def test_an_operation_that_fails_fails_alone_and_the_rest_of_its_group_commits_postgres() -> None:
    async def scenario() -> None:
        async with stores_on_one_database({"ann": 100, "ben": 0}, {}, {"group_commit": False}) as (
            dsn,
            (grouped, one_at_a_time),
        ):
            # A zero amount passes the rules but not the entries table's check:
            # an error in the database, as a bug would raise.
            debit, zero, credit = await asyncio.gather(
                grouped.execute("debit", "t1", "ann", 30),
                grouped.execute("debit", "t2", "ann", 0),
                grouped.execute("credit", "t1", "ben", 30),
                return_exceptions=True,
            )
            assert grouped.groups == 1
            assert isinstance(zero, asyncpg.CheckViolationError)
            assert not isinstance(zero, StorageUnavailable)
            # The same error as the same request raises alone.
            with pytest.raises(asyncpg.CheckViolationError) as alone:
                await one_at_a_time.execute("debit", "t3", "ann", 0)
            assert (type(zero), zero.sqlstate, zero.args) == (type(alone.value), alone.value.sqlstate, alone.value.args)
            assert not isinstance(debit, BaseException)
            assert not isinstance(credit, BaseException)
            applied = [decided(debit)[0], decided(credit)[0]]
            assert [(entry.outcome, entry.balance) for entry in applied] == [("applied", 70), ("applied", 30)]
            assert [(row["transaction_id"], row["operation"]) for row in await recorded_entries(dsn)] == [
                ("t1", "debit"),
                ("t1", "credit"),
            ]
            await grouped.check_invariants()

    run(scenario())


def test_a_connection_lost_mid_group_fails_every_operation_and_applies_none_postgres() -> None:
    requests: list[Request] = [
        ("debit", "t1", "ann", 30),
        ("credit", "t1", "ben", 30),
        ("debit", "t2", "ben", 5),
        ("compensate_debit", "t3", "ann", 7),
    ]

    async def scenario() -> None:
        async with stores_on_one_database({"ann": 100, "ben": 0}, {}) as (dsn, (store,)):
            blocker = await asyncpg.connect(dsn)
            try:
                # Hold ann's row, so the group waits inside its transaction when its connection dies.
                holding = blocker.transaction()
                await holding.start()
                await blocker.execute("SELECT 1 FROM accounts WHERE user_id = 'ann' FOR UPDATE")
                group = asyncio.gather(*(store.execute(*request) for request in requests), return_exceptions=True)
                waiting: list[int] = []
                for _ in range(200):
                    await asyncio.sleep(0.05)
                    waiting = [
                        row["pid"]
                        for row in await blocker.fetch(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                        )
                    ]
                    if waiting:
                        break
                assert waiting, "the group never waited for the row lock"
                for pid in waiting:
                    await blocker.execute("SELECT pg_terminate_backend($1)", pid)
                outcomes = await group
                await holding.rollback()
            finally:
                await blocker.close()
            assert [type(outcome) for outcome in outcomes] == [StorageUnavailable] * len(requests)
            assert len({id(outcome) for outcome in outcomes}) == len(requests)
            assert await recorded_entries(dsn) == []
            # Retried, each is applied once: nothing of the failed group was kept.
            retried = [await store.execute(*request) for request in requests]
            assert [(execution[0].outcome, execution[1]) for execution in map(decided, retried)] == [
                ("applied", False),
                ("applied", False),
                ("applied", False),
                ("voided", False),
            ]
            assert [(account.user_id, account.balance) for account in await store.accounts()] == [
                ("ann", 70),
                ("ben", 25),
            ]
            await store.check_invariants()

    run(scenario())
