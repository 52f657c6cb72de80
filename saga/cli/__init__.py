"""``python -m saga``: transfer, batch, submit, worker, recover, show, list, events; and demo, simulate, serve,
reconcile, cancel, retry and resolve.

Each command adds itself to the parser (``add_transfer_command`` and its
likes, in the module of its group) from the flags saga/cli/options.py
declares once for all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TextIO, cast

from saga.cli import remote, terminal
from saga.cli.options import policies_from
from saga.cli.reading_commands import (
    add_events_command,
    add_list_command,
    add_show_command,
    cmd_events,
    cmd_list,
    cmd_show,
    listed,
)
from saga.cli.running import (
    EXIT_BAD_INPUT,
    EXIT_INVARIANT_BROKEN,
    EXIT_OK,
    EXIT_SAGA_DID_NOT_COMPLETE,
    Outage,
    UsageError,
    default_db,
    open_log,
    settle_api_or_log,
)
from saga.cli.transfer_commands import (
    add_batch_command,
    add_submit_command,
    add_transfer_command,
    cmd_batch,
    cmd_submit,
    cmd_transfer,
    run_scenario,
)
from saga.cli.worker_commands import (
    add_recover_command,
    add_worker_command,
    cmd_recover,
    cmd_worker,
    take_stop_signals_early,
)
from saga.failures import LOG_FAILURES, what_failed
from saga.ledgers import LedgerUntrusted
from saga.logs import SagaLogError
from saga.telemetry.logging_setup import configure_saga_logging
from saga.telemetry.metrics import MetricsEndpointError, serving_metrics
from saga.telemetry.redact import redacting

#: What other modules and the tests take from ``saga.cli``.
__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INVARIANT_BROKEN",
    "EXIT_OK",
    "EXIT_SAGA_DID_NOT_COMPLETE",
    "Outage",
    "UsageError",
    "build_parser",
    "default_db",
    "listed",
    "main",
    "open_log",
    "policies_from",
    "remote",
    "settle_api_or_log",
    "terminal",
]


class OneLineParser(argparse.ArgumentParser):
    """Bad options are bad input like any other: one line on stderr, exit 2, nothing done."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = OneLineParser(
        prog="python -m saga", description="Money transfers as durable sagas."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every retry and recovery")
    commands = parser.add_subparsers(dest="command", required=True)
    # Here, not at the top: each of these imports saga.cli in turn, and serve's brings in the web server.
    from saga.cli.operator_commands import add_operator_commands
    from saga.cli.reconcile_command import add_reconcile_command
    from saga.cli.simulate import add_simulate_command
    from saga.drive.demo import add_demo_command
    from saga.service.command import add_serve_command

    for add_command in (
        add_transfer_command,
        add_batch_command,
        add_submit_command,
        add_worker_command,
        add_recover_command,
        add_show_command,
        add_list_command,
        add_events_command,
        add_demo_command,
        add_simulate_command,
        add_serve_command,
        add_reconcile_command,
        add_operator_commands,
    ):
        add_command(commands)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO, TextIO], Coroutine[Any, Any, int]]] = {
    "transfer": cmd_transfer,
    "batch": cmd_batch,
    "submit": cmd_submit,
    "worker": cmd_worker,
    "recover": cmd_recover,
    "show": cmd_show,
    "list": cmd_list,
    "events": cmd_events,
}


def _main(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "api") and hasattr(args, "db"):
        try:
            settle_api_or_log(args)
        except UsageError as error:
            print(f"error: {error}", file=err)
            return EXIT_BAD_INPUT
    if args.command == "worker":
        take_stop_signals_early()
    configure_saga_logging(args, err)
    if args.command == "demo":
        from saga.drive.demo import run_demo

        try:
            return run_demo(args, out, err)
        except SagaLogError as error:
            print(f"error: {error}", file=err)
            return EXIT_BAD_INPUT
    if args.command == "serve":
        from saga.service.command import run_serve

        return run_serve(args, out, err)
    if args.command == "reconcile":
        from saga.cli.reconcile_command import run_reconcile

        return run_reconcile(args, out, err)
    if args.command in ("cancel", "retry", "resolve"):
        from saga.cli.operator_commands import run_operator_command

        return run_operator_command(args, out, err)
    if args.command == "simulate":
        from saga.cli.simulate import run_simulate_command

        return run_simulate_command(args, out, err)
    try:
        with serving_metrics(args, out, err):
            if args.command == "batch" and args.scenario is not None:
                return run_scenario(args, out, err)
            return asyncio.run(COMMANDS[args.command](args, out, err))
    except (UsageError, MetricsEndpointError, remote.ApiError) as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except Outage as error:
        print(f"error: {error}", file=err)
        return EXIT_SAGA_DID_NOT_COMPLETE
    except LedgerUntrusted as untrusted:
        # A ledger that went back in time, met where the command has no summary to give.
        print(f"error: {untrusted}", file=err)
        return EXIT_INVARIANT_BROKEN
    except LOG_FAILURES as error:
        # A log that failed under a command with no summary to give (show, list, submit, events).
        print(f"error: {what_failed(error)}", file=err)
        return EXIT_SAGA_DID_NOT_COMPLETE
    except KeyboardInterrupt:
        print("interrupted: unfinished sagas stay in the log; run `python -m saga recover`", file=err)
        return 130


class UnreadStream:
    """A stream whose reader may stop reading early (``| head -1``): what is written after that goes nowhere.

    Nothing is raised to the command, which carries on to its end and its
    own exit status; only its output is cut short.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.reader_left = False

    def write(self, text: str) -> int:
        if not self.reader_left:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self.drop_the_rest()
        return len(text)

    def flush(self) -> None:
        if not self.reader_left:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.drop_the_rest()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def drop_the_rest(self) -> None:
        """Write nothing more: the reader has left."""
        self.reader_left = True
        # What the stream still holds would fail again when Python flushes it at exit, with a message.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run one command; its exit status.

    A reader that stops reading early (``| head -1``) ends no command and
    changes nothing but what is printed: no traceback, no message, and the
    command's own exit status (0 for a listing; 1 for a transfer that did
    not complete), never the 141 of a process killed by SIGPIPE. So a
    script under ``set -o pipefail`` does not fail on ``saga list | head -1``.
    """
    # Every line written, from an error to a log line or a report, has the credentials of its URLs masked.
    out = redacting(cast(TextIO, UnreadStream(out)))
    err = redacting(cast(TextIO, UnreadStream(err)))
    try:
        code = _main(argv, out, err)
    except BrokenPipeError:
        # Written past ``out`` and ``err``, straight to a standard stream whose reader left.
        UnreadStream(sys.stdout).drop_the_rest()
        return EXIT_OK
    out.flush()
    return code
