"""A real PostgreSQL server for the tests: one uniquely named database per use, dropped afterwards.

The server is ``PG_DSN`` when set, else the machine's local one. Where nothing
listens, the tests that need it skip with one line, except under ``CI=true``,
where that is a failure. A server that answers but refuses is always a failure.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit

import pytest

from evaluation.scratch_database import scratch_database, scratch_database_blocking, server_dsn


def _listening(dsn: str) -> bool:
    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if host.startswith("/"):
        return os.path.exists(os.path.join(host, f".s.PGSQL.{port}"))
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def names_postgresql(node_id: str) -> bool:
    """Whether a test's id says it reaches the PostgreSQL server, which marks an in-process test integration."""
    return "postgres" in node_id.lower()


def require_named_as_reaching_postgresql() -> None:
    # tests/conftest.py marks an in-process test "integration" by its id, so
    # one that reaches the server unnamed would slip into the quick run.
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    if current.startswith("tests/in_process/") and not names_postgresql(current):
        raise RuntimeError(f"{current} reaches PostgreSQL: say so in its name or parameter id ('postgres')")


def require_server() -> str:
    """The server's DSN; skips (fails under CI=true) where nothing listens there."""
    require_named_as_reaching_postgresql()
    dsn = server_dsn()
    if not _listening(dsn):
        message = f"no PostgreSQL server listens at {urlsplit(dsn).hostname}:{urlsplit(dsn).port or 5432}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and under CI=true every PostgreSQL test must run")
        pytest.skip(message)
    return dsn


@asynccontextmanager
async def fresh_database_async(prefix: str = "saga_test") -> AsyncIterator[str]:
    """fresh_database, for code already running on an event loop."""
    async with scratch_database(prefix, require_server()) as dsn:
        yield dsn


@contextmanager
def fresh_database(prefix: str = "saga_test") -> Iterator[str]:
    """Create a uniquely named database on the test server; yield its DSN; drop it.

    A refusal while creating it (authentication, permissions) is raised, never skipped.
    """
    with scratch_database_blocking(prefix, require_server()) as dsn:
        yield dsn
