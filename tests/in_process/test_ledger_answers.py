"""Every kind of ledger answer, field by field, first answered and then replayed, on every store.

Each case sets up accounts and earlier requests under the same transaction id,
sends one request, and checks every field of the entry it records (status,
code, outcome, amount, balance, transaction id, operation, user), that a
resend replays exactly that entry and moves nothing, and that the audit
trail holds it. The boundaries are exact: a balance may reach 0 and the limit,
never pass them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.ledger import (
    COMPENSATE_CREDIT,
    COMPENSATE_DEBIT,
    CREDIT,
    DEBIT,
    MAX_BALANCE,
    Account,
    Entry,
    IdempotencyKeyReused,
    InvariantViolation,
    Ledger,
    Operation,
    decide,
    replayed,
)
from server.stores.memory import MemoryStore
from tests.support.stores import STORES, StoreFactory

ID = "t-1"


@dataclass(frozen=True)
class Case:
    name: str
    accounts: dict[str, int]
    before: tuple[tuple[Operation, str, str, int], ...]
    request: tuple[Operation, str, int]
    #: status, rejection code, outcome, recorded amount, balance after
    expected: tuple[int, str | None, str | None, int, int | None]
    #: the user's balance after the request
    balance_after: int | None


CASES = [
    Case("debit applied", {"a": 500}, (), (DEBIT, "a", 200), (200, None, "applied", 200, 300), 300),
    Case("debit of the whole balance", {"a": 500}, (), (DEBIT, "a", 500), (200, None, "applied", 500, 0), 0),
    Case(
        "debit beyond the balance", {"a": 500}, (), (DEBIT, "a", 501), (409, "insufficient_funds", None, 501, None), 500
    ),
    Case("debit of an unknown user", {"a": 500}, (), (DEBIT, "zed", 5), (404, "unknown_user", None, 5, None), None),
    Case(
        "debit after its compensation",
        {"a": 500},
        ((COMPENSATE_DEBIT, ID, "a", 5),),
        (DEBIT, "a", 5),
        (409, "transaction_compensated", None, 5, None),
        500,
    ),
    Case("credit applied", {"b": 0}, (), (CREDIT, "b", 70), (200, None, "applied", 70, 70), 70),
    Case(
        "credit up to the limit exactly",
        {"b": MAX_BALANCE - 10},
        (),
        (CREDIT, "b", 10),
        (200, None, "applied", 10, MAX_BALANCE),
        MAX_BALANCE,
    ),
    Case(
        "credit past the limit",
        {"b": MAX_BALANCE - 10},
        (),
        (CREDIT, "b", 11),
        (409, "balance_limit_exceeded", None, 11, None),
        MAX_BALANCE - 10,
    ),
    Case("credit of an unknown user", {"b": 0}, (), (CREDIT, "zed", 5), (404, "unknown_user", None, 5, None), None),
    Case(
        "credit after its compensation",
        {"b": 0},
        ((COMPENSATE_CREDIT, ID, "b", 70),),
        (CREDIT, "b", 70),
        (409, "transaction_compensated", None, 70, None),
        0,
    ),
    Case(
        "compensate_debit reverses",
        {"a": 500},
        ((DEBIT, ID, "a", 200),),
        (COMPENSATE_DEBIT, "a", 200),
        (200, None, "reversed", 200, 500),
        500,
    ),
    Case(
        "compensate_debit back to the limit exactly",
        {"a": 500, "c": 0},
        ((DEBIT, ID, "a", 200), (CREDIT, "t-fill", "a", MAX_BALANCE - 500)),
        (COMPENSATE_DEBIT, "a", 200),
        (200, None, "reversed", 200, MAX_BALANCE),
        MAX_BALANCE,
    ),
    Case(
        "compensate_debit with nothing to undo",
        {"a": 500},
        (),
        (COMPENSATE_DEBIT, "a", 200),
        (200, None, "voided", 200, 500),
        500,
    ),
    Case(
        "compensate_debit of a refused debit",
        {"a": 500},
        ((DEBIT, ID, "a", 900),),
        (COMPENSATE_DEBIT, "a", 900),
        (200, None, "voided", 900, 500),
        500,
    ),
    Case(
        "compensate_debit of an unknown user",
        {"a": 500},
        (),
        (COMPENSATE_DEBIT, "zed", 5),
        (404, "unknown_user", None, 5, None),
        None,
    ),
    Case(
        "compensate_debit of an unknown user after its debit",
        {"a": 500},
        ((DEBIT, ID, "zed", 5),),
        (COMPENSATE_DEBIT, "zed", 5),
        (404, "unknown_user", None, 5, None),
        None,
    ),
    Case(
        "compensate_debit while the credit stands",
        {"a": 500, "b": 0},
        ((DEBIT, ID, "a", 200), (CREDIT, ID, "b", 200)),
        (COMPENSATE_DEBIT, "a", 200),
        (409, "transfer_completed", None, 200, None),
        300,
    ),
    Case(
        "compensate_debit while a credit stands whose reversal was refused",
        {"a": 500, "b": 0},
        (
            (DEBIT, ID, "a", 200),
            (CREDIT, ID, "b", 200),
            (DEBIT, "t-spend", "b", 150),
            (COMPENSATE_CREDIT, ID, "b", 200),
        ),
        (COMPENSATE_DEBIT, "a", 200),
        (409, "transfer_completed", None, 200, None),
        300,
    ),
    Case(
        "compensate_debit after the credit was reversed",
        {"a": 500, "b": 0},
        ((DEBIT, ID, "a", 200), (CREDIT, ID, "b", 200), (COMPENSATE_CREDIT, ID, "b", 200)),
        (COMPENSATE_DEBIT, "a", 200),
        (200, None, "reversed", 200, 500),
        500,
    ),
    Case(
        "compensate_debit after a refused credit",
        {"a": 500, "b": MAX_BALANCE},
        ((DEBIT, ID, "a", 200), (CREDIT, ID, "b", 200)),
        (COMPENSATE_DEBIT, "a", 200),
        (200, None, "reversed", 200, 500),
        500,
    ),
    Case(
        "compensate_credit reverses to exactly 0",
        {"b": 0},
        ((CREDIT, ID, "b", 70),),
        (COMPENSATE_CREDIT, "b", 70),
        (200, None, "reversed", 70, 0),
        0,
    ),
    Case(
        "compensate_credit of spent money",
        {"b": 0},
        ((CREDIT, ID, "b", 70), (DEBIT, "t-spend", "b", 1)),
        (COMPENSATE_CREDIT, "b", 70),
        (409, "insufficient_funds", None, 70, None),
        69,
    ),
    Case(
        "compensate_credit with nothing to undo",
        {"b": 40},
        (),
        (COMPENSATE_CREDIT, "b", 70),
        (200, None, "voided", 70, 40),
        40,
    ),
    Case(
        "compensate_credit of a refused credit",
        {"b": MAX_BALANCE},
        ((CREDIT, ID, "b", 70),),
        (COMPENSATE_CREDIT, "b", 70),
        (200, None, "voided", 70, MAX_BALANCE),
        MAX_BALANCE,
    ),
    Case(
        "compensate_credit of an unknown user",
        {"b": 0},
        (),
        (COMPENSATE_CREDIT, "zed", 5),
        (404, "unknown_user", None, 5, None),
        None,
    ),
    Case(
        "compensate_credit after transfer_completed",
        {"a": 500, "b": 0},
        ((DEBIT, ID, "a", 200), (CREDIT, ID, "b", 200), (COMPENSATE_DEBIT, ID, "a", 200)),
        (COMPENSATE_CREDIT, "b", 200),
        (409, "transfer_completed", None, 200, None),
        200,
    ),
    Case(
        "compensate_credit after a voided compensate_debit",
        {"a": 500, "b": 0},
        ((COMPENSATE_DEBIT, ID, "a", 200), (CREDIT, ID, "b", 200)),
        (COMPENSATE_CREDIT, "b", 200),
        (200, None, "reversed", 200, 0),
        0,
    ),
]


def fields(entry: Entry) -> tuple[Any, ...]:
    return (
        entry.transaction_id,
        entry.operation,
        entry.user_id,
        entry.status,
        entry.rejection,
        entry.outcome,
        entry.amount,
        entry.balance,
    )


async def answer_twice(factory: StoreFactory, case: Case, folder: Path) -> None:
    operation, user_id, amount = case.request
    async with factory(case.accounts, folder) as store:
        for earlier in case.before:
            await store.execute(*earlier)
        total_before = sum(account.balance for account in await store.accounts())
        first = await store.execute(operation, ID, user_id, amount)
        assert first is not None
        entry, was_replayed = first
        status, code, outcome, recorded_amount, balance = case.expected
        assert fields(entry) == (ID, operation, user_id, status, code, outcome, recorded_amount, balance)
        assert was_replayed is False
        assert await store.balance(user_id) == case.balance_after
        after_first = await store.accounts()

        again = await store.execute(operation, ID, user_id, amount)
        assert again is not None
        assert (fields(again[0]), again[1]) == (fields(entry), True)
        assert await store.accounts() == after_first, "a replay moves nothing"
        assert await store.execute(operation, ID, user_id, amount, apply_new=False) is not None

        trail = await store.trail(ID)
        assert [fields(recorded) for recorded in trail if recorded.operation == operation] == [fields(entry)]
        assert [recorded.sequence for recorded in trail] == sorted(recorded.sequence for recorded in trail)
        moved = entry.delta
        assert sum(account.balance for account in after_first) == total_before + moved
        await store.check_invariants()


@pytest.mark.parametrize("store_name", sorted(STORES))
@pytest.mark.parametrize("case", CASES, ids=[case.name.replace(" ", "-") for case in CASES])
def test_each_answer_is_recorded_field_by_field_and_replayed_exactly(
    case: Case, store_name: str, tmp_path: Path
) -> None:
    asyncio.run(answer_twice(STORES[store_name], case, tmp_path))


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_a_debit_that_cannot_be_given_back_for_want_of_room_is_given_back_once_there_is_room(
    store_name: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with STORES[store_name]({"a": 500}, tmp_path) as store:
            await store.execute(DEBIT, ID, "a", 200)
            await store.execute(CREDIT, "t-fill", "a", MAX_BALANCE - 499)
            for _ in range(2):
                refused = await store.execute(COMPENSATE_DEBIT, ID, "a", 200)
                assert refused is not None
                entry, was_replayed = refused
                assert fields(entry) == (
                    ID,
                    COMPENSATE_DEBIT,
                    "a",
                    409,
                    "reversal_exceeds_balance_limit",
                    None,
                    200,
                    None,
                )
                assert was_replayed is False, "a refusal for want of room is never replayed"
                assert await store.balance("a") == MAX_BALANCE - 199
                assert [recorded.operation for recorded in await store.trail(ID)] == [DEBIT]
                assert await store.execute(COMPENSATE_DEBIT, ID, "a", 200, apply_new=False) is None
                await store.check_invariants()

            await store.execute(DEBIT, "t-room", "a", 200)
            given_back = await store.execute(COMPENSATE_DEBIT, ID, "a", 200)
            assert given_back is not None
            assert (fields(given_back[0]), given_back[1]) == (
                (ID, COMPENSATE_DEBIT, "a", 200, None, "reversed", 200, MAX_BALANCE - 199),
                False,
            )
            again = await store.execute(COMPENSATE_DEBIT, ID, "a", 200)
            assert again is not None
            assert (fields(again[0]), again[1]) == (fields(given_back[0]), True)
            assert await store.balance("a") == MAX_BALANCE - 199
            trail = await store.trail(ID)
            assert [(recorded.operation, recorded.outcome) for recorded in trail] == [
                (DEBIT, "applied"),
                (COMPENSATE_DEBIT, "reversed"),
            ]
            assert [recorded.sequence for recorded in trail] == sorted(recorded.sequence for recorded in trail)
            await store.check_invariants()

    asyncio.run(scenario())


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_a_new_request_is_neither_decided_nor_recorded_when_new_requests_are_refused(
    store_name: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with STORES[store_name]({"a": 500}, tmp_path) as store:
            assert await store.execute(DEBIT, ID, "a", 100, apply_new=False) is None
            assert await store.trail(ID) == []
            assert await store.balance("a") == 500
            await store.execute(DEBIT, ID, "a", 100)
            with pytest.raises(IdempotencyKeyReused):
                await store.execute(DEBIT, ID, "a", 101, apply_new=False)

    asyncio.run(scenario())


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_another_body_under_a_used_id_is_refused_and_names_what_was_recorded(store_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with STORES[store_name]({"a": 500, "b": 500}, tmp_path) as store:
            await store.execute(CREDIT, ID, "a", 100)
            for user_id, amount in (("a", 101), ("b", 100)):
                with pytest.raises(IdempotencyKeyReused) as refused:
                    await store.execute(CREDIT, ID, user_id, amount)
                assert (refused.value.transaction_id, refused.value.operation) == (ID, CREDIT)
                assert (refused.value.recorded.user_id, refused.value.recorded.amount) == ("a", 100)
                assert (
                    str(refused.value)
                    == f"transaction_id {ID!r} was already used for credit with user_id 'a' and amount 100"
                )
            with pytest.raises(IdempotencyKeyReused) as unlike:
                await store.execute(COMPENSATE_CREDIT, ID, "a", 99)
            assert (unlike.value.transaction_id, unlike.value.operation) == (ID, COMPENSATE_CREDIT)
            assert (unlike.value.recorded.operation, unlike.value.recorded.amount) == (CREDIT, 100)
            # The message names what the id was used for: the credit a compensation must match.
            assert str(unlike.value) == (
                f"transaction_id {ID!r} was already used for credit with user_id 'a' and amount 100"
            )
            assert await store.balance("a") == 600
            assert [entry.operation for entry in await store.trail(ID)] == [CREDIT]

    asyncio.run(scenario())


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_accounts_open_at_zero_and_at_the_limit_and_are_listed_in_order(store_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with STORES[store_name]({"zoe": MAX_BALANCE, "adam": 0}, tmp_path) as store:
            assert await store.accounts() == [Account("adam", 0, 0), Account("zoe", MAX_BALANCE, MAX_BALANCE)]
            assert await store.balance("nobody") is None
            await store.check_invariants()

    asyncio.run(scenario())


def test_an_opening_balance_must_be_an_integer_from_0_to_the_limit() -> None:
    assert Ledger({"x": MAX_BALANCE}).balance("x") == MAX_BALANCE
    assert Ledger({"x": 0}).balance("x") == 0
    for bad in (MAX_BALANCE + 1, -1, 1.0, True):
        with pytest.raises(ValueError, match=rf"balance of 'x' must be an integer from 0 to {MAX_BALANCE}"):
            Ledger({"x": bad})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="balance of 'x' must be an integer from 0 to 10"):
        Ledger({"x": 11}, max_balance=10)


def test_an_account_is_opened_only_where_it_does_not_exist() -> None:
    ledger = Ledger({"a": 5}, max_balance=100)
    assert ledger.open_account("a", 50) is False
    assert ledger.balance("a") == 5
    assert ledger.open_account("b", 100) is True
    assert ledger.open_account("c", 0) is True
    assert [(account.user_id, account.balance) for account in ledger.accounts()] == [("a", 5), ("b", 100), ("c", 0)]
    for bad in (101, -1, 2.0):
        with pytest.raises(ValueError, match="balance of 'd' must be an integer from 0 to 100"):
            ledger.open_account("d", bad)  # type: ignore[arg-type]
    assert ledger.balance("d") is None
    ledger.execute(DEBIT, ID, "b", 30)
    ledger.check_invariants()
    # What an opened account started with is what its reopened ledger starts from.
    reopened = ledger.reopened()
    reopened.check_invariants()
    assert reopened.total() == ledger.total() == 5 + 70


def test_a_reopened_ledger_keeps_its_balance_limit() -> None:
    ledger = Ledger({"a": 5}, max_balance=10)
    reopened = ledger.reopened()
    refused, _ = reopened.execute(CREDIT, "t1", "a", 6)
    accepted, _ = reopened.execute(CREDIT, "t2", "a", 5)
    assert (refused.rejection, accepted.balance) == ("balance_limit_exceeded", 10)


def test_a_memory_store_keeps_the_balance_limit_it_was_created_with() -> None:
    async def scenario() -> None:
        store = MemoryStore.create({"a": 5}, max_balance=10)
        refused = await store.execute(CREDIT, "t1", "a", 6)
        assert refused is not None
        assert refused[0].rejection == "balance_limit_exceeded"

    asyncio.run(scenario())


def test_the_invariant_check_counts_an_account_without_an_opening_balance_from_zero() -> None:
    ledger = Ledger({"a": 500})
    ledger._balances["new"] = 7  # money that reached an account only through the journal
    ledger._journal.append(Entry("t9", CREDIT, "new", 7, 99, outcome="applied", balance=7))
    ledger.check_invariants()


def test_the_memory_store_reloads_balances_replays_and_fences_from_its_record() -> None:
    async def scenario() -> None:
        store = MemoryStore.create({"a": 500, "b": 0})
        applied = await store.execute(DEBIT, "t1", "a", 100)
        await store.execute(COMPENSATE_CREDIT, "t2", "b", 50)
        store.reload()
        assert await store.accounts() == [Account("a", 400, 500), Account("b", 0, 0)]
        assert await store.execute(DEBIT, "t1", "a", 100) == (applied[0] if applied else None, True)
        late = await store.execute(CREDIT, "t2", "b", 50)
        assert late is not None
        assert late[0].rejection == "transaction_compensated"
        await store.check_invariants()
        await store.close()

    asyncio.run(scenario())


def test_the_ledger_counts_and_totals_what_it_recorded() -> None:
    ledger = Ledger({"a": 500, "b": 20})
    assert (len(ledger), ledger.total()) == (0, 520)
    ledger.execute(DEBIT, "t1", "a", 100)
    ledger.execute(DEBIT, "t2", "a", 1_000)
    ledger.execute(CREDIT, "t1", "b", 100)
    assert (len(ledger), ledger.total()) == (3, 520)
    assert [(entry.operation, entry.delta) for entry in ledger.journal()] == [(DEBIT, -100), (CREDIT, 100)]


def test_entries_describe_themselves_by_what_they_did() -> None:
    ledger = Ledger({"a": 500})
    applied, _ = ledger.execute(DEBIT, "t1", "a", 100)
    refused, _ = ledger.execute(DEBIT, "t2", "a", 1_000)
    assert repr(applied) == "Entry(debit t1 a 100: applied balance=400)"
    assert repr(refused) == "Entry(debit t2 a 1000: insufficient_funds)"
    voided, _ = ledger.execute(COMPENSATE_DEBIT, "t3", "a", 5)
    assert (voided.took_effect, voided.delta, applied.took_effect, refused.took_effect) == (False, 0, True, False)


def test_decide_refuses_an_operation_already_recorded_and_an_unknown_one() -> None:
    recorded, _ = Ledger({"a": 500}).execute(DEBIT, ID, "a", 5)
    with pytest.raises(InvariantViolation, match="debit t-1 is already recorded"):
        decide(DEBIT, ID, "a", 5, balance=500, recorded={DEBIT: recorded}, sequence=2)
    with pytest.raises(ValueError, match="unknown operation 'refund'"):
        decide("refund", ID, "a", 5, balance=500, recorded={}, sequence=2)  # type: ignore[arg-type]
    assert replayed(DEBIT, ID, "a", 5, None) is None
    assert replayed(DEBIT, ID, "a", 5, recorded) is recorded


def test_decide_records_the_sequence_it_is_given() -> None:
    entry = decide(CREDIT, ID, "a", 5, balance=10, recorded={}, sequence=41)
    assert (entry.sequence, entry.balance) == (41, 15)
    assert decide(CREDIT, ID, "a", 5, balance=10, recorded={}, sequence=1, max_balance=14).rejection == (
        "balance_limit_exceeded"
    )


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda ledger: ledger._balances.__setitem__("a", -1), "balance of 'a' is negative: -1"),
        (lambda ledger: ledger._journal.append(ledger._journal[0]), "debit t1 moved money twice"),
        (
            lambda ledger: ledger._journal.append(
                Entry("t9", COMPENSATE_CREDIT, "a", 5, 99, outcome="reversed", balance=400)
            ),
            "reverses nothing",
        ),
    ],
)
def test_the_invariant_check_names_what_broke(tamper: Callable[[Ledger], None], message: str) -> None:
    ledger = Ledger({"a": 500})
    ledger.execute(DEBIT, "t1", "a", 100)
    ledger.check_invariants()
    tamper(ledger)
    with pytest.raises(InvariantViolation, match=message):
        ledger.check_invariants()
