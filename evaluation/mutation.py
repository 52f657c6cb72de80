"""``make mutation``: how many planted bugs the fast tests catch in the money rules and the saga core.

mutmut (pinned in requirements.txt, configured under ``[tool.mutmut]`` in
pyproject.toml) copies the tree into ``mutants/``, plants one small change at a
time in the configured files (a flipped comparison, another constant, a
dropped argument) and runs, for each, the fast tests that call the changed
function. A mutant the tests fail on is killed; one they pass survives.

``[tool.mutation]`` in pyproject.toml says what counts: each target is a file,
or named functions of it, in a group ("money rules", "saga core") with a goal.
A surviving mutant that no test could ever tell apart from the code (it
changes only a log message, say) may be listed in the equivalents file with a
one-line reason; it is then reported as accepted, not killed. Each line there
is ``<mutant> <fingerprint> <reason>``: the fingerprint is taken from the
mutant's diff, so an entry whose function later changes stops matching and
the mutant is judged again.

Every run starts from an empty ``mutants/`` (mutmut caches results there, and
a full run must not inherit them), prints a table per module and group, and
writes it with every survivor's diff to the report folder. Exits 0 only if
every group meets its goal.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent

#: mutmut's outcomes that mean the tests caught the mutant.
KILLED_STATUSES: Final = frozenset({"killed", "timeout", "caught by type check", "segfault"})
#: mutmut's outcome for a mutant it has not run yet: the run was cut short.
NOT_CHECKED: Final = "not checked"
#: What stands between a mutant's module and its function in mutmut's names (``module.xǁClassǁmethod``).
CLASS_SEPARATOR: Final = "ǁ"


@dataclass(frozen=True)
class Target:
    group: str
    path: str
    #: Functions whose mutants count ("Class.method" for a method); empty for the whole file.
    functions: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.path.removesuffix(".py").replace("/", ".")

    def globs(self) -> list[str]:
        """mutmut mutant-name patterns that select this target's mutants."""
        if not self.functions:
            return [f"{self.module}.*"]
        return [f"{self.module}.{mangled(function)}__mutmut_*" for function in self.functions]

    def counts(self, mutant: str) -> bool:
        return any(fnmatch.fnmatchcase(mutant, glob) for glob in self.globs())


def mangled(function: str) -> str:
    """mutmut's name for ``function`` ("name" or "Class.method") within its module."""
    if "." in function:
        class_name, method = function.split(".", 1)
        return f"x{CLASS_SEPARATOR}{class_name}{CLASS_SEPARATOR}{method}"
    return f"x_{function}"


@dataclass(frozen=True)
class Config:
    targets: tuple[Target, ...]
    goals: Mapping[str, float]
    equivalents: Path
    report: Path
    max_children: int
    #: What mutmut itself is told to mutate and which tests it may run.
    only_mutate: tuple[str, ...]
    test_selection: tuple[str, ...]


def load_config(pyproject: Path = ROOT / "pyproject.toml") -> Config:
    tool = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]
    ours, mutmut = tool["mutation"], tool["mutmut"]
    targets = tuple(
        Target(target["group"], target["path"], tuple(target.get("functions", ()))) for target in ours["target"]
    )
    return Config(
        targets=targets,
        goals=dict(ours["goals"]),
        equivalents=pyproject.parent / ours["equivalents"],
        report=pyproject.parent / ours["report"],
        max_children=int(ours["max_children"]),
        only_mutate=tuple(mutmut["only_mutate"]),
        test_selection=tuple(mutmut["pytest_add_cli_args_test_selection"]),
    )


@dataclass(frozen=True)
class Equivalent:
    mutant: str
    fingerprint: str
    reason: str


def function_of(mutant: str) -> str:
    """The mutant's name without its number: every mutant of one function shares it."""
    return mutant.rsplit("__mutmut_", 1)[0]


def fingerprint(diff: str) -> str:
    """A short hash of the lines a mutant changes, independent of where its function sits in the file."""
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return hashlib.sha256("\n".join(changed).encode()).hexdigest()[:12]


def load_equivalents(path: Path) -> list[Equivalent]:
    """The accepted mutants: one per line, ``<mutant> <fingerprint> <reason>``; ``#`` starts a comment."""
    equivalents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(maxsplit=2)
        if len(parts) < 3:
            raise ValueError(f"{path.name}:{number}: expected '<mutant> <fingerprint> <reason>'")
        equivalents.append(Equivalent(*parts))
    return equivalents


@dataclass
class Mutant:
    name: str
    path: str
    status: str
    diff: str = ""
    accepted_because: str | None = None

    @property
    def killed(self) -> bool:
        return self.status in KILLED_STATUSES


@dataclass
class Tally:
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    accepted: int = 0

    def add(self, mutant: Mutant) -> None:
        self.mutants += 1
        if mutant.killed:
            self.killed += 1
        elif mutant.accepted_because is not None:
            self.accepted += 1
        else:
            self.survived += 1

    @property
    def score(self) -> float:
        return 100.0 * (self.killed + self.accepted) / self.mutants if self.mutants else 100.0


@dataclass
class Results:
    modules: dict[str, Tally] = field(default_factory=dict)
    groups: dict[str, Tally] = field(default_factory=dict)
    survivors: list[Mutant] = field(default_factory=list)
    accepted: list[Mutant] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    #: Equivalents-file entries that matched no surviving mutant: stale, or their mutant is now killed.
    unmatched_equivalents: list[Equivalent] = field(default_factory=list)


def mutmut_statuses(root: Path, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Every mutant mutmut made in ``paths``: name -> (path, status), read from its ``mutants/*.meta`` files."""
    from mutmut.stats import status_by_exit_code

    statuses: dict[str, tuple[str, str]] = {}
    for path in paths:
        meta = root / "mutants" / f"{path}.meta"
        if not meta.exists():
            continue
        exit_codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        for name, exit_code in exit_codes.items():
            statuses[name] = (path, status_by_exit_code[exit_code])
    return statuses


def mutant_diff(root: Path, name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    # mutmut reads mutants/<path> relative to the working folder.
    previous = Path.cwd()
    try:
        os.chdir(root)
        return get_diff_for_mutant(name, path=path)
    finally:
        os.chdir(previous)


def tally(config: Config, statuses: Mapping[str, tuple[str, str]], root: Path) -> Results:
    equivalents = load_equivalents(config.equivalents) if config.equivalents.exists() else []
    by_function: dict[tuple[str, str], Equivalent] = {
        (function_of(equivalent.mutant), equivalent.fingerprint): equivalent for equivalent in equivalents
    }
    used: set[tuple[str, str]] = set()
    results = Results()
    for target in config.targets:
        module_tally = results.modules.setdefault(target.path, Tally())
        group_tally = results.groups.setdefault(target.group, Tally())
        for name, (path, status) in sorted(statuses.items()):
            if path != target.path or not target.counts(name):
                continue
            mutant = Mutant(name, path, status)
            if status == NOT_CHECKED:
                results.not_checked.append(name)
            if not mutant.killed:
                mutant.diff = mutant_diff(root, name, path)
                key = (function_of(name), fingerprint(mutant.diff))
                equivalent = by_function.get(key)
                if equivalent is not None:
                    mutant.accepted_because = equivalent.reason
                    used.add(key)
                    results.accepted.append(mutant)
                else:
                    results.survivors.append(mutant)
            module_tally.add(mutant)
            group_tally.add(mutant)
    results.unmatched_equivalents = [equivalent for key, equivalent in by_function.items() if key not in used]
    return results


def table(results: Results, config: Config) -> str:
    header = f"{'target':<28} {'mutants':>8} {'killed':>8} {'survived':>9} {'equivalent':>11} {'score':>8}"
    lines = [header, "-" * len(header)]

    def row(name: str, counts: Tally, goal: float | None = None) -> str:
        verdict = "" if goal is None else f"  goal {goal:.0f}%: {'met' if counts.score >= goal else 'MISSED'}"
        return (
            f"{name:<28} {counts.mutants:>8} {counts.killed:>8} {counts.survived:>9} {counts.accepted:>11} "
            f"{counts.score:>7.1f}%{verdict}"
        )

    for path, counts in results.modules.items():
        lines.append(row(path, counts))
    lines.append("-" * len(header))
    for group, counts in results.groups.items():
        lines.append(row(group, counts, config.goals.get(group)))
    return "\n".join(lines)


def goals_met(results: Results, config: Config) -> bool:
    return not results.not_checked and all(
        results.groups.get(group, Tally()).score >= goal for group, goal in config.goals.items()
    )


def write_report(results: Results, config: Config, started: str, commit: str, seconds: float) -> Path:
    report = config.report
    if report.exists():
        shutil.rmtree(report)
    (report / "survivors").mkdir(parents=True)
    for mutant in results.survivors:
        (report / "survivors" / f"{mutant.name}.diff").write_text(
            f"# {mutant.status}; fingerprint {fingerprint(mutant.diff)}\n{mutant.diff}\n", encoding="utf-8"
        )
    summary: dict[str, Any] = {
        "started": started,
        "commit": commit,
        "seconds": round(seconds, 1),
        "passed": goals_met(results, config),
        "modules": {path: vars(counts) | {"score": round(counts.score, 1)} for path, counts in results.modules.items()},
        "groups": {
            group: vars(counts) | {"score": round(counts.score, 1), "goal": config.goals.get(group)}
            for group, counts in results.groups.items()
        },
        "survivors": [mutant.name for mutant in results.survivors],
        "accepted": {mutant.name: mutant.accepted_because for mutant in results.accepted},
        "not_checked": results.not_checked,
        "unmatched_equivalents": [equivalent.mutant for equivalent in results.unmatched_equivalents],
        "table": table(results, config),
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return report


def last_summary(config: Config | None = None) -> dict[str, Any] | None:
    """The summary the last ``make mutation`` wrote, or None if there is none."""
    summary = (config or load_config()).report / "summary.json"
    if not summary.exists():
        return None
    result: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
    return result


def run_mutmut(config: Config, root: Path, max_children: int) -> int:
    globs = [glob for target in config.targets for glob in target.globs()]
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *globs]
    return subprocess.run(command, cwd=root, check=False, stdin=subprocess.DEVNULL).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.mutation", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--resume", action="store_true", help="keep mutants/ and its results: run only what is not judged yet"
    )
    parser.add_argument("--report-only", action="store_true", help="tabulate the results in mutants/ without running")
    parser.add_argument("--max-children", type=int, help="parallel mutmut workers (default from pyproject.toml)")
    args = parser.parse_args(argv)
    config = load_config()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    began = time.monotonic()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    commit = head.stdout.strip() or "unknown"
    if not args.report_only:
        if not args.resume:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        exit_code = run_mutmut(config, ROOT, args.max_children or config.max_children)
        if exit_code != 0:
            print(f"mutmut exited with {exit_code}", file=sys.stderr)
            return exit_code
    results = tally(config, mutmut_statuses(ROOT, config.only_mutate), ROOT)
    report = write_report(results, config, started, commit, time.monotonic() - began)
    print()
    print(table(results, config))
    if results.not_checked:
        print(f"\n{len(results.not_checked)} mutants were not run: the run was cut short")
    for equivalent in results.unmatched_equivalents:
        print(
            f"equivalents entry matches no surviving mutant (killed now, or its function changed): {equivalent.mutant}"
        )
    print(f"\nsurvivors: {len(results.survivors)}; their diffs are in {report / 'survivors'}")
    return 0 if goals_met(results, config) else 1


if __name__ == "__main__":
    sys.exit(main())
