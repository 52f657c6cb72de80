"""make evaluate's verdict: every test's outcome counted, nothing skipped passes, and a patch's header judged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from evaluation.evaluation import PatchResult, ScenarioResult, not_passed, try_patch, verdict
from evaluation.try_patch import PytestRun
from server.process import REPO_ROOT

FLOAT_MONEY_CATCH = "tests/in_process/test_ledger.py::test_a_reopened_ledger_goes_on_recording_after_what_it_read_back"
NOT_A_CATCH = "tests/in_process/test_ledger.py::test_compensate_debit_gives_back_exactly_what_the_debit_took"


def test_each_test_gets_the_worst_outcome_of_its_phases(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.fixture
            def breaks_on_teardown():
                yield
                raise RuntimeError("teardown")

            @pytest.fixture
            def skips():
                pytest.skip("no server")

            def test_passes(): pass
            def test_fails(): assert False
            def test_skips_in_its_body(): pytest.skip("later")
            def test_skips_in_its_setup(skips): pass
            def test_passes_then_its_teardown_fails(breaks_on_teardown): pass

            @pytest.mark.xfail(reason="known")
            def test_fails_as_expected(): assert False

            @pytest.mark.xfail(reason="known")
            def test_passes_unexpectedly(): pass
            """
        )
    )
    (tmp_path / "test_broken.py").write_text("import no_such_module\n")
    outcomes = tmp_path / "outcomes.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "--continue-on-collection-errors"),
            *("-p", "evaluation.pytest_outcomes", f"--outcomes={outcomes}"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    document = json.loads(outcomes.read_text())
    reasons = {test["nodeid"]: test["reason"] for test in document["tests"]}
    assert reasons["test_sample.py::test_skips_in_its_setup"] == "no server"
    assert reasons["test_sample.py::test_fails_as_expected"] == "known"
    assert "no_such_module" in reasons["test_broken.py"]
    assert document["exit_status"] == done.returncode == 1, done.stdout
    assert {test["nodeid"]: test["outcome"] for test in document["tests"]} == {
        "test_broken.py": "error",
        "test_sample.py::test_passes": "passed",
        "test_sample.py::test_fails": "failed",
        "test_sample.py::test_skips_in_its_body": "skipped",
        "test_sample.py::test_skips_in_its_setup": "skipped",
        "test_sample.py::test_passes_then_its_teardown_fails": "error",
        "test_sample.py::test_fails_as_expected": "xfailed",
        "test_sample.py::test_passes_unexpectedly": "xpassed",
    }


def suite(**outcomes: str) -> PytestRun:
    return PytestRun(0, {f"tests/test_x.py::{name}": outcome for name, outcome in outcomes.items()}, 1.0, "")


SCENARIO = Path("instances/scenarios/happy-path.json")
PATCH = Path("patches/float-money.patch")


def judged(
    tests: PytestRun | None, scenarios: list[ScenarioResult], patches: list[PatchResult], left_out: Sequence[str] = ()
) -> tuple[str, list[str]]:
    return verdict(tests, [SCENARIO], scenarios, [PATCH], patches, None, left_out)


PASSED_SCENARIO = ScenarioResult("happy-path", True, 1.0)
CAUGHT = PatchResult("float-money", "money", [FLOAT_MONEY_CATCH], 1.0)


def test_only_a_run_where_everything_ran_and_passed_passes() -> None:
    assert judged(suite(a="passed", b="passed"), [PASSED_SCENARIO], [CAUGHT]) == ("PASSED", [])


def test_a_skipped_test_fails_the_evaluation_though_pytest_exits_0() -> None:
    outcome, reasons = judged(suite(a="passed", b="skipped", c="xfailed"), [PASSED_SCENARIO], [CAUGHT])
    assert (outcome, reasons) == ("FAILED", ["tests: 1 skipped, 1 xfailed"])


def test_the_tests_that_did_not_pass_are_named_with_why() -> None:
    run = PytestRun(0, {"t::a": "passed", "t::b": "skipped", "t::c": "xfailed"}, 1.0, "", {"t::b": "no server"})
    assert not_passed(run) == ["t::b: skipped (no server)", "t::c: xfailed"]


def test_no_tests_at_all_is_no_pass() -> None:
    assert judged(suite(), [PASSED_SCENARIO], [CAUGHT]) == ("FAILED", ["tests: none ran"])


def test_a_scenario_that_did_not_run_fails_the_evaluation() -> None:
    assert judged(suite(a="passed"), [], [CAUGHT]) == ("FAILED", ["scenarios: 1 not run"])


def test_a_step_left_out_is_incomplete_never_passed() -> None:
    assert judged(None, [PASSED_SCENARIO], [CAUGHT], ["--skip-tests"]) == ("INCOMPLETE", ["left out: --skip-tests"])


def test_a_patch_caught_only_by_some_of_its_named_tests_is_a_header_defect(tmp_path: Path) -> None:
    without = PytestRun(0, {FLOAT_MONEY_CATCH: "passed", NOT_A_CATCH: "passed"}, 1.0, "")
    header = f"# caught-by: {FLOAT_MONEY_CATCH}\n# caught-by: {NOT_A_CATCH}\n"
    patch = try_patch_with_header(tmp_path, "float-money", header, without)
    assert patch.caught
    assert not patch.ok
    assert patch.caught_by_suite is None
    assert patch.missed == {NOT_A_CATCH: "passed"}
    assert patch.verdict == f"caught, but HEADER DEFECT: {NOT_A_CATCH} does not catch it (passed)"
    outcome, reasons = judged(suite(a="passed"), [PASSED_SCENARIO], [patch])
    assert outcome == "FAILED"
    assert reasons == [f"patch float-money: {patch.verdict}"]


def test_a_named_test_that_does_not_pass_without_the_patch_proves_nothing(tmp_path: Path) -> None:
    without = PytestRun(1, {FLOAT_MONEY_CATCH: "failed"}, 1.0, "")
    patch = try_patch_with_header(tmp_path, "float-money", f"# caught-by: {FLOAT_MONEY_CATCH}\n", without)
    assert patch.missed == {}
    assert patch.unclean == {FLOAT_MONEY_CATCH: "failed"}
    assert not patch.ok


def test_a_named_test_that_did_not_run_leaves_the_patch_unjudged_and_the_suite_unrun(tmp_path: Path) -> None:
    missing = "tests/in_process/test_ledger.py::test_there_is_no_such_test"
    without = PytestRun(0, {}, 1.0, "")
    patch = try_patch_with_header(tmp_path, "float-money", f"# caught-by: {missing}\n", without)
    assert patch.missed == {missing: "not run: no such test"}
    assert patch.caught_by_suite is None
    assert not patch.caught
    assert patch.verdict.startswith("NOT JUDGED: no test it names failed")


def try_patch_with_header(folder: Path, name: str, header: str, without: PytestRun) -> PatchResult:
    """The patch under patches/ with its # caught-by: lines replaced by ``header``, tried as make evaluate does."""
    lines = (REPO_ROOT / "patches" / f"{name}.patch").read_text().splitlines(keepends=True)
    diff = [line for line in lines if not line.startswith("# caught-by:")]
    patch = folder / f"{name}.patch"
    patch.write_text("".join([diff[0], header, *diff[1:]]))
    return try_patch(patch, without)
