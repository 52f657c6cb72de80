"""The layers of saga/README.md, checked on the import graph.

The core (the modules that decide what moves money) imports nothing that
operates it: no command line, no web service, no terminal output, no metrics.
So a change to how a saga is shown or started cannot change what moves money.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SAGA = REPOSITORY / "saga"

#: The subpackages that operate the core; the core imports none of them.
OPERATING_PACKAGES = ("saga.cli", "saga.service", "saga.telemetry", "saga.drive")
#: Frameworks for people and programs around the core, never needed to move money.
OPERATING_LIBRARIES = ("argparse", "fastapi", "starlette", "uvicorn", "jinja2", "prometheus_client")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPOSITORY).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> list[Path]:
    """saga/ itself, its logs and its simulator; an entry point (__main__) belongs to the command line."""
    folders = (SAGA, SAGA / "logs", SAGA / "simulation")
    return sorted(path for folder in folders for path in folder.glob("*.py") if path.name != "__main__.py")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, TYPE_CHECKING blocks included."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return imported


def is_within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: module_name(path))
def test_no_module_of_the_core_imports_the_operating_layer(path: Path) -> None:
    offending = {
        module
        for module in imported_modules(path)
        if is_within(module, OPERATING_PACKAGES) or module.split(".")[0] in OPERATING_LIBRARIES
    }
    # saga/__init__.py names transfer_sync for `from saga import transfer_sync`,
    # and loads it only when asked (a module __getattr__), never on import.
    if module_name(path) == "saga":
        offending.discard("saga.drive.sync")
        offending.discard("saga.drive.sync.transfer_sync")
    # The simulator runs the accounts service's own ASGI app in its process,
    # and names that app's type; it starts no web server.
    if module_name(path).startswith("saga.simulation."):
        offending = {module for module in offending if not is_within(module, ("starlette.types",))}
    assert not offending, f"{module_name(path)} imports the operating layer: {sorted(offending)}"


#: What the simulator takes of the accounts service, to run it in its own process on a virtual clock.
SIMULATED_SERVICE = ("server.Settings", "server.create_app", "server.ledger", "server.stores.memory")


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: module_name(path))
def test_of_the_accounts_service_the_core_imports_only_what_both_programs_share(path: Path) -> None:
    allowed: tuple[str, ...] = ("server.shared",)
    if module_name(path).startswith("saga.simulation."):
        allowed += SIMULATED_SERVICE
    taken = {module for module in imported_modules(path) if is_within(module, ("server",))}
    # "from server.shared import x" names both server.shared and server.shared.x; a bare "server" is the package.
    wrong = {module for module in taken if module != "server" and not is_within(module, allowed)}
    assert not wrong, f"{module_name(path)} imports {sorted(wrong)} of the accounts service"


def test_the_core_list_holds_the_modules_that_move_money() -> None:
    names = {module_name(path) for path in core_modules()}
    assert {"saga.workflow", "saga.run", "saga.steps", "saga.orchestrator", "saga.logs.sqlite"} <= names
    assert not any(is_within(name, OPERATING_PACKAGES) for name in names)


def test_importing_the_workflow_loads_no_command_line_web_or_terminal_module() -> None:
    probe = "import sys, saga.workflow; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "saga.workflow" in loaded
    operating = [
        name for name in loaded if is_within(name, OPERATING_PACKAGES) or name.split(".")[0] in OPERATING_LIBRARIES
    ]
    assert operating == []


def test_the_accounts_service_imports_nothing_of_the_saga_and_the_client_neither() -> None:
    for package, forbidden in (("server", ("saga",)), ("generated_client", ("saga", "server"))):
        for path in sorted((REPOSITORY / package).rglob("*.py")):
            wrong = {module for module in imported_modules(path) if is_within(module, forbidden)}
            assert not wrong, f"{path.relative_to(REPOSITORY)} imports {sorted(wrong)}"


def every_module_of(*packages: str) -> list[str]:
    return sorted(
        module_name(path)
        for package in packages
        for path in (REPOSITORY / package).rglob("*.py")
        if path.name != "__main__.py"
    )


@pytest.mark.parametrize("module", every_module_of("server", "saga", "evaluation"))
def test_every_module_imports(module: str) -> None:
    # mypy cannot see a name missing from `saga` (its module __getattr__ makes
    # every attribute Any), so a stale `from saga import x` shows only here.
    importlib.import_module(module)
