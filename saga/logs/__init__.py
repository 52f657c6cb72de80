"""Saga logs: the write-ahead record of every saga, in SQLite, in PostgreSQL, or in memory.

``open_log(url)`` picks one from a database URL, read by the same parser as
the accounts service's ``--database``: a bare path or ``sqlite:///…`` gives
the SQLite log (one process at a time), ``postgresql://…`` the shared log
that many worker processes drive together, and ``memory`` a log that lives
as long as the process.
"""

from __future__ import annotations

from pathlib import Path

from saga.logs.base import IdempotencyKeyConflict, LeaseLost, SagaLog, SagaLogError
from saga.logs.memory import MemorySagaLog
from saga.logs.sqlite import SqliteSagaLog, count_sagas
from server.shared.database_url import DatabaseUrlError, parse_database_url


async def open_log(url: str | Path, *, create: bool = True, exclusive: bool = True) -> SagaLog:
    """Open the saga log ``url`` names; SagaLogError says in one line why it cannot be.

    ``create`` and ``exclusive`` are the SQLite log's (see
    :meth:`SqliteSagaLog.open`); a PostgreSQL log is always shared and its
    schema is made on first use.
    """
    try:
        parsed = parse_database_url(str(url))
    except DatabaseUrlError as error:
        raise SagaLogError(str(error)) from None
    if parsed.kind == "postgresql":
        from saga.logs.postgres import PostgresSagaLog

        assert parsed.dsn is not None
        return await PostgresSagaLog.open(parsed.dsn)
    if parsed.kind == "memory":
        # It lives and dies with this process: no other one can reach it.
        return MemorySagaLog(exclusive=True)
    assert parsed.path is not None
    return await SqliteSagaLog.open(parsed.path, create=create, exclusive=exclusive)


def is_shared(url: str | Path) -> bool:
    """Whether ``url`` names a log that several processes drive together (PostgreSQL)."""
    try:
        return parse_database_url(str(url)).kind == "postgresql"
    except DatabaseUrlError:
        return False


__all__ = [
    "IdempotencyKeyConflict",
    "LeaseLost",
    "MemorySagaLog",
    "SagaLog",
    "SagaLogError",
    "SqliteSagaLog",
    "count_sagas",
    "is_shared",
    "open_log",
]
