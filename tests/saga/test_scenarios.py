"""Scenario files load, and ``python -m saga batch SCENARIO.json`` runs one end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from saga.scenario import ScenarioError, load
from server.process import REPO_ROOT

pytestmark = pytest.mark.integration

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
