"""Deadlines and operators in the simulator: the invariants on hand-made records, then real runs that exercise them.

The workload gives a share of the transfers a deadline and submits a share
as PENDING for the orchestrators to claim; operators cancel PENDING sagas
(racing the claims) and retry COMPENSATING ones. The run must break no
invariant, and must exercise each case: sagas cut short mid-way and before
their debit, cancels that win and cancels that lose, retries that land.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from saga.records import AccountRef, ActionKind, Attempt, Event, OperatorAction, SagaRecord
from saga.retry import RetryPolicies
from saga.run import SagaRun
from saga.simulation import SimulationResult, no_faults, simulate
from saga.simulation.invariants import check_deadlines, check_epochs, check_operator_ends
from saga.simulation.network import SentRequest
from saga.simulation.report import violation_report
from saga.simulation.workload import service_url
from saga.states import SagaState
from saga.workflow import DEADLINE_EXCEEDED, OUTCOME_UNKNOWN

URL = service_url("bank-0.sim")
DEADLINE_MS = 10_000
SEEDS = range(1, 7)


def saga(state: SagaState, code: str | None = None, *, epoch: int = 1, tid: str = "t-1") -> SagaRecord:
    record = SagaRecord(tid, AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100, state, deadline_ms=DEADLINE_MS)
    record.epoch, record.code = epoch, code
    return record


def request(step: str, sender_ms: int, tid: str = "t-1") -> SentRequest:
    return SentRequest(sender_ms, sender_ms, tid, step, "bank-0.sim")


def attempt(step: str, number: int, status: int | None, at_ms: int, epoch: int = 1) -> Event:
    return Event("t-1", at_ms, "attempt", attempt=Attempt(step, number, status, None, 0), owner="o", epoch=epoch)


def state(entered: SagaState, at_ms: int, epoch: int = 1) -> Event:
    return Event("t-1", at_ms, "state", state=entered, owner="o", epoch=epoch)


def deadline_invariants(
    record: SagaRecord, history: Sequence[Event] = (), sent: Sequence[SentRequest] = ()
) -> set[str]:
    violations = check_deadlines([record], {record.transaction_id: list(history)}, list(sent), RetryPolicies())
    return {violation.invariant for violation in violations}


# -- the invariants, on hand-made records ---------------------------------------------


def test_a_debit_or_credit_sent_at_or_after_the_deadline_on_its_senders_clock_is_reported() -> None:
    completed = saga(SagaState.COMPLETED)
    in_time = [request("debit", DEADLINE_MS - 5), request("credit", DEADLINE_MS - 1)]
    assert deadline_invariants(completed, sent=in_time) == set()
    late = [request("debit", DEADLINE_MS - 5), request("credit", DEADLINE_MS)]
    assert deadline_invariants(completed, sent=late) == {"no forward request after the deadline"}


def test_compensations_and_reads_after_the_deadline_are_fine() -> None:
    compensated = saga(SagaState.COMPENSATED, DEADLINE_EXCEEDED)
    sent = [request("debit", 1), request("read", DEADLINE_MS + 1), request("compensate_debit", DEADLINE_MS + 5)]
    history = [attempt("debit", 1, None, 2), state(SagaState.COMPENSATING, DEADLINE_MS + 3)]
    assert deadline_invariants(compensated, history, sent) == set()


def test_a_saga_that_sent_no_debit_must_fail_with_deadline_exceeded() -> None:
    history = [state(SagaState.FAILED, DEADLINE_MS)]
    assert deadline_invariants(saga(SagaState.FAILED, DEADLINE_EXCEEDED), history) == set()
    broken = deadline_invariants(saga(SagaState.COMPENSATED, OUTCOME_UNKNOWN), history)
    assert "a saga whose debit never went out before its deadline fails" in broken


def test_a_saga_failed_on_its_deadline_whose_debit_reached_the_network_is_reported() -> None:
    history = [state(SagaState.FAILED, DEADLINE_MS)]
    broken = deadline_invariants(saga(SagaState.FAILED, DEADLINE_EXCEEDED), history, [request("debit", 5)])
    assert "a saga whose debit never went out before its deadline fails" in broken


@pytest.mark.parametrize(
    ("history", "code"),
    [
        # Decided before the deadline: the deadline cut nothing short.
        ([attempt("credit", 1, 409, 20), state(SagaState.COMPENSATING, 30)], DEADLINE_EXCEEDED),
        # Decided after it, with the credit unanswered and attempts left: it did.
        ([attempt("credit", 1, None, 20), state(SagaState.COMPENSATING, DEADLINE_MS + 1)], OUTCOME_UNKNOWN),
        # The debit applied, no credit went out, decided after it: it did.
        ([attempt("debit", 1, 200, 20), state(SagaState.COMPENSATING, DEADLINE_MS)], OUTCOME_UNKNOWN),
        # The credit's attempts ran out, decided after it: it did not.
        (
            [*(attempt("credit", n, None, n) for n in (1, 2, 3)), state(SagaState.COMPENSATING, DEADLINE_MS + 1)],
            DEADLINE_EXCEEDED,
        ),
    ],
    ids=["decided-in-time", "cut-short-mid-credit", "cut-short-before-credit", "credit-attempts-ran-out"],
)
def test_an_end_whose_code_disagrees_with_what_its_history_says_of_the_deadline_is_reported(
    history: list[Event], code: str
) -> None:
    assert deadline_invariants(saga(SagaState.COMPENSATED, code), [attempt("debit", 1, 200, 10), *history], []) == {
        "deadline codes agree with the history"
    }


def test_every_failed_and_compensated_end_has_a_code_and_a_cancelled_one_says_cancelled() -> None:
    assert "every end has a code" in deadline_invariants(saga(SagaState.FAILED), [], [request("debit", 1)])
    assert "every end has a code" in deadline_invariants(saga(SagaState.CANCELLED, "moved_by_hand", epoch=0))


def operator_invariants(record: SagaRecord, history: Sequence[Event], sent: Sequence[SentRequest] = ()) -> set[str]:
    violations = check_operator_ends([record], {record.transaction_id: list(history)}, list(sent))
    return {violation.invariant for violation in violations}


def cancel_event(landed: bool) -> Event:
    action = OperatorAction("t-1", ActionKind.CANCEL, "operator", "called off", 5)
    return Event(
        "t-1", 5, "action", state=SagaState.CANCELLED if landed else None, owner="operator", epoch=0, action=action
    )


def test_a_cancelled_saga_that_sent_anything_is_reported() -> None:
    cancelled = saga(SagaState.CANCELLED, "cancelled", epoch=0)
    assert operator_invariants(cancelled, [cancel_event(True)]) == set()
    assert operator_invariants(cancelled, [cancel_event(True)], [request("read", 7)]) == {
        "a cancelled saga sent nothing"
    }


def test_a_saga_both_cancelled_and_claimed_is_reported() -> None:
    claim = Event("t-1", 6, "claim", owner="orchestrator-0.0", epoch=1)
    assert operator_invariants(saga(SagaState.CANCELLED, "cancelled", epoch=1), [cancel_event(True), claim]) == {
        "a cancel and a claim never both win"
    }


def test_an_operators_action_is_no_drivers_commit_in_its_epoch() -> None:
    history = [
        Event("t-1", 1, "claim", owner="orchestrator-0.0", epoch=1),
        Event("t-1", 2, "state", state=SagaState.COMPENSATING, owner="orchestrator-0.0", epoch=1),
        Event("t-1", 3, "action", owner="operator", epoch=1),
    ]
    assert check_epochs({"t-1": history}) == []


# -- real runs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs() -> list[SimulationResult]:
    return [simulate(seed, 200) for seed in SEEDS]


def test_runs_with_deadlines_and_operators_break_no_invariant(runs: list[SimulationResult]) -> None:
    broken = [violation_report(result) for result in runs if result.violations]
    assert not broken, "\n\n".join(broken)


def test_deadlines_cut_sagas_short_both_mid_way_and_before_their_debit(runs: list[SimulationResult]) -> None:
    ends: Counter[SagaState] = Counter(
        saga.state for result in runs for saga in result.sagas if saga.code == DEADLINE_EXCEEDED
    )
    assert ends[SagaState.COMPENSATED] >= 20, ends
    assert ends[SagaState.FAILED] > 0, ends
    assert sum(result.deadlines for result in runs) > 400


def test_operators_win_and_lose_cancels_and_retry_compensations(runs: list[SimulationResult]) -> None:
    actions: Counter[str] = Counter()
    for result in runs:
        actions.update(result.operator_actions)
    assert actions["cancel"] > 0, actions
    assert actions["cancel_refused"] > 0, actions
    assert actions["retry"] > 0, actions
    cancelled = [saga for result in runs for saga in result.sagas if saga.state is SagaState.CANCELLED]
    assert len(cancelled) == actions["cancel"]
    assert all(saga.code == "cancelled" and saga.epoch == 0 for saga in cancelled)


def test_without_faults_no_deadline_expires_mid_saga_and_no_operator_acts() -> None:
    for seed in (11, 12):
        result = simulate(seed, 100, rates=no_faults())
        assert result.violations == []
        assert result.deadlines > 0
        assert result.deadlines_expired == 0
        assert result.operator_actions == {}


def test_a_saga_that_ignores_its_deadline_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def never_passed(run: SagaRun) -> bool:
        return False

    monkeypatch.setattr(SagaRun, "_deadline_passed", never_passed)
    result = simulate(1, 200)
    broken = {violation.invariant for violation in result.violations}
    assert "no forward request after the deadline" in broken, broken
