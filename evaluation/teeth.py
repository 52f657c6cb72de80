"""Does the simulator have teeth? Run it against known-bad variants of the code and see it bite.

Each ``patches/*.patch`` is a mistake a real team makes, as a unified diff
that applies to HEAD, headed by a ``# breaks: ...`` line. For each one, the
committed tree (with the simulator as it is in the working tree) is copied
into a scratch folder, the patch is applied there, and the simulator runs
there in a child process. A variant the simulator passes is a hole in the
simulator.

Every patch names the tests that catch it, one ``# caught-by:
tests/...::test_...`` line each after the first (``make evaluate`` runs
those). A patch the simulator must catch says so, and which invariant it
reports broken, on a ``# simulator-catches: money conserved`` line: for
those, the simulator runs here. For a mistake the simulator cannot see (it
runs the memory store, so not one in the PostgreSQL store's SQL), the named
tests run in the patched copy instead, and each must fail there.

    .venv/bin/python -m evaluation.teeth            # every patch
    .venv/bin/python -m evaluation.teeth float-money
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

REPOSITORY = Path(__file__).resolve().parents[1]
SIMULATOR = "saga/simulation"
BREAKS_PREFIX = "# breaks:"
CAUGHT_BY_PREFIX = "# caught-by:"
SIMULATOR_CATCHES_PREFIX = "# simulator-catches:"


class PatchError(RuntimeError):
    """A known-bad variant could not be set up: the patch is malformed or no longer applies."""


@dataclass(frozen=True)
class KnownBadVariant:
    patch: Path

    @property
    def name(self) -> str:
        return self.patch.stem

    @property
    def breaks(self) -> str:
        """What the patch breaks, from its header line."""
        first = self.patch.read_text(encoding="utf-8").splitlines()[0] if self.patch.stat().st_size else ""
        if not first.startswith(BREAKS_PREFIX):
            raise PatchError(f"{self.patch} must start with a '{BREAKS_PREFIX} ...' line")
        return first.removeprefix(BREAKS_PREFIX).strip()

    def _header(self, prefix: str) -> list[str]:
        """The values of the header lines (the comment lines after the first) that start with ``prefix``."""
        values = []
        for line in self.patch.read_text(encoding="utf-8").splitlines()[1:]:
            if not line.startswith("#"):
                break
            if line.startswith(prefix):
                values.append(line.removeprefix(prefix).strip())
        return values

    @property
    def caught_by(self) -> tuple[str, ...]:
        """The pytest node ids (or test files) that must fail on this variant."""
        return tuple(self._header(CAUGHT_BY_PREFIX))

    @property
    def simulator_catches(self) -> str | None:
        """The invariant the simulator must report broken on this variant; None when it cannot see the mistake."""
        return next(iter(self._header(SIMULATOR_CATCHES_PREFIX)), None)


@dataclass(frozen=True)
class SimulatorVerdict:
    """What the simulator said about one tree."""

    exit_code: int
    runs: list[dict[str, Any]]
    stderr: str
    seconds: float

    @property
    def invariants_broken(self) -> list[str]:
        return list(
            dict.fromkeys(violation["invariant"] for run in self.runs for violation in run.get("violations", []))
        )

    @property
    def caught(self) -> bool:
        return self.exit_code == 1 and bool(self.invariants_broken)


@dataclass(frozen=True)
class NamedTestsVerdict:
    """What the named tests said about one tree."""

    tests: tuple[str, ...]
    exit_code: int
    output: str
    seconds: float

    @property
    def failed(self) -> list[str]:
        return [test for test in self.tests if f"FAILED {test}" in self.output]

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and f"{len(self.tests)} passed" in self.output

    @property
    def caught(self) -> bool:
        return self.exit_code == 1 and self.failed == list(self.tests)


def known_bad_variants(repository: Path = REPOSITORY) -> list[KnownBadVariant]:
    return [KnownBadVariant(patch) for patch in sorted((repository / "patches").glob("*.patch"))]


def _git(repository: Path, *arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *arguments], cwd=repository, capture_output=True, env=env, check=False)


def check_applies_to_head(variant: KnownBadVariant, repository: Path = REPOSITORY) -> None:
    """Raise PatchError unless the patch applies cleanly to the committed HEAD.

    Checked against a scratch index holding HEAD, so neither uncommitted work
    in the tree nor anything staged gets in the way, and the real index is
    never touched.
    """
    with tempfile.TemporaryDirectory(prefix="teeth-index-") as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        for arguments in (("read-tree", "HEAD"), ("apply", "--check", "--cached", str(variant.patch))):
            done = _git(repository, *arguments, env=env)
            if done.returncode != 0:
                raise PatchError(f"{variant.name}: git {arguments[0]} failed: {done.stderr.decode().strip()}")


def copy_repository(destination: Path, repository: Path = REPOSITORY) -> None:
    """Copy the committed tree, with the simulator as it is in the working tree.

    The patches are written against HEAD, and only the simulator is under
    test: other uncommitted work in a shared checkout (a half-done edit of
    the ledger, say) must neither stop a patch from applying nor count as a
    catch.
    """
    archive = _git(repository, "archive", "--format=tar", "HEAD")
    if archive.returncode != 0:
        raise PatchError(f"cannot archive HEAD: {archive.stderr.decode().strip()}")
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tree:
        tree.extractall(destination, filter="data")
    listed = _git(repository, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", SIMULATOR)
    if listed.returncode != 0:
        raise PatchError(f"cannot list the simulator's files: {listed.stderr.decode().strip()}")
    for name in listed.stdout.decode().split("\0"):
        source = repository / name
        target = destination / name
        if name and source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif name:
            # Deleted in the working tree: gone from the simulator under test too.
            target.unlink(missing_ok=True)


def apply_patch(variant: KnownBadVariant, tree: Path) -> None:
    # The scratch tree is no repository: git apply then works like patch -p1.
    # The ceiling keeps git from finding a repository in a folder above it.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    done = _git(tree, "apply", str(variant.patch), env=env)
    if done.returncode != 0:
        raise PatchError(f"{variant.name} does not apply: {done.stderr.decode().strip()}")


def simulate_in(
    tree: Path, *, seed: int = 1, seeds: int = 5, transfers: int = 200, timeout: float = 120.0
) -> SimulatorVerdict:
    """Run the simulator that lives in ``tree`` on its own code, in a child process, until it finds a violation."""
    command = [
        sys.executable,
        "-m",
        "saga.simulation",
        "--seed",
        str(seed),
        "--seeds",
        str(seeds),
        "--transfers",
        str(transfers),
        "--fail-fast",
        "--json",
    ]
    # Only the tree's own code may be imported: no PYTHONPATH back to this checkout.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    seconds = time.perf_counter() - started
    last_line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    try:
        runs = json.loads(last_line)["runs"]
    except (ValueError, KeyError, TypeError):
        runs = []
    return SimulatorVerdict(done.returncode, runs, done.stderr, seconds)


def judge(
    variant: KnownBadVariant | None, scratch: Path, *, seed: int = 1, seeds: int = 5, transfers: int = 200
) -> SimulatorVerdict:
    """Copy the repository into ``scratch``, apply ``variant`` (None: leave it as it is), and simulate there."""
    tree = scratch / "repository"
    copy_repository(tree)
    if variant is not None:
        apply_patch(variant, tree)
    return simulate_in(tree, seed=seed, seeds=seeds, transfers=transfers)


def run_tests_in(tree: Path, tests: Sequence[str], *, timeout: float = 600.0) -> NamedTestsVerdict:
    """Run ``tests`` in ``tree``, on the tree's own code, in a child process."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", *tests]
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return NamedTestsVerdict(tuple(tests), done.returncode, done.stdout + done.stderr, time.perf_counter() - started)


def judge_by_tests(variant: KnownBadVariant | None, scratch: Path, tests: Sequence[str]) -> NamedTestsVerdict:
    """Copy the repository into ``scratch``, apply ``variant`` (None: leave it as it is), and run ``tests`` there."""
    tree = scratch / "repository"
    copy_repository(tree)
    if variant is not None:
        apply_patch(variant, tree)
    return run_tests_in(tree, tests)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.teeth", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="patch names (default: every patch under patches/)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds to try per patch before calling it missed (5)")
    parser.add_argument("--transfers", type=int, default=200, help="transfers per seed (200)")
    args = parser.parse_args(argv)
    variants = [variant for variant in known_bad_variants() if not args.names or variant.name in args.names]
    missed = 0
    for variant in variants:
        check_applies_to_head(variant)
        with tempfile.TemporaryDirectory(prefix=f"teeth-{variant.name}-") as scratch:
            expected = variant.simulator_catches
            if expected is None:
                by_tests = judge_by_tests(variant, Path(scratch), variant.caught_by)
                caught, seconds = by_tests.caught, by_tests.seconds
                found = f"failed {', '.join(by_tests.failed) or 'no test'}"
            else:
                verdict = judge(variant, Path(scratch), seeds=args.seeds, transfers=args.transfers)
                broken = verdict.invariants_broken
                caught = verdict.caught and any(invariant.startswith(expected) for invariant in broken)
                seconds = verdict.seconds
                found = f"broke {', '.join(broken) or 'nothing'} (expected: {expected})"
        status = "caught" if caught else "MISSED"
        missed += not caught
        print(f"{status:>6}  {variant.name} ({seconds:.1f}s): {found}", file=out)
        print(f"        breaks: {variant.breaks}", file=out)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
