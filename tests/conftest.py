"""Shared fixtures: real accounts services in child processes, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import Phase, settings

from server.process import ServerProcess
from tests.support.postgres import fresh_database

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
_SLOW_UNDER_MUTATION = ("tests/unit/test_ledger_model.py::",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the mutation profile, run the Hypothesis model tests last.

    mutmut stops a mutant's tests at the first failure, so a mutant that a
    fast test kills is then judged in milliseconds rather than after the
    model tests' seconds. Elsewhere the order is left as collected.
    """
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
