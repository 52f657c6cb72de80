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
