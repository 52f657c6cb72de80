"""One orchestrator on an exclusive log, as with SQLite: forward states and attempts ride with later commits.

A crash then loses forward progress that the services did record, and
recovery must end every saga where the lost run was taking it (saga/run.py).
"""

from __future__ import annotations

from collections import Counter

import pytest

from saga.simulation import SimulationResult
from saga.simulation.faults import CRASH
from saga.simulation.report import violation_report
from saga.simulation.simulator import SimulationConfig, run_simulation

SEEDS = range(1, 9)
TRANSFERS = 300


@pytest.fixture(scope="module")
def exclusive_runs() -> list[SimulationResult]:
    return [run_simulation(SimulationConfig(seed, TRANSFERS, orchestrators=1, exclusive_log=True)) for seed in SEEDS]


def test_runs_on_an_exclusive_log_break_no_invariant(exclusive_runs: list[SimulationResult]) -> None:
    broken = [violation_report(result) for result in exclusive_runs if result.violations]
    assert not broken, "\n\n".join(broken)


def test_runs_on_an_exclusive_log_crash_the_orchestrator_and_resume_sagas(
    exclusive_runs: list[SimulationResult],
) -> None:
    crashes = sum(result.fault_counts[CRASH] for result in exclusive_runs)
    resumed = Counter(
        event.step for result in exclusive_runs for event in result.trace if event.answer.endswith("replayed")
    )
    assert crashes > 0
    # Recovery from a state the log kept behind: debits and credits the lost run had sent are replayed.
    assert resumed["debit"] > 0
    assert resumed["credit"] > 0


def test_an_exclusive_log_has_one_orchestrator() -> None:
    with pytest.raises(ValueError, match="exactly one orchestrator"):
        SimulationConfig(1, 10, orchestrators=3, exclusive_log=True)
