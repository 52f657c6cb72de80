"""What every command of ``python -m saga`` shares as it runs: its exit statuses, its one-line errors, and the
saga log or transfers service it works on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from saga.cli import remote
from saga.cli.options import DEFAULT_DB, given_db
from saga.failures import LOG_FAILURES
from saga.logs import SagaLog, SagaLogError
from saga.logs import open_log as open_any_log
from saga.run import TransferResult

EXIT_OK = 0
EXIT_SAGA_DID_NOT_COMPLETE = 1
EXIT_BAD_INPUT = 2
EXIT_INVARIANT_BROKEN = 3


class UsageError(Exception):
    """Bad input: reported on one line, with nothing done."""


class Outage(Exception):
    """The saga log or a service failed before the command could do anything: one line, exit 1."""


async def open_log(url: str | Path, *, create: bool = True, exclusive: bool = True) -> SagaLog:
    if str(url).strip() == "memory":
        raise UsageError("--db memory would lose every saga with this process: give a SQLite path or postgresql://…")
    try:
        return await open_any_log(url, create=create, exclusive=exclusive)
    except SagaLogError as error:
        raise UsageError(str(error)) from None


async def close_log(log: SagaLog) -> None:
    """Close ``log``; a log that failed may fail its close too, which changes nothing the command reports."""
    with contextlib.suppress(*LOG_FAILURES):
        await log.close()


def settle_api_or_log(args: argparse.Namespace) -> None:
    """Whether a command that takes both goes through the transfers service (``args.api``, else None) or a log.

    A flag beats the environment; two flags, or SAGA_API and SAGA_DB with
    neither flag, are refused: the command would have to ignore one.
    """
    if args.api and args.db:
        raise UsageError("give --api or --db, not both")
    if args.api or args.db:
        return
    api, db = os.environ.get("SAGA_API"), os.environ.get("SAGA_DB")
    if api and db:
        raise UsageError("SAGA_API and SAGA_DB are both set: choose with --api URL or --db LOG")
    args.api = api or None


def default_db(args: argparse.Namespace) -> str:
    """The saga log of a command that reads or writes one: --db, else SAGA_DB, else saga.db."""
    return given_db(args) or DEFAULT_DB


def transfers_api(args: argparse.Namespace) -> remote.TransfersApi:
    from saga.replicas import url_problem

    problem = url_problem(args.api)
    if problem is not None:
        raise UsageError(f"--api {args.api!r} {problem}")
    return remote.TransfersApi(args.api.rstrip("/"), args.api_token)


def result_json(result: TransferResult) -> dict[str, Any]:
    return {
        "transaction_id": result.transaction_id,
        "state": result.state.value,
        "source": str(result.source),
        "target": str(result.target),
        "amount": result.amount,
        "attempts": len(result.attempts),
        "retries": result.retries,
        "error": result.error,
        "seconds": round(result.seconds, 4),
    }
