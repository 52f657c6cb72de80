"""``make evaluate``: the product's own proof, in one command, that it works.

1. Runs the test suite and records every test's outcome.
2. Runs every scenario in instances/scenarios/ against live servers and checks its expectations.
3. Applies each known-bad patch in patches/ to a temporary copy of the repository and runs the
   simulator and the tests there: first the tests the patch names (``# caught-by:``), and the
   whole suite (to its first failure) only when those pass or there are none. Each patch must be
   caught; a patch that passes is a weak spot and fails the evaluation. Each verdict is printed
   as it comes.
4. Includes the mutation-testing table of the last ``make mutation`` (evaluation/reports/mutation/),
   with the commit it ran on; ``--run-mutation`` runs it afresh first (about half an hour), and only
   then do its goals count towards the verdict.
5. Writes evaluation/reports/<YYYY-MM-DD>/<HH-MM-SS>/report.json and report.md, and prints a summary.

Exits 0 only if everything holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saga.simulation.teeth import KnownBadVariant

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class TestOutcome:
    name: str
    outcome: str
    seconds: float


@dataclass
class ScenarioResult:
    name: str
    passed: bool
    seconds: float
    failed_expectations: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class PatchResult:
    name: str
    breaks: str
    applies: bool
    caught_by_simulator: bool
    caught_by_tests: bool
    seconds: float
    evidence: str = ""

    @property
    def caught(self) -> bool:
        return self.applies and (self.caught_by_simulator or self.caught_by_tests)


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        return subprocess.CompletedProcess(command, 124, str(expired.stdout or ""), f"timed out after {timeout}s")


def run_tests(workdir: Path, report_dir: Path) -> tuple[int, list[TestOutcome]]:
    junit = report_dir / "junit.xml"
    result = run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"], workdir, 1800)
    outcomes = []
    if junit.exists():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            elif case.find("skipped") is not None:
                outcome = "skipped"
            else:
                outcome = "passed"
            outcomes.append(
                TestOutcome(f"{case.get('classname')}::{case.get('name')}", outcome, float(case.get("time", 0)))
            )
    return result.returncode, outcomes


def run_scenarios() -> list[ScenarioResult]:
    results = []
    for path in sorted((ROOT / "instances" / "scenarios").glob("*.json")):
        started = time.monotonic()
        result = run([PYTHON, "-m", "saga", "batch", str(path), "--json"], ROOT, 600)
        seconds = time.monotonic() - started
        try:
            summary = json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            results.append(ScenarioResult(path.stem, False, seconds, error=result.stderr[-2000:]))
            continue
        results.append(
            ScenarioResult(
                path.stem,
                bool(summary.get("passed")) and result.returncode == 0,
                seconds,
                summary.get("failed_expectations", []),
                {
                    key: summary[key]
                    for key in (
                        "transfers",
                        "completed",
                        "compensated",
                        "failed",
                        "pending",
                        "retries",
                        "recovered",
                        "money_conserved",
                        "violations",
                    )
                    if key in summary
                },
            )
        )
    return results


def copy_repository(target: Path) -> None:
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def patch_header(patch: Path) -> str:
    first = patch.read_text(encoding="utf-8").splitlines()[0]
    return first.lstrip("#").strip().removeprefix("breaks:").strip()


SIMULATION = ["-m", "saga", "simulate", "--seed", "1", "--seeds", "8", "--transfers", "200"]


def try_patch(patch: Path) -> PatchResult:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{patch.stem}-") as scratch:
        copy = Path(scratch)
        copy_repository(copy)
        applied = run(["git", "apply", "--whitespace=nowarn", str(patch)], copy, 60)
        if applied.returncode != 0:
            return PatchResult(
                patch.stem, patch_header(patch), False, False, False, time.monotonic() - started, applied.stderr
            )
        simulation = run([PYTHON, *SIMULATION], copy, 900)
        caught_by_simulator = simulation.returncode != 0
        # The tests a patch names as catching it run first and alone: when they
        # fail, the rest of the suite has nothing to add to the verdict.
        named = list(KnownBadVariant(patch).caught_by)
        tests = None
        if named:
            tests = run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "300", *named], copy, 900)
        if tests is None or tests.returncode == 0:
            tests = run([PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout", "300"], copy, 1800)
        caught_by_tests = tests.returncode != 0
        evidence = ""
        if caught_by_simulator:
            evidence = "simulator: " + _tail(simulation.stdout + simulation.stderr)
        if caught_by_tests:
            evidence += ("\n" if evidence else "") + "tests: " + _tail(tests.stdout)
    return PatchResult(
        patch.stem,
        patch_header(patch),
        True,
        caught_by_simulator,
        caught_by_tests,
        time.monotonic() - started,
        evidence,
    )


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def environment() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "commit": commit,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation {report['environment']['started']}",
        "",
        f"Verdict: **{'PASS' if report['passed'] else 'FAIL'}**",
        "",
    ]
    env = report["environment"]
    lines += [
        f"Machine: Python {env['python']}, {env['platform']}, {env['cpus']} CPUs; commit `{env['commit'][:12]}`.",
        "",
    ]
    tests = report["tests"]
    lines += [
        "## Tests",
        "",
        f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped "
        f"(pytest exit {tests['exit_code']}).",
        "",
    ]
    lines += [
        "## Scenarios",
        "",
        "| scenario | result | completed | compensated | failed | retries | recovered | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in report["scenarios"]:
        summary = scenario["summary"]
        lines.append(
            f"| {scenario['name']} | {'pass' if scenario['passed'] else 'FAIL'} | {summary.get('completed', '')} | "
            f"{summary.get('compensated', '')} | {summary.get('failed', '')} | {summary.get('retries', '')} | "
            f"{summary.get('recovered', '')} | {scenario['seconds']:.1f} |"
        )
    lines += [
        "",
        "## Known-bad patches",
        "",
        "| patch | breaks | applies | simulator | tests | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for patch in report["patches"]:
        lines.append(
            f"| {patch['name']} | {patch['breaks']} | {'yes' if patch['applies'] else 'NO'} | "
            f"{'caught' if patch['caught_by_simulator'] else 'missed'} | "
            f"{'caught' if patch['caught_by_tests'] else 'missed'} | "
            f"{'caught' if patch['caught'] else 'WEAK SPOT'} |"
        )
    lines += ["", "## Mutation testing", ""]
    mutation = report.get("mutation")
    if mutation is None:
        lines.append("No mutation run yet: `make mutation`.")
    else:
        lines += [
            f"From `make mutation` of {mutation['started']} on commit `{mutation['commit'][:12]}` "
            f"({'run now' if mutation['fresh'] else 'the last run, not rerun'}): "
            f"{'every goal met' if mutation['passed'] else 'a goal MISSED'}.",
            "",
            "```",
            mutation["table"],
            "```",
        ]
    return "\n".join(lines) + "\n"


def mutation_summary(run_fresh: bool) -> dict[str, Any] | None:
    """The last mutation run's summary, after running one now if ``run_fresh``."""
    from evaluation import mutation

    if run_fresh:
        mutation.main([])
    summary = mutation.last_summary()
    return None if summary is None else summary | {"fresh": run_fresh}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tests", action="store_true", help="skip step 1")
    parser.add_argument("--skip-scenarios", action="store_true", help="skip step 2")
    parser.add_argument("--skip-patches", action="store_true", help="skip step 3")
    parser.add_argument(
        "--run-mutation", action="store_true", help="run make mutation now rather than read its last run"
    )
    args = parser.parse_args(argv)

    started = time.localtime()
    report_dir = (
        ROOT / "evaluation" / "reports" / time.strftime("%Y-%m-%d", started) / time.strftime("%H-%M-%S", started)
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    env = environment()

    exit_code, outcomes = (0, []) if args.skip_tests else run_tests(ROOT, report_dir)
    counts = {
        kind: sum(1 for outcome in outcomes if outcome.outcome == kind) for kind in ("passed", "failed", "skipped")
    }
    print(f"tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")

    scenarios = [] if args.skip_scenarios else run_scenarios()
    for scenario in scenarios:
        problems = "; ".join(scenario.failed_expectations) or scenario.error[:200]
        print(
            f"scenario {scenario.name:16} {'pass' if scenario.passed else 'FAIL'}  {scenario.seconds:5.1f}s  {problems}"
        )

    patches = []
    # Each verdict is printed as it comes: the patches take minutes each.
    for path in [] if args.skip_patches else sorted((ROOT / "patches").glob("*.patch")):
        patch = try_patch(path)
        patches.append(patch)
        how = [
            name for name, hit in (("simulator", patch.caught_by_simulator), ("tests", patch.caught_by_tests)) if hit
        ]
        verdict = (
            "does not apply"
            if not patch.applies
            else (f"caught by {' and '.join(how)}" if how else "WEAK SPOT: not caught")
        )
        print(f"patch {patch.name:36} {verdict}  ({patch.seconds:.0f}s)", flush=True)

    mutation = mutation_summary(args.run_mutation)
    if mutation is None:
        print("mutation: no run yet (make mutation)")
    else:
        print(f"mutation: the run of {mutation['started']} on commit {mutation['commit'][:12]}")
        print(mutation["table"])

    passed = (
        exit_code == 0
        and counts["failed"] == 0
        and all(scenario.passed for scenario in scenarios)
        and all(patch.caught for patch in patches)
        and (mutation is None or not mutation["fresh"] or mutation["passed"])
    )
    report = {
        "passed": passed,
        "environment": env,
        "tests": {"exit_code": exit_code, **counts, "outcomes": [asdict(outcome) for outcome in outcomes]},
        "scenarios": [asdict(scenario) for scenario in scenarios],
        "patches": [asdict(patch) | {"caught": patch.caught} for patch in patches],
        "mutation": mutation,
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (report_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    print(f"report: {report_dir / 'report.md'}")
    print(f"evaluation {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
