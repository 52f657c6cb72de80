"""Scenario files load, and ``python -m saga batch SCENARIO.json`` runs one end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from saga.drive.scenario import FALSE_ALARM_BOUND, ScenarioError, chance_of_false_alarm, load
from server.process import REPO_ROOT

SCENARIOS = sorted((REPO_ROOT / "instances" / "scenarios").glob("*.json"))


def test_the_promised_scenarios_exist() -> None:
    names = {path.stem for path in SCENARIOS}
    assert {
        "happy-path",
        "default-faults",
        "lost-responses",
        "hot-account",
        "two-banks",
        "crash-recover",
        "authenticated",
    } <= names
    instance = json.loads((REPO_ROOT / "instances" / "instance.json").read_text())
    assert instance["id"] == "AAQMEX"
    assert {str(path.relative_to(REPO_ROOT)) for path in SCENARIOS} == set(instance["scenarios"])


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.stem)
def test_every_scenario_loads(path: Path) -> None:
    scenario = load(path)
    assert scenario.workload.transfers > 0
    assert scenario.expect.invariants is True


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.stem)
def test_no_scenario_fails_a_correct_saga_by_the_luck_of_its_fault_draws(path: Path) -> None:
    assert chance_of_false_alarm(load(path)) < FALSE_ALARM_BOUND


def test_a_completion_floor_close_to_the_mean_is_a_false_alarm_now_and_then() -> None:
    # 200 transfers whose credits fail 30% of the time, 3 attempts each: 2.7%
    # of them compensate, 5.4 on average; demanding 95% completed (at most 10
    # compensated) fails a correct saga about once in 48 runs.
    scenario = load(REPO_ROOT / "instances" / "scenarios" / "authenticated.json")
    tight = replace(scenario, expect=replace(scenario.expect, min_completed_ratio=0.95))
    assert chance_of_false_alarm(tight) == pytest.approx(0.0209, abs=5e-4)
    assert chance_of_false_alarm(scenario) < FALSE_ALARM_BOUND


def test_a_malformed_scenario_is_refused_clearly(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"services": [{"name": "a", "accounts": {"x": 1.5}}], "workload": {"transfers": 1}}))
    with pytest.raises(ScenarioError, match="integers"):
        load(broken)
    run = subprocess.run(
        [sys.executable, "-m", "saga", "batch", str(broken)], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert run.returncode == 2
    assert run.stderr.startswith("error: ")


@pytest.mark.parametrize("name", ["hot-account", "crash-recover"])
def test_scenario_runs_and_meets_its_expectations(name: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "saga", "batch", f"instances/scenarios/{name}.json", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    outcome = json.loads(run.stdout.splitlines()[-1])
    assert outcome["passed"] is True
    assert outcome["violations"] == []
    assert outcome["pending"] == 0
