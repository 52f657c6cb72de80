"""``python -m saga reconcile``: the command around :mod:`saga.reconcile`.

It reads the window and the services from the command line, opens the log,
and prints the findings as lines or as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from typing import TextIO

from saga.cli.options import (
    add_db_option,
    add_directory_options,
    add_json_option,
    add_request_timeout_option,
    add_token_option,
    whole_number,
)
from saga.cli.running import default_db, open_log
from saga.deadlines import iso_time
from saga.directory import directory_from
from saga.logs import SagaLog, SagaLogError
from saga.reconcile import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, Reconciliation, reconcile

DEFAULT_WINDOW = "24h"
_RELATIVE = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def add_reconcile_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "reconcile",
        help="compare every saga that ended with the services' audit trails; or lift a quarantine (--accept)",
    )
    add_db_option(command)
    command.add_argument(
        "--since",
        default=DEFAULT_WINDOW,
        help="the sagas that ended since then: an ISO 8601 time (2026-12-01T00:00:00Z), or a span back from now "
        f"such as 30m, 24h or 7d ({DEFAULT_WINDOW})",
    )
    add_token_option(command)
    command.add_argument(
        "--concurrency", type=whole_number(1, 256), default=16, help="reads of the services at once (16)"
    )
    add_request_timeout_option(command, parse=whole_number(1, 600))
    command.add_argument("--accept", metavar="SERVICE", help="lift SERVICE's quarantine, as decided by an operator")
    command.add_argument("--reason", help="why the quarantined ledger is accepted as it is now; recorded in the log")
    add_json_option(command)
    add_directory_options(command)


class BadInput(ValueError):
    pass


def run_reconcile(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        return asyncio.run(_run(args, out, err))
    except BadInput as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except SagaLogError as error:
        print(f"error: the saga log failed: {error}", file=err)
        return EXIT_INCOMPLETE


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if (args.accept is None) != (args.reason is None):
        raise BadInput("--accept SERVICE and --reason TEXT go together")
    if args.reason is not None and not args.reason.strip():
        raise BadInput("--reason must say why the ledger is accepted")
    since_ms = None if args.accept is not None else since(args.since, time.time_ns() // 1_000_000)
    try:
        directory = directory_from(args.service, args.services)
    except ValueError as error:
        raise BadInput(str(error)) from None
    try:
        log = await open_log(default_db(args), create=False, exclusive=False)
    except Exception as error:
        raise BadInput(str(error)) from None
    try:
        if args.accept is not None:
            return await _accept(log, args.accept, args.reason, out, err, as_json=args.json)
        assert since_ms is not None
        outcome = await reconcile(
            log,
            directory,
            token=args.token,
            since_ms=since_ms,
            concurrency=args.concurrency,
            request_timeout=float(args.request_timeout),
        )
    finally:
        await log.close()
    _report(outcome, out, err, as_json=args.json)
    return outcome.exit_code


async def _accept(log: SagaLog, service: str, reason: str, out: TextIO, err: TextIO, *, as_json: bool) -> int:
    accepted = await log.accept(service, reason.strip(), time.time_ns() // 1_000_000)
    if accepted is None:
        quarantined = [quarantine.service for quarantine in await log.quarantines()]
        now = ", ".join(quarantined) if quarantined else "none"
        print(f"error: {service} is not quarantined (quarantined now: {now}); nothing recorded", file=err)
        return EXIT_BAD_INPUT
    if as_json:
        print(json.dumps({"accepted": asdict(accepted)}), file=out)
    else:
        print(
            f"accepted {service}: {accepted.reason} (it was quarantined because {accepted.quarantined_because}); "
            "its next answer sets its ledger mark anew",
            file=out,
        )
    return EXIT_OK


def _report(outcome: Reconciliation, out: TextIO, err: TextIO, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.to_json()), file=out)
        return
    for reading in outcome.ledgers:
        marked = "none" if reading.marked is None else f"{reading.marked[1]} on {reading.marked[0]}"
        now = reading.error or f"{reading.position} on {reading.ledger_id}"
        print(f"ledger {reading.service}: position {now}; highest the log saw {marked}", file=out)
    for finding in outcome.findings:
        print(finding.line(), file=out)
    for settled in outcome.settled_by_hand:
        print(settled.line(), file=out)
    for unread in outcome.unread[:10]:
        print(f"unread: {unread}", file=err)
    if len(outcome.unread) > 10:
        print(f"unread: {len(outcome.unread) - 10} more", file=err)
    kinds = Counter(finding.kind.replace("_", " ") for finding in outcome.findings)
    verdict = "agree" if not outcome.findings else ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    complete = "" if not outcome.unread else f"; incomplete: {len(outcome.unread)} reads failed"
    by_hand = f"; {len(outcome.settled_by_hand)} settled by hand" if outcome.settled_by_hand else ""
    print(
        f"reconcile: {outcome.sagas} sagas ended since {iso_time(outcome.since_ms)}: {verdict}{by_hand}{complete}",
        file=out,
    )


def since(text: str, now_ms: int) -> int:
    """The start of the window in ms since the epoch: an ISO 8601 time, or a span back from ``now_ms``."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        return now_ms - int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)] * 1_000
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"--since takes an ISO 8601 time or a span such as 30m, 24h or 7d, got {text!r}") from None
    if moment.tzinfo is None:
        raise BadInput(f"--since {text!r} names no time zone: add Z or an offset such as +01:00")
    return int(moment.timestamp() * 1000)
