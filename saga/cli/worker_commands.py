"""``worker`` and ``recover``: the commands that drive the sagas a log holds."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TextIO, TypeVar

from saga import recovery
from saga.cli import terminal
from saga.cli.options import (
    add_concurrency_option,
    add_db_option,
    add_directory_options,
    add_json_option,
    add_lease_options,
    add_operating_options,
    add_retry_options,
    add_token_option,
    policies_from,
)
from saga.cli.running import (
    EXIT_INVARIANT_BROKEN,
    EXIT_OK,
    EXIT_SAGA_DID_NOT_COMPLETE,
    UsageError,
    close_log,
    default_db,
    open_log,
    result_json,
)
from saga.directory import ServiceDirectory, directory_from
from saga.failures import LOG_FAILURES, what_failed
from saga.ledgers import Quarantine
from saga.logs import SagaLog
from saga.orchestrator import Orchestrator, default_owner
from saga.telemetry.metrics import observed
from saga.worker import Worker, WorkerStats


def add_worker_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    work = commands.add_parser("worker", help="drive the log's sagas, with any other workers, until SIGTERM or SIGINT")
    add_db_option(work)
    add_token_option(work)
    add_concurrency_option(work, default=16)
    add_lease_options(work)
    add_directory_options(work)
    add_retry_options(work)
    add_operating_options(work)


def add_recover_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recover = commands.add_parser("recover", help="resume every unfinished saga in the log that no worker holds")
    add_db_option(recover)
    add_token_option(recover)
    add_json_option(recover)
    add_directory_options(recover)
    add_retry_options(recover)
    add_operating_options(recover)


def directory_of(args: argparse.Namespace) -> ServiceDirectory:
    try:
        return directory_from(args.service, args.services)
    except ValueError as error:
        raise UsageError(str(error)) from None


async def cmd_recover(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Resume what no live process holds; exit 3 while any saga waits in NEEDS_ATTENTION, 1 while any stays open."""
    directory = directory_of(args)
    log = await open_log(default_db(args), create=False)
    waits = None if args.quiet else terminal.WaitLines(err)
    try:
        async with Orchestrator(
            observed(log, args), policies=policies_from(args), token=args.token, directory=directory, waits=waits
        ) as orchestrator:
            outcome = await recovery.recover(orchestrator)
            quarantined = await quarantines_of(log, err)
    finally:
        if waits is not None:
            waits.close()
        await close_log(log)
    recovered = outcome.results
    if args.json:
        shown_outcome = {
            "recovered": [result_json(result) for result in recovered],
            "held": outcome.held_json(),
            "needs_attention": [
                {"transaction_id": record.transaction_id, "error": record.last_error}
                for record in outcome.needs_attention
            ],
            "failed": [{"transaction_id": tid, "error": why} for tid, why in outcome.failed.items()],
            "failure": outcome.failure,
            "quarantined": [{"service": q.service, "reason": q.reason} for q in quarantined],
        }
        print(json.dumps(shown_outcome), file=out)
    elif not args.quiet:
        for result in recovered:
            print(f"{result.state} {result.transaction_id}", file=out)
        for record in outcome.held:
            print(outcome.held_line(record), file=out)
        print(f"recovered {len(recovered)} sagas", file=out)
    for record in outcome.needs_attention:
        print(f"error: saga {record.transaction_id} needs attention: {record.last_error}", file=err)
    if outcome.held:
        print(outcome.held_summary(), file=err)
    if outcome.failure is not None:
        print(f"error: {outcome.failure}", file=err)
    for quarantine in quarantined:
        print(f"error: {quarantine}; run `python -m saga reconcile`", file=err)
    if outcome.needs_attention or quarantined:
        return EXIT_INVARIANT_BROKEN
    if outcome.failure is not None or outcome.held or outcome.unfinished:
        return EXIT_SAGA_DID_NOT_COMPLETE
    return EXIT_OK


async def quarantines_of(log: SagaLog, err: TextIO) -> list[Quarantine]:
    """The services quarantined now; none if the log cannot say, which the command reports otherwise."""
    try:
        return await log.quarantines()
    except LOG_FAILURES as error:
        print(f"error: cannot read the quarantined services: {what_failed(error)}", file=err)
        return []


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Set by a stop signal that arrived before the worker's event loop could take it over.
_stopped_early: list[int] = []


def _stop_early(signal_number: int, frame: FrameType | None) -> None:
    _stopped_early.append(signal_number)


def take_stop_signals_early() -> None:
    """From the moment the worker's options are read, a stop signal is noted rather than fatal.

    Until its event loop installs its own handlers, SIGTERM would end the
    process as signal 15 (exit 143), with no summary and leases held.
    """
    _stopped_early.clear()
    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, _stop_early)


T = TypeVar("T")


async def unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """(True, what ``work`` returned), or (False, None) when ``stop`` was set first: ``work`` is then cancelled."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False, None
    return True, task.result()


async def cmd_worker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    directory = directory_of(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before anything slow (the log's connection) and before any claim, so a
    # stop at any moment ends the worker with its summary and no lease held.
    for signal_number in STOP_SIGNALS:
        loop.add_signal_handler(signal_number, stop.set)
    if _stopped_early:
        stop.set()
    owner = args.worker_id or default_owner()
    stats = WorkerStats()
    failure = None
    try:
        opened, log = await unless_stopped(open_log(default_db(args)), stop)
        if opened and log is not None:
            try:
                async with Orchestrator(
                    observed(log, args, worker_id=owner),
                    policies=policies_from(args),
                    token=args.token,
                    concurrency=args.concurrency,
                    owner=owner,
                    lease_seconds=args.lease_seconds,
                    directory=directory,
                ) as orchestrator:
                    worker = Worker(orchestrator, concurrency=args.concurrency, poll_seconds=args.poll_seconds)
                    stats = worker.stats
                    print(f"worker {owner} driving sagas, {args.concurrency} at a time", file=err, flush=True)
                    await worker.run(stop)
            except LOG_FAILURES as error:
                failure = what_failed(error)
            finally:
                await close_log(log)
    finally:
        for signal_number in STOP_SIGNALS:
            loop.remove_signal_handler(signal_number)
    print(
        f"worker {owner} stopped: {stats.claimed} claimed, {stats.finished} driven to an end or a "
        f"pause, {stats.handed_back} handed back",
        file=err,
    )
    if failure is not None:
        print(f"error: {failure}", file=err)
        return EXIT_SAGA_DID_NOT_COMPLETE
    return EXIT_OK
