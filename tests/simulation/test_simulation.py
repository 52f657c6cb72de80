"""The standard run: many seeds of the real saga against the real services under every fault, and no money lost."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from saga.run import StepResult
from saga.simulation import FAULT_CLASSES, SimulationResult, no_faults, simulate
from saga.simulation.report import violation_report
from saga.states import SagaState

STANDARD_SEEDS = range(1, 21)
STANDARD_TRANSFERS = 200


@pytest.fixture(scope="module")
def standard_runs() -> list[SimulationResult]:
    """20 seeds x 200 transfers, all in this process: the run every change must pass."""
    return [simulate(seed, STANDARD_TRANSFERS) for seed in STANDARD_SEEDS]


def test_the_standard_run_breaks_no_invariant(standard_runs: list[SimulationResult]) -> None:
    broken = [violation_report(result) for result in standard_runs if result.violations]
    assert not broken, "\n\n".join(broken)


def test_the_standard_run_injects_every_class_of_fault(standard_runs: list[SimulationResult]) -> None:
    injected: Counter[str] = Counter()
    for result in standard_runs:
        injected.update(result.fault_counts)
    never = [fault for fault in FAULT_CLASSES if injected[fault] == 0]
    assert not never, f"never injected over the standard run: {never} (all counts: {dict(injected)})"


def test_the_standard_run_ends_sagas_in_every_terminal_state(standard_runs: list[SimulationResult]) -> None:
    ended: Counter[SagaState] = Counter()
    for result in standard_runs:
        ended.update(result.states)
    # CANCELLED: the simulated operators cancel sagas no run has claimed yet.
    assert set(ended) == {SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED, SagaState.CANCELLED}


def test_the_standard_run_brings_debits_and_credits_to_their_fences(standard_runs: list[SimulationResult]) -> None:
    # A debit or credit landing after the saga compensated it must be refused.
    # Unless the run makes that happen, a ledger without the fence would pass.
    fenced: Counter[str] = Counter()
    for result in standard_runs:
        fenced.update(event.step for event in result.trace if event.answer.startswith("409 transaction_compensated"))
    assert fenced["debit"] > 0
    assert fenced["credit"] > 0


def test_the_standard_run_brings_late_requests_to_fences_recorded_before_a_restart(
    standard_runs: list[SimulationResult],
) -> None:
    # A restarted service must read its fences back: unless a debit or credit
    # meets a fence recorded before its service crashed, a store that loses
    # them on restart would pass.
    fenced_across_a_restart = 0
    for result in standard_runs:
        crashed_at: dict[str, list[int]] = {}
        fenced_at: dict[tuple[str, str], int] = {}
        for event in result.trace:
            if event.kind == "down":
                crashed_at.setdefault(event.service, []).append(event.at_ms)
            elif event.step.startswith("compensate_") and event.answer.startswith("200 voided"):
                fenced_at.setdefault((event.service, event.transaction_id), event.at_ms)
            elif event.answer.startswith("409 transaction_compensated"):
                fenced = fenced_at.get((event.service, event.transaction_id))
                crashes = crashed_at.get(event.service, [])
                if fenced is not None and any(fenced < crash < event.at_ms for crash in crashes):
                    fenced_across_a_restart += 1
    assert fenced_across_a_restart > 0


def test_every_planned_transfer_is_a_saga_or_was_cut_off_by_a_crash(standard_runs: list[SimulationResult]) -> None:
    for result in standard_runs:
        assert len(result.sagas) + result.abandoned == STANDARD_TRANSFERS
        assert result.abandoned <= result.fault_counts["crash"] * 2 * result.config.concurrency


def test_the_run_takes_more_virtual_time_than_real_time(standard_runs: list[SimulationResult]) -> None:
    # Request timeouts of 5s and late duplicates of up to a minute: only a
    # virtual clock gets through 20 runs of them in seconds.
    assert sum(result.virtual_seconds for result in standard_runs) > 3 * sum(
        result.wall_seconds for result in standard_runs
    )


def test_without_faults_nothing_is_injected_and_nothing_is_compensated() -> None:
    result = simulate(11, 100, rates=no_faults())
    assert result.violations == []
    assert sum(result.fault_counts.values()) == 0
    assert result.abandoned == 0
    assert result.states[SagaState.COMPENSATED] == 0
    assert result.states[SagaState.COMPLETED] + result.states[SagaState.FAILED] == 100


def test_a_run_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    original_start = threading.Thread.start

    def record_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        original_start(thread)

    monkeypatch.setattr(threading.Thread, "start", record_start)
    result = simulate(4, 60)
    assert result.requests > 0
    assert started == []


def test_a_saga_that_gives_up_on_an_unknown_outcome_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # A debit or credit whose answer never came is treated as refused: the
    # saga fails or compensates without fencing what may have landed.
    def refused_unless_applied(step: Any) -> bool:
        return not step.applied

    monkeypatch.setattr(StepResult, "refused", property(refused_unless_applied))
    result = simulate(1, STANDARD_TRANSFERS)
    broken = {violation.invariant for violation in result.violations}
    assert any(invariant.startswith("audit agrees with") for invariant in broken), broken
    report = violation_report(result)
    assert f"seed {result.config.seed}:" in report
    assert f"reproduce: {result.config.command()}" in report
    assert " send " in report  # the trace of an implicated saga
