"""The pins in pyproject.toml: exact, split between the runtime and the dev group, and copied into requirements.txt."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from server.process import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME: list[str] = PYPROJECT["project"]["dependencies"]
DEV: list[str] = PYPROJECT["dependency-groups"]["dev"]
PACKAGES = ("server", "saga", "generated_client")
EXACT_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+$")


def distribution(pin: str) -> str:
    return re.sub(r"[-_.]+", "-", pin.partition("==")[0]).lower()


def test_every_pin_is_exact_and_in_one_list_only() -> None:
    assert [pin for pin in RUNTIME + DEV if not EXACT_PIN.match(pin)] == []
    names = [distribution(pin) for pin in RUNTIME + DEV]
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_requirements_txt_is_the_runtime_and_the_dev_group_together() -> None:
    lines = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins == sorted(RUNTIME + DEV, key=str.lower), "requirements.txt is stale: run make requirements"


def test_every_distribution_the_packages_import_is_a_runtime_dependency() -> None:
    runtime = {distribution(pin) for pin in RUNTIME}
    providers = importlib.metadata.packages_distributions()
    imported = third_party_imports()
    assert {"fastapi", "uvicorn", "httpx", "jinja2", "yaml"} <= set(imported)
    unpinned = {
        f"{module} ({', '.join(sorted(where))})"
        for module, where in imported.items()
        if not runtime & {distribution(name) for name in providers.get(module, [])}
    }
    assert unpinned == set()


def third_party_imports() -> dict[str, set[str]]:
    """Each top-level module the packages import, outside the standard library and themselves, with its importers."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(str(Path(path).relative_to(REPO_ROOT)))
    return found
