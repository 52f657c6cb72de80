"""Try a known-bad patch against tests: in a scratch copy of the repository, with the patch and without.

    python -m evaluation.try_patch float-money                          # the tests its # caught-by: lines name
    python -m evaluation.try_patch float-money tests/in_process/test_ledger.py   # any tests: which of them catch it?
    python -m evaluation.try_patch float-money --patched-only

The copy holds the working tree's files (tracked, or new and not ignored),
so a patch is tried against the code as it is on disk. Each test's outcome
comes from :mod:`evaluation.pytest_outcomes`. A test catches the patch when
it fails with the patch applied and passes without it; a ``# caught-by:``
line is right when every test it names does. Exit status 0 when every name
catches the patch, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from evaluation.teeth import KnownBadVariant, PatchError

ROOT = Path(__file__).resolve().parent.parent
FAILING = ("failed", "error")


@dataclass(frozen=True)
class PytestRun:
    """One pytest run: its exit status, each test's outcome by node id, and how long it took."""

    exit_status: int
    outcomes: Mapping[str, str]
    seconds: float
    output: str
    #: Why each test that did not pass did not: a skip's reason, an error's last line.
    reasons: Mapping[str, str] = field(default_factory=dict)

    def matching(self, name: str) -> dict[str, str]:
        """The outcomes of the tests ``name`` stands for: a node id, a parametrized test's cases, a file's tests."""
        return {nodeid: outcome for nodeid, outcome in self.outcomes.items() if names_test(name, nodeid)}

    def failed(self) -> list[str]:
        return [nodeid for nodeid, outcome in self.outcomes.items() if outcome in FAILING]


def names_test(name: str, nodeid: str) -> bool:
    """Whether a ``# caught-by:`` name (a node id, a test without its parameters, a file) covers ``nodeid``."""
    return nodeid == name or nodeid.startswith((f"{name}::", f"{name}["))


@dataclass(frozen=True)
class Catch:
    """What the tests a patch names said with it applied: which names caught it, which did not, and why."""

    names: tuple[str, ...]
    run: PytestRun
    missed: dict[str, str] = field(default_factory=dict)

    @property
    def caught(self) -> bool:
        """At least one named test failed."""
        return len(self.missed) < len(self.names)

    @property
    def exact(self) -> bool:
        """Every name caught it: the header is right."""
        return bool(self.names) and not self.missed


def judge_names(names: Sequence[str], run: PytestRun) -> Catch:
    """Each name must stand for at least one test that ran, and one of those must have failed."""
    missed = {}
    for name in names:
        outcomes = run.matching(name)
        if not outcomes:
            missed[name] = "not run: no such test"
        elif not any(outcome in FAILING for outcome in outcomes.values()):
            missed[name] = ", ".join(sorted(set(outcomes.values())))
    return Catch(tuple(names), run, missed)


def copy_working_tree(destination: Path, repository: Path = ROOT) -> None:
    """Copy the files git knows of or would (tracked, or new and not ignored), as they are on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repository,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = repository / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def apply_patch(patch: Path, tree: Path) -> None:
    """Apply ``patch`` to ``tree``; PatchError saying why when it does not apply."""
    # The scratch tree is no repository: git apply then works like patch -p1.
    # The ceiling keeps git from finding a repository in a folder above it.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    done = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", str(patch)], cwd=tree, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        why = "; ".join(line for line in done.stderr.strip().splitlines() if line)
        raise PatchError(f"{patch.stem} does not apply: {why}")


def run_tests(
    tree: Path,
    tests: Sequence[str] = (),
    *,
    first_failure: bool = False,
    timeout: float = 900.0,
    on_line: Callable[[str], None] | None = None,
) -> PytestRun:
    """Run ``tests`` (none: the whole suite) in ``tree`` on the tree's own code, in a child process.

    ``on_line`` sees pytest's output line by line as it comes; ``first_failure`` stops at the first.
    """
    with tempfile.TemporaryDirectory(prefix="outcomes-") as scratch:
        outcomes_file = Path(scratch) / "outcomes.json"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "evaluation.pytest_outcomes"]
        command += [f"--outcomes={outcomes_file}", *(["-x"] if first_failure else []), *tests]
        # Only the tree's own code may be imported: no PYTHONPATH back to another checkout.
        env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        started = time.monotonic()
        lines: list[str] = []
        with subprocess.Popen(
            command,
            cwd=tree,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as child:
            assert child.stdout is not None
            # A run that hangs without a word is killed all the same.
            watchdog = threading.Timer(timeout, child.kill)
            watchdog.start()
            try:
                for line in child.stdout:
                    lines.append(line)
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
                status = child.wait()
            finally:
                watchdog.cancel()
        seconds = time.monotonic() - started
        if status < 0:
            lines.append(f"killed after {timeout:g} s\n")
        recorded: list[dict[str, Any]] = (
            json.loads(outcomes_file.read_text(encoding="utf-8"))["tests"] if outcomes_file.exists() else []
        )
    outcomes = {test["nodeid"]: test["outcome"] for test in recorded}
    reasons = {test["nodeid"]: test["reason"] for test in recorded if test["reason"]}
    return PytestRun(status, outcomes, seconds, "".join(lines), reasons)


def patched_tree(patch: Path, scratch: Path, repository: Path = ROOT) -> Path:
    """A copy of the working tree in ``scratch`` with ``patch`` applied."""
    tree = scratch / "repository"
    copy_working_tree(tree, repository)
    apply_patch(patch, tree)
    return tree


def find_patch(name: str, repository: Path = ROOT) -> Path:
    path = Path(name)
    if path.suffix == ".patch" and path.is_file():
        return path.resolve()
    candidate = repository / "patches" / f"{name.removesuffix('.patch')}.patch"
    if not candidate.is_file():
        raise PatchError(f"no patch {name!r} under patches/")
    return candidate


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.try_patch",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("patch", help="a patch under patches/, by name (float-money) or path")
    parser.add_argument("tests", nargs="*", help="node ids or test files (default: the patch's # caught-by: names)")
    parser.add_argument("--patched-only", action="store_true", help="do not run the tests without the patch")
    parser.add_argument("--output", action="store_true", help="print pytest's output of the run with the patch")
    args = parser.parse_intermixed_args(argv)
    try:
        patch = find_patch(args.patch)
        variant = KnownBadVariant(patch)
        names = tuple(args.tests) or variant.caught_by
        if not names:
            raise PatchError(f"{variant.name} names no # caught-by: tests, and none were given")
        with tempfile.TemporaryDirectory(prefix=f"try-{variant.name}-") as scratch:
            patched = run_tests(patched_tree(patch, Path(scratch)), names)
        unpatched = None
        if not args.patched_only:
            with tempfile.TemporaryDirectory(prefix="try-unpatched-") as scratch:
                tree = Path(scratch) / "repository"
                copy_working_tree(tree)
                unpatched = run_tests(tree, names)
    except PatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output:
        print(patched.output, file=out)
    return report(variant.name, names, patched, unpatched, out)


def report(name: str, names: Sequence[str], patched: PytestRun, unpatched: PytestRun | None, out: TextIO) -> int:
    timing = f"with the patch {patched.seconds:.1f} s" + (
        f", without it {unpatched.seconds:.1f} s" if unpatched else ""
    )
    print(f"{name}: {len(patched.outcomes)} tests, {timing}", file=out)
    for nodeid, outcome in patched.outcomes.items():
        without = "" if unpatched is None else f"  without: {unpatched.outcomes.get(nodeid, 'not run')}"
        print(f"  {outcome.upper() if outcome in FAILING else outcome:>8}{without}  {nodeid}", file=out)
    catch = judge_names(names, patched)
    clean = unpatched is None or all(
        unpatched.matching(name) and set(unpatched.matching(name).values()) == {"passed"} for name in names
    )
    for missed, why in catch.missed.items():
        print(f"  does not catch it: {missed} ({why})", file=out)
    if unpatched is not None and not clean:
        print("  without the patch, not every test passes: a catch proves nothing", file=out)
    right = catch.exact and clean
    print(f"{name}: {'every name catches it' if right else 'NOT every name catches it'}", file=out)
    return 0 if right else 1


if __name__ == "__main__":
    raise SystemExit(main())
