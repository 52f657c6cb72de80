"""A real PostgreSQL server for the tests: one uniquely named database per use, dropped afterwards.

The server is ``PG_DSN`` when set, else the machine's local one. Where nothing
listens, the tests that need it skip with one line, except under ``CI=true``,
where that is a failure. A server that answers but refuses is always a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_dsn() -> str:
    return os.environ.get("PG_DSN") or DEFAULT_DSN


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


def require_server() -> str:
    """The server's DSN; skips (fails under CI=true) where nothing listens there."""
    dsn = server_dsn()
    if not _listening(dsn):
        message = f"no PostgreSQL server listens at {urlsplit(dsn).hostname}:{urlsplit(dsn).port or 5432}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and under CI=true every PostgreSQL test must run")
        pytest.skip(message)
    return dsn


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def fresh_database_async(prefix: str = "saga_test") -> AsyncIterator[str]:
    """fresh_database, for code already running on an event loop."""
    dsn = require_server()
    name = _unique_name(prefix)
    await _admin(dsn, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(dsn, name)
    finally:
        await _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(prefix: str = "saga_test") -> Iterator[str]:
    """Create a uniquely named database on the test server; yield its DSN; drop it."""
    dsn = require_server()
    name = _unique_name(prefix)
    # A refusal here (authentication, permissions) is raised, never skipped.
    asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(dsn, name)
    finally:
        asyncio.run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
