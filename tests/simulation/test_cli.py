"""The simulate command: its table, its JSON, its exit status, and its place in another CLI."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from saga.cli.simulate import add_simulate_command, build_parser, run_simulate_command
from saga.run import StepResult
from saga.simulation.faults import FAULT_CLASSES
from saga.simulation.report import COLUMNS


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_simulate_command(build_parser().parse_args(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_a_clean_run_exits_0_with_a_row_per_seed_and_a_total() -> None:
    code, out, err = run(["--seed", "3", "--seeds", "2", "--transfers", "30"])
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == [
        "seed",
        "sagas",
        "completed",
        "compensated",
        "failed",
        "abandoned",
        *FAULT_CLASSES,
        "violations",
    ]
    assert [row.split()[0] for row in rows] == ["3", "4", "total"]
    assert all(row.split()[-1] == "0" for row in rows)


def test_the_tables_are_explained_column_by_column_and_a_clean_run_ends_passed() -> None:
    code, out, err = run(["--seed", "3", "--seeds", "2", "--transfers", "30"])
    assert code == 0, err
    operators_header = next(line for line in err.splitlines() if line.split()[:2] == ["seed", "deadlines"])
    explained = err[err.index("columns:") :].splitlines()[1:]
    named = [line.split()[0] for line in explained if line.startswith("  ")]
    assert named == [*out.splitlines()[0].split(), *operators_header.split()[1:]]
    assert all(len(line.split()) > 2 for line in explained if line.startswith("  "))
    assert err.splitlines()[-1] == "simulation PASSED: 2 seeds x 30 transfers, 0 violations"
    assert [name for name, _ in COLUMNS] == named


def test_a_violation_makes_the_verdict_failed_naming_the_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused_unless_applied(step: Any) -> bool:
        return not step.applied

    monkeypatch.setattr(StepResult, "refused", property(refused_unless_applied))
    code, out, err = run(["--seed", "1", "--seeds", "2", "--transfers", "200"])
    assert code == 1
    violations = [int(row.split()[-1]) for row in out.splitlines()[1:3]]
    broken = [seed for seed, count in zip((1, 2), violations, strict=True) if count]
    assert broken, out
    verdict = err.splitlines()[-1]
    seeds = f"seed{'s' if len(broken) > 1 else ''} {', '.join(str(seed) for seed in broken)}"
    assert verdict.startswith(
        f"simulation FAILED: {len(broken)} of 2 seeds broke an invariant ({seeds}), {sum(violations)} violation"
    ), verdict
    assert verdict.endswith(", 200 transfers each")


def test_json_reports_each_seed_with_its_faults_digest_and_reproduce_command() -> None:
    code, out, _ = run(["--seed", "8", "--transfers", "30", "--services", "3", "--concurrency", "4", "--json"])
    assert code == 0
    report = json.loads(out.splitlines()[-1])
    assert report["ok"] is True
    (seed,) = report["runs"]
    assert seed["seed"] == 8
    assert seed["services"] == 3
    assert set(seed["faults"]) == set(FAULT_CLASSES)
    assert seed["violations"] == []
    assert len(seed["trace_digest"]) == 16
    assert seed["reproduce"].endswith("--seed 8 --transfers 30 --services 3 --concurrency 4")


def test_a_violation_exits_1_and_says_how_to_reproduce_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused_unless_applied(step: Any) -> bool:
        return not step.applied

    monkeypatch.setattr(StepResult, "refused", property(refused_unless_applied))
    code, _, err = run(["--seed", "1", "--seeds", "3", "--transfers", "200", "--fail-fast"])
    assert code == 1
    assert "VIOLATED" in err
    assert "reproduce: .venv/bin/python -m saga.simulation --seed 1 --transfers 200" in err
    assert "1 of 1 seeds broke an invariant" in err
    assert err.splitlines()[-1].endswith("; 2 of 3 seeds not run (--fail-fast stops at the first that breaks one)")


def test_worker_processes_replay_each_seed_exactly_as_one_process_does() -> None:
    serial = run(["--seed", "2", "--seeds", "2", "--transfers", "40", "--json"])
    parallel = run(["--seed", "2", "--seeds", "2", "--transfers", "40", "--json", "--jobs", "2"])

    def digests(output: tuple[int, str, str]) -> list[str]:
        return [seed["trace_digest"] for seed in json.loads(output[1].splitlines()[-1])["runs"]]

    assert digests(serial) == digests(parallel)
    assert len(set(digests(serial))) == 2


def test_the_command_plugs_into_another_cli_as_simulate() -> None:
    parser = argparse.ArgumentParser(prog="python -m saga")
    add_simulate_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", "--seed", "9", "--transfers", "20"])
    assert args.command == "simulate"
    out, err = io.StringIO(), io.StringIO()
    assert run_simulate_command(args, out, err) == 0
    assert out.getvalue().splitlines()[1].split()[0] == "9"


@pytest.mark.parametrize("bad", [["--transfers", "-1"], ["--services", "0"], ["--seeds", "many"]])
def test_bad_options_are_refused_before_anything_runs(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(bad)
    assert exit_.value.code == 2
    assert "expected" in capsys.readouterr().err
