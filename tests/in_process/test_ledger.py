"""Every ledger rule, on the domain object alone (no HTTP)."""

from __future__ import annotations

import pytest

from server.ledger import (
    COMPENSATE_CREDIT,
    COMPENSATE_DEBIT,
    CREDIT,
    DEBIT,
    MAX_BALANCE,
    IdempotencyKeyReused,
    InvariantViolation,
    Ledger,
)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger({"alice": 1_000, "bob": 500})


def test_debit_takes_the_amount_and_reports_the_new_balance(ledger: Ledger) -> None:
    entry, replayed = ledger.execute(DEBIT, "t1", "alice", 300)
    assert (entry.outcome, entry.balance, entry.status, replayed) == ("applied", 700, 200, False)
    assert ledger.balance("alice") == 700


def test_credit_adds_the_amount(ledger: Ledger) -> None:
    entry, _ = ledger.execute(CREDIT, "t1", "bob", 250)
    assert (entry.outcome, entry.balance) == ("applied", 750)


def test_duplicate_replays_the_first_answer_and_changes_nothing(ledger: Ledger) -> None:
    first, _ = ledger.execute(DEBIT, "t1", "alice", 300)
    ledger.execute(CREDIT, "t2", "alice", 50)
    again, replayed = ledger.execute(DEBIT, "t1", "alice", 300)
    assert replayed is True
    assert again is first
    assert again.balance == 700, "a replay answers the balance recorded at the time"
    assert ledger.balance("alice") == 750


def test_same_id_and_operation_with_another_body_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 300)
    with pytest.raises(IdempotencyKeyReused):
        ledger.execute(DEBIT, "t1", "alice", 301)
    with pytest.raises(IdempotencyKeyReused):
        ledger.execute(DEBIT, "t1", "bob", 300)
    assert ledger.balance("alice") == 700
    assert ledger.balance("bob") == 500


def test_the_same_id_may_carry_each_operation_once(ledger: Ledger) -> None:
    debit, _ = ledger.execute(DEBIT, "t1", "alice", 100)
    credit, _ = ledger.execute(CREDIT, "t1", "bob", 100)
    assert debit.outcome == credit.outcome == "applied"
    assert ledger.total() == 1_500


def test_overdraft_is_refused_recorded_and_replayed_even_after_a_deposit(ledger: Ledger) -> None:
    entry, _ = ledger.execute(DEBIT, "t1", "bob", 501)
    assert (entry.rejection, entry.status) == ("insufficient_funds", 409)
    ledger.execute(CREDIT, "t2", "bob", 1_000)
    again, replayed = ledger.execute(DEBIT, "t1", "bob", 501)
    assert (again.rejection, replayed) == ("insufficient_funds", True)
    assert ledger.balance("bob") == 1_500


def test_a_debit_of_the_whole_balance_leaves_zero(ledger: Ledger) -> None:
    entry, _ = ledger.execute(DEBIT, "t1", "bob", 500)
    assert entry.balance == 0


def test_unknown_user_is_refused_with_404_and_recorded(ledger: Ledger) -> None:
    for operation in (DEBIT, CREDIT, COMPENSATE_DEBIT, COMPENSATE_CREDIT):
        entry, _ = ledger.execute(operation, f"t-{operation}", "zed", 1)
        assert (entry.rejection, entry.status) == ("unknown_user", 404)
        assert ledger.trail(f"t-{operation}") == [entry]


def test_credit_beyond_the_balance_limit_is_refused() -> None:
    ledger = Ledger({"rich": MAX_BALANCE - 10})
    refused, _ = ledger.execute(CREDIT, "t1", "rich", 11)
    assert (refused.rejection, refused.status) == ("balance_limit_exceeded", 409)
    accepted, _ = ledger.execute(CREDIT, "t2", "rich", 10)
    assert accepted.balance == MAX_BALANCE


def test_a_debit_given_back_into_a_full_account_waits_for_room_and_leaves_no_trace_meanwhile() -> None:
    ledger = Ledger({"alice": 1_000}, max_balance=1_000)
    ledger.execute(DEBIT, "t1", "alice", 300)
    ledger.execute(CREDIT, "t2", "alice", 250)
    refused, replayed = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    assert (refused.rejection, refused.status, refused.final, replayed) == (
        "reversal_exceeds_balance_limit",
        409,
        False,
        False,
    )
    assert (ledger.balance("alice"), len(ledger)) == (950, 2)
    assert ledger.recorded(COMPENSATE_DEBIT, "t1", "alice", 300) is None
    # Still no room: refused again, afresh.
    again, replayed = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    assert (again.rejection, replayed, ledger.balance("alice"), len(ledger)) == (
        "reversal_exceeds_balance_limit",
        False,
        950,
        2,
    )
    ledger.execute(DEBIT, "t3", "alice", 250)
    given_back, replayed = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    assert (given_back.outcome, given_back.balance, given_back.final, replayed) == ("reversed", 1_000, True, False)
    assert ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300) == (given_back, True)
    assert [(entry.operation, entry.outcome) for entry in ledger.trail("t1")] == [
        (DEBIT, "applied"),
        (COMPENSATE_DEBIT, "reversed"),
    ]
    ledger.check_invariants()


def test_a_credit_beyond_the_limit_is_refused_for_good() -> None:
    ledger = Ledger({"alice": 900}, max_balance=1_000)
    refused, _ = ledger.execute(CREDIT, "t1", "alice", 101)
    assert (refused.rejection, refused.final) == ("balance_limit_exceeded", True)
    ledger.execute(DEBIT, "t2", "alice", 500)
    assert ledger.execute(CREDIT, "t1", "alice", 101) == (refused, True)
    assert ledger.balance("alice") == 400


def test_compensate_debit_gives_back_exactly_what_the_debit_took(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 300)
    entry, _ = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    assert (entry.outcome, entry.balance) == ("reversed", 1_000)
    again, replayed = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    assert (again.outcome, replayed) == ("reversed", True)
    assert ledger.balance("alice") == 1_000


def test_compensation_with_a_body_unlike_the_recorded_debit_is_refused(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 300)
    with pytest.raises(IdempotencyKeyReused):
        ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 900)
    assert ledger.balance("alice") == 700
    assert ledger.recorded(COMPENSATE_DEBIT, "t1", "alice", 900) is None


def test_compensation_without_a_debit_voids_the_id_and_mints_nothing(ledger: Ledger) -> None:
    entry, _ = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    assert (entry.outcome, entry.balance) == ("voided", 1_000)
    assert ledger.total() == 1_500


def test_a_debit_arriving_after_its_compensation_never_lands(ledger: Ledger) -> None:
    ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 300)
    late, _ = ledger.execute(DEBIT, "t1", "alice", 300)
    assert (late.rejection, late.status) == ("transaction_compensated", 409)
    assert ledger.balance("alice") == 1_000


def test_a_credit_arriving_after_its_compensation_never_lands(ledger: Ledger) -> None:
    voided, _ = ledger.execute(COMPENSATE_CREDIT, "t1", "bob", 300)
    assert voided.outcome == "voided"
    late, _ = ledger.execute(CREDIT, "t1", "bob", 300)
    assert late.rejection == "transaction_compensated"
    assert ledger.balance("bob") == 500


def test_a_rejected_debit_is_voided_not_reversed(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "bob", 10_000)
    entry, _ = ledger.execute(COMPENSATE_DEBIT, "t1", "bob", 10_000)
    assert entry.outcome == "voided"
    assert ledger.balance("bob") == 500


def test_compensate_credit_reverses_an_applied_credit(ledger: Ledger) -> None:
    ledger.execute(CREDIT, "t1", "bob", 200)
    entry, _ = ledger.execute(COMPENSATE_CREDIT, "t1", "bob", 200)
    assert (entry.outcome, entry.balance) == ("reversed", 500)


def test_compensate_credit_of_spent_money_is_refused_and_the_credit_stands(ledger: Ledger) -> None:
    ledger.execute(CREDIT, "t1", "bob", 200)
    ledger.execute(DEBIT, "t2", "bob", 600)
    entry, _ = ledger.execute(COMPENSATE_CREDIT, "t1", "bob", 200)
    assert (entry.rejection, entry.status) == ("insufficient_funds", 409)
    assert ledger.balance("bob") == 100


def test_compensate_debit_is_refused_while_the_same_service_holds_the_credit(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 100)
    ledger.execute(CREDIT, "t1", "bob", 100)
    entry, _ = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 100)
    assert (entry.rejection, entry.status) == ("transfer_completed", 409)
    assert ledger.total() == 1_500


def test_after_transfer_completed_the_credit_cannot_be_reversed_and_no_money_is_destroyed(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 500)
    ledger.execute(CREDIT, "t1", "bob", 500)
    refused_debit_undo, _ = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 500)
    refused_credit_undo, _ = ledger.execute(COMPENSATE_CREDIT, "t1", "bob", 500)
    assert (refused_debit_undo.rejection, refused_credit_undo.rejection) == ("transfer_completed", "transfer_completed")
    assert refused_credit_undo.status == 409
    assert (ledger.balance("alice"), ledger.balance("bob"), ledger.total()) == (500, 1_000, 1_500)
    replay, replayed = ledger.execute(COMPENSATE_CREDIT, "t1", "bob", 500)
    assert (replay.rejection, replayed) == ("transfer_completed", True)
    ledger.check_invariants()


def test_compensate_debit_is_allowed_once_the_credit_was_reversed(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 100)
    ledger.execute(CREDIT, "t1", "bob", 100)
    ledger.execute(COMPENSATE_CREDIT, "t1", "bob", 100)
    entry, _ = ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 100)
    assert entry.outcome == "reversed"
    assert (ledger.balance("alice"), ledger.balance("bob")) == (1_000, 500)


def test_trail_lists_the_entries_in_the_order_recorded(ledger: Ledger) -> None:
    ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 5)
    ledger.execute(DEBIT, "t1", "alice", 5)
    assert [(entry.operation, entry.outcome or entry.rejection) for entry in ledger.trail("t1")] == [
        (COMPENSATE_DEBIT, "voided"),
        (DEBIT, "transaction_compensated"),
    ]
    assert ledger.trail("never-seen") == []


def test_invariants_hold_after_a_mixed_history(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 100)
    ledger.execute(CREDIT, "t1", "bob", 100)
    ledger.execute(DEBIT, "t2", "bob", 50)
    ledger.execute(COMPENSATE_DEBIT, "t2", "bob", 50)
    ledger.execute(COMPENSATE_CREDIT, "t3", "alice", 7)
    ledger.check_invariants()
    assert [entry.transaction_id for entry in ledger.journal()] == ["t1", "t1", "t2", "t2"]


def test_invariant_check_catches_a_balance_changed_behind_the_journal(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 100)
    ledger._balances["alice"] += 1  # simulate a bug that moves money without a journal entry
    with pytest.raises(InvariantViolation, match="journal says 900"):
        ledger.check_invariants()


def test_negative_or_fractional_initial_balances_are_refused() -> None:
    with pytest.raises(ValueError, match="balance of 'x'"):
        Ledger({"x": -1})
    with pytest.raises(ValueError, match="balance of 'x'"):
        Ledger({"x": 1.5})  # type: ignore[dict-item]


def test_a_reopened_ledger_keeps_balances_replays_and_fences(ledger: Ledger) -> None:
    ledger.execute(DEBIT, "t1", "alice", 100)
    ledger.execute(CREDIT, "t1", "bob", 100)
    refused, _ = ledger.execute(DEBIT, "t2", "bob", 10_000)
    ledger.execute(COMPENSATE_DEBIT, "t3", "alice", 40)
    ledger.execute(COMPENSATE_CREDIT, "t4", "bob", 60)
    reopened = ledger.reopened()
    assert reopened.accounts() == ledger.accounts()
    assert list(reopened.journal()) == list(ledger.journal())
    assert len(reopened) == len(ledger)
    again, replayed = reopened.execute(DEBIT, "t2", "bob", 10_000)
    assert (again, replayed) == (refused, True)
    late_debit, _ = reopened.execute(DEBIT, "t3", "alice", 40)
    late_credit, _ = reopened.execute(CREDIT, "t4", "bob", 60)
    assert (late_debit.rejection, late_credit.rejection) == ("transaction_compensated", "transaction_compensated")
    assert (reopened.balance("alice"), reopened.balance("bob")) == (900, 600)
    reopened.check_invariants()


def test_a_reopened_ledger_goes_on_recording_after_what_it_read_back(ledger: Ledger) -> None:
    ledger.execute(COMPENSATE_DEBIT, "t1", "alice", 5)
    reopened = ledger.reopened()
    reopened.execute(DEBIT, "t1", "alice", 5)
    reopened.execute(DEBIT, "t2", "alice", 5)
    assert [entry.operation for entry in reopened.trail("t1")] == [COMPENSATE_DEBIT, DEBIT]
    assert ledger.trail("t2") == []
    assert (ledger.balance("alice"), reopened.balance("alice")) == (1_000, 995)
