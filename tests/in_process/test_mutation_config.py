"""The mutation-testing configuration still names what exists: files, functions, tests, accepted mutants.

`make mutation` is too slow for `make test`; this keeps its configuration from
rotting in between, e.g. when a module it targets is split or renamed.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from evaluation.mutation import (
    ROOT,
    Mutant,
    Results,
    Tally,
    Target,
    fingerprint,
    function_of,
    goals_met,
    load_config,
    load_equivalents,
    mangled,
    table,
)

CONFIG = load_config()


def functions_in(path: Path) -> set[str]:
    """Every module-level function and method in ``path``, as "name" or "Class.method"."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return names


def test_every_file_mutmut_mutates_exists_and_is_a_target() -> None:
    for path in CONFIG.only_mutate:
        assert (ROOT / path).is_file(), f"[tool.mutmut] only_mutate names {path}, which does not exist"
    assert sorted(CONFIG.only_mutate) == sorted({target.path for target in CONFIG.targets})


def test_every_targeted_function_exists() -> None:
    for target in CONFIG.targets:
        missing = set(target.functions) - functions_in(ROOT / target.path)
        assert not missing, f"{target.path} has no {sorted(missing)}"


def test_every_group_has_a_goal_and_every_selected_test_file_exists() -> None:
    assert {target.group for target in CONFIG.targets} == set(CONFIG.goals)
    assert CONFIG.goals["money rules"] >= 98
    assert CONFIG.goals["saga core"] >= 95
    for test_file in CONFIG.test_selection:
        assert (ROOT / test_file).is_file(), f"[tool.mutmut] selects {test_file}, which does not exist"
    mutmut = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    assert "--hypothesis-profile=mutation" in mutmut["pytest_add_cli_args"]


def imported_packages(paths: list[Path]) -> set[str]:
    """The top-level names that ``paths`` import."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_mutmut_copies_every_folder_of_this_repository_that_the_selected_tests_import() -> None:
    # mutmut runs the tests in a copy holding only its source paths and also_copy:
    # a folder the tests import and the copy lacks fails every run before any mutant.
    mutmut = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    copied = {*mutmut["source_paths"], *mutmut["also_copy"], "tests"}
    loaded = [ROOT / "tests" / "conftest.py", *(ROOT / "tests" / "support").glob("*.py")]
    loaded += [ROOT / test_file for test_file in CONFIG.test_selection]
    own_folders = {name for name in imported_packages(loaded) if (ROOT / name).is_dir()}
    assert own_folders <= copied, f"add {sorted(own_folders - copied)} to [tool.mutmut] also_copy"


def test_the_mutation_report_folder_and_mutmuts_folder_are_ignored_by_git() -> None:
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/mutants/" in ignored
    assert "evaluation/reports/" in ignored
    assert CONFIG.report.is_relative_to(ROOT / "evaluation" / "reports")


def test_every_accepted_mutant_names_a_targeted_function_and_gives_a_reason() -> None:
    for equivalent in load_equivalents(CONFIG.equivalents):
        assert len(equivalent.fingerprint) == 12
        assert int(equivalent.fingerprint, 16) >= 0
        assert equivalent.reason.strip()
        owners = [target for target in CONFIG.targets if target.counts(equivalent.mutant)]
        assert owners, f"{equivalent.mutant} belongs to no target"


def test_mutant_names_are_matched_the_way_mutmut_spells_them() -> None:
    log = Target("saga core", "saga/logs/sqlite.py", ("_apply", "SqliteSagaLog.commit"))
    assert mangled("SqliteSagaLog.commit") == "xǁSqliteSagaLogǁcommit"
    assert log.counts("saga.logs.sqlite.x__apply__mutmut_3")
    assert log.counts("saga.logs.sqlite.xǁSqliteSagaLogǁcommit__mutmut_12")
    assert not log.counts("saga.logs.sqlite.x__apply_more__mutmut_1")
    assert not log.counts("saga.logs.sqlite.xǁSqliteSagaLogǁclose__mutmut_1")
    assert Target("money rules", "server/ledger.py").counts("server.ledger.x_decide__mutmut_1")
    assert function_of("saga.logs.sqlite.x__apply__mutmut_3") == "saga.logs.sqlite.x__apply"


def test_a_fingerprint_ignores_where_the_function_is_but_not_what_changed() -> None:
    diff = "--- a.py\n+++ a.py\n@@ -1,3 +1,3 @@\n def f():\n-    return 1\n+    return 2"
    moved = diff.replace("@@ -1,3 +1,3 @@", "@@ -40,3 +40,3 @@")
    assert fingerprint(diff) == fingerprint(moved)
    assert fingerprint(diff) != fingerprint(diff.replace("+    return 2", "+    return 3"))


def test_the_score_counts_accepted_mutants_and_the_goal_is_judged_per_group() -> None:
    results = Results()
    tally = results.groups.setdefault("money rules", Tally())
    for status, accepted in [("killed", None), ("timeout", None), ("survived", "log text"), ("survived", None)]:
        tally.add(Mutant("m", "server/ledger.py", status, accepted_because=accepted))
    assert (tally.mutants, tally.killed, tally.accepted, tally.survived) == (4, 2, 1, 1)
    assert tally.score == pytest.approx(75.0)
    results.modules["server/ledger.py"] = tally
    assert not goals_met(results, CONFIG)
    assert "money rules" in table(results, CONFIG)
    assert "MISSED" in table(results, CONFIG)
