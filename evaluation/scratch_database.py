"""A uniquely named PostgreSQL database for one benchmark run, dropped afterwards.

The server is ``PG_DSN`` when set, else the machine's local one.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_dsn() -> str:
    return os.environ.get("PG_DSN") or LOCAL_SERVER


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def scratch_database(prefix: str, server: str | None = None) -> AsyncIterator[str]:
    """Create a database on ``server`` (default :func:`server_dsn`); yield its DSN; drop it."""
    admin = server or server_dsn()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    await _execute(admin, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin, name)
    finally:
        await _execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database_blocking(prefix: str, server: str | None = None) -> Iterator[str]:
    """:func:`scratch_database` for code that runs no event loop of its own."""
    admin = server or server_dsn()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_execute(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin, name)
    finally:
        asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
