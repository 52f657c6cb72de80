"""Shared fixtures: real accounts services in child processes, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import Phase, settings

from server.process import ServerProcess
from tests.support.postgres import fresh_database, names_postgresql

StartServer = Callable[..., ServerProcess]

# Selected by `make mutation` (--hypothesis-profile=mutation): every run draws
# the same examples and remembers none, so a mutant is judged the same way on
# every run; shrinking is off, since a mutant needs only to fail, not its
# smallest counterexample.
settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    print_blob=False,
)

#: Tests that take seconds where the others take milliseconds.
_SLOW_UNDER_MUTATION = ("tests/in_process/test_ledger_model.py::",)


#: The folder of tests that start nothing: `pytest -m "not integration"` runs those that reach no PostgreSQL server.
IN_PROCESS_FOLDER = "tests/in_process/"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by the folder it is in; and under the mutation profile, run the Hypothesis model tests last.

    Every test outside tests/in_process/ is an integration test: it starts
    real processes (tests/live/, tests/contract/) or runs whole simulations
    (tests/simulation/). So is an in-process test that reaches the PostgreSQL
    server, which its id says (tests/support/postgres.py refuses one that does
    not). A test in tests/in_process/ that starts a service,
    or is marked as one that does, is refused: it belongs in tests/live/, so
    that the in-process run stays quick. mutmut stops a mutant's tests at the first failure, so a
    mutant that a fast test kills is then judged in milliseconds rather than
    after the model tests' seconds. Elsewhere the order is left as collected.
    """
    for item in items:
        if not item.nodeid.startswith(IN_PROCESS_FOLDER) or names_postgresql(item.nodeid):
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("integration") is not None or "start_server" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid} starts processes: it belongs in tests/live/")
    if config.getoption("hypothesis_profile", None) != "mutation":
        return
    items.sort(key=lambda item: item.nodeid.startswith(_SLOW_UNDER_MUTATION))


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start ``python -m server`` processes on free loopback ports; stop them all at teardown."""
    started: list[ServerProcess] = []

    def start(accounts: dict[str, int] | None = None, **options: Any) -> ServerProcess:
        server = ServerProcess(accounts, **options)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A new, empty database on a real PostgreSQL server, dropped after the test."""
    with fresh_database() as dsn:
        yield dsn
