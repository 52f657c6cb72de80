"""The run's judge, on hand-made ledgers and saga logs: each invariant catches what it names."""

from __future__ import annotations

from types import MappingProxyType

from saga.records import AccountRef, SagaRecord
from saga.simulation.invariants import applied_twice, check_run
from saga.simulation.workload import service_url
from saga.states import SagaState
from server.ledger import COMPENSATE_DEBIT, CREDIT, DEBIT, Entry, Ledger

HOST = "bank-0.sim"
URL = service_url(HOST)
OPENING = MappingProxyType({"alice": 1_000, "bob": 1_000})


def fresh_ledgers() -> dict[str, Ledger]:
    return {HOST: Ledger(OPENING)}


def opening() -> dict[str, dict[str, int]]:
    return {URL: dict(OPENING)}


def saga(transaction_id: str, state: SagaState, amount: int = 100) -> SagaRecord:
    return SagaRecord(transaction_id, AccountRef(URL, "alice"), AccountRef(URL, "bob"), amount, state)


def invariants_broken(ledgers: dict[str, Ledger], records: list[SagaRecord]) -> set[str]:
    return {violation.invariant for violation in check_run(opening(), ledgers, records)}


def test_a_completed_transfer_and_an_undone_one_break_nothing() -> None:
    ledgers = fresh_ledgers()
    ledger = ledgers[HOST]
    ledger.apply(DEBIT, "t-1", "alice", 100)
    ledger.apply(CREDIT, "t-1", "bob", 100)
    ledger.apply(DEBIT, "t-2", "bob", 50)
    ledger.apply(COMPENSATE_DEBIT, "t-2", "bob", 50)
    assert (
        check_run(opening(), ledgers, [saga("t-1", SagaState.COMPLETED), saga("t-2", SagaState.COMPENSATED, 50)]) == []
    )


def test_a_completed_saga_whose_credit_never_landed_loses_money() -> None:
    ledgers = fresh_ledgers()
    ledgers[HOST].apply(DEBIT, "t-1", "alice", 100)
    assert invariants_broken(ledgers, [saga("t-1", SagaState.COMPLETED)]) == {
        "money conserved",
        "balances match the sagas",
        "audit agrees with COMPLETED",
    }


def test_a_compensated_saga_whose_debit_stands_disagrees_with_the_audit_trail() -> None:
    ledgers = fresh_ledgers()
    ledgers[HOST].apply(DEBIT, "t-1", "alice", 100)
    ledgers[HOST].apply(CREDIT, "t-1", "bob", 100)
    broken = invariants_broken(ledgers, [saga("t-1", SagaState.COMPENSATED)])
    assert broken == {"balances match the sagas", "audit agrees with COMPENSATED"}


def test_an_unfinished_saga_is_reported() -> None:
    assert invariants_broken(fresh_ledgers(), [saga("t-1", SagaState.CREDITING)]) == {"every saga terminal"}


def test_money_moved_for_a_saga_the_log_never_recorded_is_reported() -> None:
    ledgers = fresh_ledgers()
    ledgers[HOST].apply(DEBIT, "t-ghost", "alice", 100)
    broken = invariants_broken(ledgers, [])
    assert "money moves only for logged sagas" in broken
    assert "money conserved" in broken


def test_an_operation_that_moved_money_twice_is_reported() -> None:
    twice = [Entry("t-1", DEBIT, "alice", 100, sequence, outcome="applied", balance=900) for sequence in (0, 1)]
    (violation,) = applied_twice({HOST: twice})
    assert violation.invariant == "no operation applied twice"
    assert violation.transaction_ids == ("t-1",)
    assert applied_twice({HOST: twice[:1]}) == []
