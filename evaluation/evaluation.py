"""``make evaluate``: the product's own proof, in one command, that it works.

1. Runs the test suite once and records every test's outcome
   (evaluation/pytest_outcomes.py). A test that does not pass (failed, an
   error, skipped, an expected failure) fails the evaluation.
2. Runs every scenario in instances/scenarios/ against live services and
   checks its expectations.
3. Applies each known-bad patch in patches/ to a scratch copy of the working
   tree and runs there the tests its ``# caught-by:`` lines name: each must
   fail with the patch, and have passed without it (step 1). Only when they
   all pass does the whole suite run on the patch, to its first failure: a
   catch there is a defect of the header, and no catch at all a weak spot;
   either fails the evaluation. That the simulator catches the patches
   marked ``# simulator-catches:`` is itself a test of step 1
   (tests/simulation/test_patches.py).
4. Includes the mutation-testing table of the last ``make mutation``
   (evaluation/reports/mutation/), with the commit it ran on;
   ``--run-mutation`` runs it afresh first (about half an hour), and only
   then do its goals count towards the verdict.
5. Writes evaluation/reports/<YYYY-MM-DD>/<HH-MM-SS>/report.json and report.md.

Each step, scenario and patch is printed as it starts and as it ends, with
its duration. The last line is the verdict: ``evaluation PASSED`` only when
every step ran and nothing in it failed, was skipped or was missed. Exit
status 0 PASSED, 1 FAILED, 2 bad options, 3 INCOMPLETE (a step was left out
with an option, and what ran held).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from evaluation.teeth import KnownBadVariant, PatchError
from evaluation.try_patch import PytestRun, copy_working_tree, judge_names, patched_tree, run_tests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_INCOMPLETE = 3

#: Long enough for the whole suite on a busy 2-core machine; a test that hangs is stopped by its own timeout first.
SUITE_TIMEOUT = 7_200.0
NAMED_TESTS_TIMEOUT = 900.0
SCENARIO_TIMEOUT = 600.0

#: How many of the tests that did not pass the verdict names, with why.
NOT_PASSED_SHOWN = 10

#: Every outcome a test can have, in report order; only "passed" lets the evaluation pass.
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


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
    named: list[str]
    seconds: float
    applies: bool = True
    #: Named tests that did not fail with the patch applied, and what they did instead.
    missed: dict[str, str] = field(default_factory=dict)
    #: Named tests that did not pass without the patch, and what they did instead.
    unclean: dict[str, str] = field(default_factory=dict)
    failed_with_patch: list[str] = field(default_factory=list)
    #: Only when no named test caught it: did the whole suite (True), or nothing (False)?
    caught_by_suite: bool | None = None
    error: str = ""

    @property
    def caught(self) -> bool:
        return self.applies and (len(self.missed) < len(self.named) or bool(self.caught_by_suite))

    @property
    def ok(self) -> bool:
        """Caught by every test it names, each of which passes without it."""
        return self.applies and bool(self.named) and not self.missed and not self.unclean

    @property
    def verdict(self) -> str:
        if not self.applies:
            return f"DOES NOT APPLY ({self.error})"
        if not self.named:
            caught = "the whole suite catches it" if self.caught_by_suite else "no test catches it: a WEAK SPOT"
            return f"HEADER DEFECT: no # caught-by: line; {caught}"
        if len(self.missed) == len(self.named):
            if self.caught_by_suite is None:
                unrun = "; ".join(f"{name}: {why}" for name, why in self.missed.items())
                return f"NOT JUDGED: no test it names failed, and not all of them ran: {unrun}"
            first = f" ({self.failed_with_patch[0]})" if self.failed_with_patch else ""
            found = (
                f"the whole suite catches it{first}"
                if self.caught_by_suite
                else "nor does the rest of the suite: a WEAK SPOT"
            )
            return f"HEADER DEFECT: no test it names catches it; {found}"
        problems = [f"{name} does not catch it ({why})" for name, why in self.missed.items()]
        problems += [f"{name} does not pass without it ({why})" for name, why in self.unclean.items()]
        count = f"{len(self.named)} named test{'s' if len(self.named) != 1 else ''}"
        if not problems:
            return f"caught by its {count}"
        return f"caught, but HEADER DEFECT: {'; '.join(problems)}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f} s"


class Progress:
    """Lines stamped with the time since the evaluation began, printed at once."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.began = time.monotonic()

    def say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.began)
        print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {text}", file=self.out, flush=True)


def outcome_counts(run: PytestRun | None) -> dict[str, int]:
    counts = Counter(run.outcomes.values()) if run else Counter()
    return {outcome: counts[outcome] for outcome in OUTCOMES}


def run_suite(progress: Progress) -> PytestRun:
    progress.say("step 1 of 3: the test suite, python -m pytest")
    run = run_tests(ROOT, timeout=SUITE_TIMEOUT, on_line=lambda line: progress.say(f"  {line}") if line else None)
    counts = outcome_counts(run)
    shown = ", ".join(f"{count:,} {outcome}" for outcome, count in counts.items() if count or outcome == "passed")
    progress.say(f"step 1 done in {_clock(run.seconds)}: {shown} (pytest exit {run.exit_status})")
    return run


def run_scenario(path: Path) -> ScenarioResult:
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        result = subprocess.run(
            [PYTHON, "-m", "saga", "batch", str(path), "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ScenarioResult(
            path.stem, False, time.monotonic() - started, error=f"timed out after {SCENARIO_TIMEOUT}s"
        )
    seconds = time.monotonic() - started
    try:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return ScenarioResult(path.stem, False, seconds, error=result.stderr[-2000:])
    kept = ("transfers", "completed", "compensated", "failed", "pending", "retries", "recovered", "violations")
    return ScenarioResult(
        path.stem,
        bool(summary.get("passed")) and result.returncode == 0,
        seconds,
        summary.get("failed_expectations", []),
        {key: summary[key] for key in (*kept, "money_conserved") if key in summary},
    )


def run_scenarios(paths: Sequence[Path], progress: Progress) -> list[ScenarioResult]:
    progress.say(f"step 2 of 3: {len(paths)} scenarios, each against its own live services")
    results = []
    started = time.monotonic()
    for path in paths:
        progress.say(f"  scenario {path.stem}: started")
        scenario = run_scenario(path)
        problems = "; ".join(scenario.failed_expectations) or scenario.error[-300:].strip()
        ended = "passed" if scenario.passed else f"FAILED: {problems}"
        progress.say(f"  scenario {scenario.name}: {ended} in {_clock(scenario.seconds)}")
        results.append(scenario)
    passed = sum(scenario.passed for scenario in results)
    progress.say(f"step 2 done in {_clock(time.monotonic() - started)}: {passed} of {len(paths)} scenarios passed")
    return results


def try_patch(patch: Path, without: PytestRun) -> PatchResult:
    """Apply ``patch`` to a copy of the working tree and judge its named tests; ``without`` ran them unpatched."""
    started = time.monotonic()
    variant = KnownBadVariant(patch)
    try:
        breaks = variant.breaks
    except PatchError as error:
        return PatchResult(patch.stem, "", [], time.monotonic() - started, applies=False, error=str(error))
    named = list(variant.caught_by)
    result = PatchResult(patch.stem, breaks, named, 0.0)
    for name in named:
        outcomes = without.matching(name)
        if not outcomes:
            result.unclean[name] = "no such test"
        elif set(outcomes.values()) != {"passed"}:
            result.unclean[name] = ", ".join(sorted(set(outcomes.values())))
    with tempfile.TemporaryDirectory(prefix=f"evaluate-{patch.stem}-") as scratch:
        try:
            tree = patched_tree(patch, Path(scratch))
        except PatchError as error:
            result.applies, result.error = False, str(error)
        else:
            if named:
                catch = judge_names(named, run_tests(tree, named, timeout=NAMED_TESTS_TIMEOUT))
                result.missed = catch.missed
                result.failed_with_patch = catch.run.failed()
            # Only a header whose tests all ran and passed is wrong for sure; a
            # skipped one (no PostgreSQL here, say) proves nothing either way.
            named_tests_all_passed = len(result.missed) == len(named) and set(result.missed.values()) <= {"passed"}
            if named_tests_all_passed:
                suite = run_tests(tree, first_failure=True, timeout=SUITE_TIMEOUT)
                result.failed_with_patch = suite.failed()
                result.caught_by_suite = bool(result.failed_with_patch) or suite.exit_status not in (0, 5)
    result.seconds = time.monotonic() - started
    return result


def run_patches(paths: Sequence[Path], suite: PytestRun | None, progress: Progress) -> list[PatchResult]:
    progress.say(f"step 3 of 3: {len(paths)} known-bad patches, each against the tests it names")
    started = time.monotonic()
    if suite is None:
        # Step 1 did not run: the named tests' runs without the patches come from here instead.
        names = sorted({name for path in paths for name in KnownBadVariant(path).caught_by})
        progress.say(f"  the {len(names)} named tests without any patch (step 1 was left out): started")
        with tempfile.TemporaryDirectory(prefix="evaluate-unpatched-") as scratch:
            tree = Path(scratch) / "repository"
            copy_working_tree(tree)
            suite = run_tests(tree, names, timeout=NAMED_TESTS_TIMEOUT)
        progress.say(f"  the named tests without any patch: done in {_clock(suite.seconds)}")
    results = []
    for path in paths:
        named = KnownBadVariant(path).caught_by
        progress.say(f"  patch {path.stem}: started, {len(named)} named test{'s' if len(named) != 1 else ''}")
        patch = try_patch(path, suite)
        progress.say(f"  patch {patch.name}: {patch.verdict} in {_clock(patch.seconds)}")
        results.append(patch)
    caught = sum(patch.ok for patch in results)
    progress.say(
        f"step 3 done in {_clock(time.monotonic() - started)}: "
        f"{caught} of {len(paths)} patches caught by every test they name"
    )
    return results


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


def verdict(
    suite: PytestRun | None,
    scenario_paths: Sequence[Path] | None,
    scenarios: Sequence[ScenarioResult],
    patch_paths: Sequence[Path] | None,
    patches: Sequence[PatchResult],
    mutation: dict[str, Any] | None,
    left_out: Sequence[str],
) -> tuple[str, list[str]]:
    """PASSED, FAILED or INCOMPLETE, and every reason it is not PASSED."""
    problems = []
    if suite is not None:
        counts = outcome_counts(suite)
        unpassed = [f"{count:,} {outcome}" for outcome, count in counts.items() if count and outcome != "passed"]
        if unpassed:
            problems.append(f"tests: {', '.join(unpassed)}")

        if not counts["passed"]:
            problems.append("tests: none ran")
        if suite.exit_status != 0:
            problems.append(f"tests: pytest exited {suite.exit_status}")
    if scenario_paths is not None:
        problems += [f"scenario {scenario.name} failed" for scenario in scenarios if not scenario.passed]
        if len(scenarios) != len(scenario_paths):
            problems.append(f"scenarios: {len(scenario_paths) - len(scenarios)} not run")
    if patch_paths is not None:
        problems += [f"patch {patch.name}: {patch.verdict}" for patch in patches if not patch.ok]
        if len(patches) != len(patch_paths):
            problems.append(f"patches: {len(patch_paths) - len(patches)} not tried")
    if mutation is not None and mutation["fresh"] and not mutation["passed"]:
        problems.append("mutation: a goal missed")
    if problems:
        return "FAILED", problems
    if left_out:
        return "INCOMPLETE", [f"left out: {', '.join(left_out)}"]
    return "PASSED", []


def not_passed(suite: PytestRun | None) -> list[str]:
    """The tests that did not pass, each with its outcome and why; at most NOT_PASSED_SHOWN of them."""
    if suite is None:
        return []
    lines = [
        f"{nodeid}: {outcome}{f' ({suite.reasons[nodeid]})' if nodeid in suite.reasons else ''}"
        for nodeid, outcome in suite.outcomes.items()
        if outcome != "passed"
    ]
    more = [f"and {len(lines) - NOT_PASSED_SHOWN} more: see report.json"] if len(lines) > NOT_PASSED_SHOWN else []
    return lines[:NOT_PASSED_SHOWN] + more


def summary_line(
    outcome: str,
    reasons: Sequence[str],
    suite: PytestRun | None,
    scenarios: Sequence[ScenarioResult],
    patches: Sequence[PatchResult],
    seconds: float,
) -> str:
    if outcome != "PASSED":
        shown = [*reasons[:6], *([f"and {len(reasons) - 6} more"] if len(reasons) > 6 else [])]
        return f"evaluation {outcome}: {'; '.join(shown)}"
    tests = outcome_counts(suite)["passed"]
    return (
        f"evaluation PASSED: {tests:,} tests passed, none skipped; {len(scenarios)} scenarios passed; "
        f"{len(patches)} patches each caught by every test it names ({_clock(seconds)})"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation {report['environment']['started']}", "", f"Verdict: **{report['verdict']}**", ""]
    lines += [f"- {reason}" for reason in report["reasons"]]
    env = report["environment"]
    lines += [
        "",
        f"Machine: Python {env['python']}, {env['platform']}, {env['cpus']} CPUs; commit `{env['commit'][:12]}`.",
        "",
        "## Tests",
        "",
    ]
    tests = report["tests"]
    if tests is None:
        lines.append("Left out (`--skip-tests`).")
    else:
        counts = ", ".join(f"{tests[outcome]} {outcome}" for outcome in OUTCOMES)
        lines.append(f"{counts} (pytest exit {tests['exit_code']}) in {_clock(tests['seconds'])}.")
        lines += ["", *(f"- did not pass: {line}" for line in report["not_passed"])]
    lines += [
        "",
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
        "| patch | breaks | named tests | failed with the patch | seconds | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for patch in report["patches"]:
        lines.append(
            f"| {patch['name']} | {patch['breaks']} | {len(patch['named'])} | {len(patch['failed_with_patch'])} | "
            f"{patch['seconds']:.1f} | {patch['verdict']} |"
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


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tests", action="store_true", help="leave out step 1 (the verdict is then INCOMPLETE)")
    parser.add_argument("--skip-scenarios", action="store_true", help="leave out step 2 (INCOMPLETE)")
    parser.add_argument("--skip-patches", action="store_true", help="leave out step 3 (INCOMPLETE)")
    parser.add_argument("--patch", action="append", metavar="NAME", help="try only this patch (repeatable; INCOMPLETE)")
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
    progress = Progress(out)
    left_out = [
        option
        for option, skipped in (
            ("--skip-tests", args.skip_tests),
            ("--skip-scenarios", args.skip_scenarios),
            ("--skip-patches", args.skip_patches),
        )
        if skipped
    ]

    all_patches = sorted((ROOT / "patches").glob("*.patch"))
    if args.patch:
        unknown = set(args.patch) - {path.stem for path in all_patches}
        if unknown:
            parser.error(f"no such patch under patches/: {', '.join(sorted(unknown))}")
        left_out.append(f"{len(all_patches) - len(set(args.patch))} of {len(all_patches)} patches (--patch)")
    patch_paths = [path for path in all_patches if not args.patch or path.stem in args.patch]
    scenario_paths = sorted((ROOT / "instances" / "scenarios").glob("*.json"))

    suite = None if args.skip_tests else run_suite(progress)
    scenarios = [] if args.skip_scenarios else run_scenarios(scenario_paths, progress)
    patches = [] if args.skip_patches else run_patches(patch_paths, suite, progress)

    mutation = mutation_summary(args.run_mutation)
    if mutation is None:
        progress.say("mutation: no run yet (make mutation)")
    else:
        progress.say(f"mutation: the run of {mutation['started']} on commit {mutation['commit'][:12]}")
        print(mutation["table"], file=out)

    outcome, reasons = verdict(
        suite,
        None if args.skip_scenarios else scenario_paths,
        scenarios,
        None if args.skip_patches else patch_paths,
        patches,
        mutation,
        left_out,
    )
    report = {
        "verdict": outcome,
        "passed": outcome == "PASSED",
        "reasons": reasons,
        "environment": env,
        "seconds": round(time.monotonic() - progress.began, 1),
        "tests": None
        if suite is None
        else {
            "exit_code": suite.exit_status,
            "seconds": round(suite.seconds, 1),
            **outcome_counts(suite),
            "outcomes": [
                {"name": name, "outcome": outcome, "reason": suite.reasons.get(name, "")}
                for name, outcome in suite.outcomes.items()
            ],
        },
        "not_passed": not_passed(suite),
        "scenarios": [asdict(scenario) for scenario in scenarios],
        "patches": [
            asdict(patch) | {"caught": patch.caught, "ok": patch.ok, "verdict": patch.verdict} for patch in patches
        ],
        "mutation": mutation,
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (report_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    progress.say(f"report: {report_dir / 'report.md'}")
    for line in not_passed(suite):
        print(f"  did not pass: {line}", file=out)
    print(summary_line(outcome, reasons, suite, scenarios, patches, time.monotonic() - progress.began), file=out)
    return {"PASSED": EXIT_PASSED, "INCOMPLETE": EXIT_INCOMPLETE}.get(outcome, EXIT_FAILED)


if __name__ == "__main__":
    raise SystemExit(main())
