"""The package as someone installs it: its wheel, in a fresh virtual environment outside the repository.

The wheel is built from a copy of the sources, then installed with its
pinned runtime dependencies, and nothing else, into a virtual environment in
a temporary folder. Both programs run from that folder, so nothing can come
from the repository: what they read beside their modules (contracts,
templates, static files, SQL migrations) must have travelled in the wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.process import REPO_ROOT

PACKAGES = ("server", "saga", "generated_client")
#: What the code reads beside its modules, by suffix; a package's other files (a README) stay out.
DATA_SUFFIXES = frozenset({".sql", ".html", ".css", ".yaml"})
#: Never part of a build: local environments, history, caches, earlier builds, databases.
NOT_SOURCES = shutil.ignore_patterns(
    ".*", "__pycache__", "mutants", "build", "dist", "*.egg-info", "*.db", "*.db-*", "reports", "bench-results"
)

#: Run inside the installed environment: import every module, and read every data file through importlib.resources.
INSPECT = """
import hashlib, importlib, importlib.resources, json, pkgutil, sys

modules = {}
data = {}
for top in sys.argv[1:]:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if not info.name.endswith(".__main__"):
            modules[info.name] = importlib.import_module(info.name).__file__

    def walk(folder, prefix):
        for item in folder.iterdir():
            if item.is_dir():
                walk(item, f"{prefix}{item.name}/")
            elif not item.name.endswith((".py", ".pyc")):
                data[prefix + item.name] = hashlib.sha256(item.read_bytes()).hexdigest()

    walk(importlib.resources.files(top), f"{top}/")
print(json.dumps({"modules": modules, "data": data}))
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path
    site_packages: Path
    #: Where the programs run: outside the repository, beside nothing it holds.
    folder: Path
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def pip_name(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


PROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
DIST_INFO = f"{PROJECT['name'].replace('-', '_')}-{PROJECT['version']}.dist-info"


def repository_files(suffixes: frozenset[str] | None) -> dict[str, Path]:
    """The packages' files in the repository by their path in the wheel: modules (None) or data of these suffixes."""
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if (path.suffix == ".py") if suffixes is None else (path.suffix in suffixes):
                found[path.relative_to(REPO_ROOT).as_posix()] = path
    return found


def check(command: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # A copy, so that the build's leftovers (build/, *.egg-info) never land in the checkout; the
    # contracts' links stay links, as in a clone.
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=NOT_SOURCES)
    dist = root / "dist"
    check(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)], root, env
    )
    (wheel,) = dist.glob("*.whl")

    venv = root / "venv"
    check([sys.executable, "-m", "venv", str(venv)], root, env)
    check([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], root, env)
    folder = root / "elsewhere"
    folder.mkdir()
    (site_packages,) = (venv / "lib").glob("python3.*/site-packages")
    return Installed(wheel, venv / "bin", site_packages, folder, env)


def test_the_wheel_holds_the_three_packages_and_their_data_and_nothing_else(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    assert {name.split("/")[0] for name in names} == {*PACKAGES, DIST_INFO}
    assert {name for name in names if name.endswith(".py")} == set(repository_files(None))
    packaged_data = {name for name in names if not name.endswith(".py") and not name.startswith(DIST_INFO)}
    assert packaged_data == set(repository_files(DATA_SUFFIXES))
    assert {"server/openapi.yaml", "saga/service/transfers.yaml", "saga/service/static/console.css"} <= packaged_data
    assert any(name.startswith("server/stores/sql/sqlite/") for name in packaged_data)
    assert any(name.startswith("saga/logs/sql/postgresql/") for name in packaged_data)


def test_installing_the_wheel_installs_exactly_the_pinned_runtime(installed: Installed) -> None:
    listed = installed.run("pip", "list", "--format=json", "--exclude", "pip", "--exclude", "setuptools")
    assert listed.returncode == 0, listed.stderr
    present = {pip_name(f"{item['name']}=={item['version']}") for item in json.loads(listed.stdout)}
    project = pip_name(f"{PROJECT['name']}=={PROJECT['version']}")
    assert present == {pip_name(pin) for pin in PROJECT["dependencies"]} | {project}


def test_both_entry_points_answer_help_from_outside_the_repository(installed: Installed) -> None:
    saga = installed.run("saga", "--help")
    assert saga.returncode == 0, saga.stderr
    assert "Money transfers as durable sagas." in saga.stdout
    assert all(command in saga.stdout for command in ("transfer", "batch", "recover", "demo", "serve", "simulate"))

    accounts = installed.run("accounts-service", "--help")
    assert accounts.returncode == 0, accounts.stderr
    assert "Run an accounts service." in accounts.stdout
    assert all(flag in accounts.stdout for flag in ("--host", "--port", "--database", "--accounts", "--token"))


def test_every_module_imports_and_every_data_file_reads_from_the_installed_package(installed: Installed) -> None:
    inspected = installed.run("python", "-c", INSPECT, *PACKAGES)
    assert inspected.returncode == 0, inspected.stderr
    found = json.loads(inspected.stdout)

    expected_modules = {
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in repository_files(None)
    } - set(PACKAGES)
    assert set(found["modules"]) == {name for name in expected_modules if not name.endswith(".__main__")}
    assert all(Path(path).is_relative_to(installed.site_packages) for path in found["modules"].values())

    expected_data = {
        name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in repository_files(DATA_SUFFIXES).items()
    }
    assert found["data"] == expected_data


def test_both_services_serve_their_contracts_console_and_ledger_from_the_installed_package(
    installed: Installed,
) -> None:
    accounts = installed.folder / "accounts.json"
    accounts.write_text(json.dumps({"alice": 500}), encoding="utf-8")
    ledger = installed.folder / "ledger.db"
    bank_command = ("accounts-service", "--accounts", str(accounts), "--database", f"sqlite:///{ledger}")
    with serving(installed, "bank", *bank_command, "--log-level", "warning") as bank:
        # The SQLite store applied its migrations, read from the package, before it answered.
        assert get_json(bank, "/accounts/alice") == {"user_id": "alice", "balance": 500}
        assert get_json(bank, "/openapi.json") == load_yaml(REPO_ROOT / "openapi" / "openapi.yaml")
        assert ledger.exists()

        log = f"sqlite:///{installed.folder / 'saga.db'}"
        with serving(installed, "transfers", "saga", "serve", "--db", log, "--service", f"bank={bank}") as transfers:
            assert get_json(transfers, "/openapi.json") == load_yaml(REPO_ROOT / "openapi" / "transfers.yaml")
            assert "<title>Overview · Transfers console</title>" in get(transfers, "/ui/").decode()
            stylesheet = REPO_ROOT / "saga" / "service" / "static" / "console.css"
            assert get(transfers, "/ui/static/console.css") == stylesheet.read_bytes()


@contextmanager
def serving(installed: Installed, name: str, *command: str) -> Iterator[str]:
    """One of the programs on a socket bound here, so on a port no one else can take; stopped at the end."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    output = installed.folder / f"{name}.log"
    with listener, output.open("wb") as log:
        process = subprocess.Popen(
            [str(installed.bin / command[0]), *command[1:], "--fd", str(listener.fileno())],
            pass_fds=(listener.fileno(),),
            cwd=installed.folder,
            env=installed.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(process, url, output)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, output: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before it was healthy:\n{output.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} was not healthy within 30 s:\n{output.read_text(errors='replace')}")


def get(url: str, path: str) -> bytes:
    request = urllib.request.Request(f"{url}{path}", headers={"transaction_id": "wheel-check"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body: bytes = answer.read()
        return body


def get_json(url: str, path: str) -> Any:
    return json.loads(get(url, path))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
