"""A pytest plugin that writes every test's outcome, by node id, to a JSON file.

    python -m pytest -p evaluation.pytest_outcomes --outcomes=outcomes.json

``make evaluate`` judges its runs by this file rather than by pytest's exit
status or its JUnit XML: the exit status is 0 with tests skipped, and the XML
names a test by class and name, not by the node id a patch's ``# caught-by:``
line gives. Each test gets one outcome, the worst of its phases: ``passed``,
``skipped``, ``xfailed``, ``xpassed``, ``failed`` (its body failed) or
``error`` (its setup or teardown did, or its module could not be collected).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

#: Worse outcomes outrank better ones: a test that passed and then failed its teardown is an error.
_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "failed": 3, "error": 4}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--outcomes", metavar="FILE", help="write each test's outcome, by node id, to FILE as JSON")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("outcomes")
    if path:
        config.pluginmanager.register(OutcomeRecorder(Path(path)), "evaluation-outcomes")


def outcome_of(report: pytest.TestReport) -> str | None:
    """What one phase's report says about its test; None when the phase settles nothing (a passed setup)."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when == "call":
        return report.outcome
    if report.failed:
        return "error"
    if report.skipped:
        return "skipped"
    return None


def reason_of(report: pytest.TestReport | pytest.CollectReport) -> str:
    """Why a test did not pass, in one line: a skip's or an expected failure's reason, or the error's last line."""
    reason = getattr(report, "wasxfail", "")
    if reason:
        return str(reason)
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    lines = str(report.longrepr or "").strip().splitlines()
    return lines[-1] if lines else ""


class OutcomeRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def _record(self, nodeid: str, outcome: str, report: pytest.TestReport | pytest.CollectReport) -> None:
        previous = self.outcomes.get(nodeid)
        if previous is None or _RANK[outcome] > _RANK[previous]:
            self.outcomes[nodeid] = outcome
            self.reasons[nodeid] = reason_of(report) if outcome != "passed" else ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        outcome = outcome_of(report)
        if outcome is not None:
            self._record(report.nodeid, outcome, report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._record(report.nodeid or "<collection>", "error", report)
        elif report.skipped:
            self._record(report.nodeid, "skipped", report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        document: dict[str, Any] = {
            "exit_status": int(exitstatus),
            "tests": [
                {
                    "nodeid": nodeid,
                    "outcome": outcome,
                    "reason": self.reasons.get(nodeid, ""),
                    "seconds": round(self.seconds.get(nodeid, 0.0), 3),
                }
                for nodeid, outcome in self.outcomes.items()
            ],
        }
        self.path.write_text(json.dumps(document, indent=1), encoding="utf-8")
