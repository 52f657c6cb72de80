"""Outages, told apart from bugs and said in one line: a saga log that fails, a service that cannot be read.

A command that meets an outage mid-run ends with its summary of what it
knows and one line naming what failed, never a traceback. The logs wrap
their database's errors in :class:`~saga.logs.SagaLogError`, but not on
every path (SQLite's reads and claims raise :mod:`sqlite3`'s own), so the
commands catch the whole family.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import asyncpg
import httpx

from saga.logs import SagaLogError
from saga.replicas import describe

#: What a saga log raises when its database fails: a full disk, a lost connection, a stopped server.
#: asyncpg's InternalClientError ("cannot switch to state 12" on a connection
#: whose backend was terminated under it) is no InterfaceError: it is named too.
LOG_FAILURES: Final = (
    SagaLogError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def is_log_failure(error: BaseException) -> bool:
    return isinstance(error, LOG_FAILURES)


def one_line(error: BaseException) -> str:
    """``error`` as ``Kind: message`` on one line; a transport error by its real kind (see saga/replicas.py)."""
    if isinstance(error, httpx.TransportError):
        return describe(error)
    text = " ".join(str(error).split())
    if isinstance(error, SagaLogError):
        # Its message already says where and what.
        return text or "the saga log failed"
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def what_failed(error: BaseException) -> str:
    """One line for an operator: what failed and how, e.g. ``the saga log failed: OperationalError: disk I/O error``."""
    if isinstance(error, SagaLogError):
        return one_line(error)
    if is_log_failure(error):
        return f"the saga log failed: {one_line(error)}"
    return one_line(error)
