"""The ``simulate`` command: seeded fault simulations of the saga, with a table and any violations.

``python -m saga.simulation --seed 1 --transfers 200 --seeds 20`` runs seeds
1 to 20. The output ends with one verdict line, ``simulation PASSED: ...``
or ``simulation FAILED: ...`` naming the seeds that broke an invariant; the
exit status says the same: 0 when every seed ran and none broke an
invariant, 1 otherwise, 2 on bad options.

This module only defines options until the command runs, so that adding
the command to another parser does not import the accounts service.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, TextIO

from saga.cli.options import add_concurrency_option, add_json_option
from saga.simulation.clock import VirtualTimeEventLoop
from server.shared.logformat import record_fields

if TYPE_CHECKING:
    from saga.simulation.simulator import SimulationConfig, SimulationResult

EXIT_OK = 0
EXIT_VIOLATION = 1


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {value}")
        return value

    return parse


def add_simulate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=_at_least(0), default=1, help="the first seed (1)")
    parser.add_argument("--transfers", type=_at_least(0), default=200, help="transfers per seed (200)")
    parser.add_argument("--services", type=_at_least(1), default=2, help="accounts services, bank-0.sim ... (2)")
    add_concurrency_option(parser, default=16, parse=_at_least(1))
    parser.add_argument(
        "--seeds", type=_at_least(1), default=1, help="how many consecutive seeds to run, from --seed on (1)"
    )
    parser.add_argument(
        "--exclusive-log",
        action="store_true",
        help="one orchestrator on a log only it drives, as with SQLite, instead of three sharing one under leases",
    )
    parser.add_argument("--jobs", type=_at_least(1), default=1, help="seeds run side by side in worker processes (1)")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first seed that breaks an invariant")
    parser.add_argument("--show-trace", action="store_true", help="print every run's whole trace")
    add_json_option(parser)


def add_simulate_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``simulate`` to a command's subparsers; run it with :func:`run_simulate_command`."""
    command = subparsers.add_parser(
        "simulate",
        help="run the saga against in-process services under seeded faults, and check the money",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_simulate_options(command)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m saga.simulation",
        description="Deterministic fault simulation of the transfer saga against the real accounts service.",
    )
    add_simulate_options(parser)
    return parser


class VirtualTimeFormatter(logging.Formatter):
    """Log lines of a simulated run: stamped with its virtual time and seed, never the wall clock or a pid.

    Two runs of one seed then print byte-identical lines, so their logs can
    be compared as their traces are.
    """

    def __init__(self, log_format: str, seed: int) -> None:
        super().__init__()
        self.log_format = log_format
        self.seed = seed

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        at = getattr(record, "virtual_seconds", None)
        message = record.getMessage()
        if self.log_format == "json":
            line: dict[str, Any] = {
                "virtual_time": None if at is None else round(at, 6),
                "seed": self.seed,
                "level": record.levelname.lower(),
                "logger": record.name,
                "transaction_id": fields.pop("transaction_id", None),
                **fields,
            }
            if message:
                line["message"] = message
            return json.dumps(line, separators=(",", ":"), default=str)
        stamp = "-" if at is None else f"{at:.6f}"
        parts = [f"seed {self.seed} t={stamp}s", record.levelname, record.name, message]
        parts += [f"{name}={value}" for name, value in fields.items() if value is not None]
        return " ".join(part for part in parts if part)


class _VirtualTime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        record.virtual_seconds = loop.time() if isinstance(loop, VirtualTimeEventLoop) else None
        return True


def _run_with_logs(config: SimulationConfig, level: int, log_format: str) -> tuple[SimulationResult, str]:
    """One seed's result and its log lines, kept apart from any other seed's (in this process or a worker)."""
    from saga.simulation.simulator import run_simulation

    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(VirtualTimeFormatter(log_format, config.seed))
    handler.addFilter(_VirtualTime())
    root = logging.getLogger()
    # Only this handler prints: another's (a command's wall-clock lines) would make two runs differ.
    kept_handlers, kept_level = list(root.handlers), root.level
    for existing in kept_handlers:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    try:
        return run_simulation(config), lines.getvalue()
    finally:
        root.removeHandler(handler)
        for existing in kept_handlers:
            root.addHandler(existing)
        root.setLevel(kept_level)


def run_simulate_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the seeds ``args`` asks for; print the tables, their legend, every violation and the verdict.

    0 when every seed ran and none broke an invariant, else 1.
    """
    from saga.simulation import report
    from saga.simulation.simulator import SimulationConfig

    configs = [
        SimulationConfig(
            seed,
            args.transfers,
            args.services,
            args.concurrency,
            orchestrators=1 if args.exclusive_log else 3,
            exclusive_log=args.exclusive_log,
        )
        for seed in range(args.seed, args.seed + args.seeds)
    ]
    from saga.telemetry.logging_setup import log_format_for

    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    results = []
    for result, log_lines in _results(configs, args.jobs, level, log_format_for(args, err)):
        # Each seed's lines together, in seed order, however many jobs ran them.
        err.write(log_lines)
        results.append(result)
        if args.show_trace:
            print(f"trace of seed {result.config.seed}:", file=out)
            for event in result.trace:
                print(f"  {event}", file=out)
        if args.fail_fast and result.violations:
            break
    print(report.table(results), file=err if args.json else out)
    # The rest goes to stderr, after the table: flushed first, so that the
    # two streams read in order when both go to one pipe.
    out.flush()
    # Beside the table, never in it: its columns are the fault classes.
    print(report.deadlines_and_operators(results), file=err)
    print(report.legend(), file=err)
    broken = [result for result in results if result.violations]
    for result in broken:
        print("", file=err)
        print(report.violation_report(result), file=err)
    print(f"\n{report.verdict(results, len(configs))}", file=err)
    if args.json:
        print(
            json.dumps({"ok": not broken, "runs": [report.as_json(result) for result in results]}),
            file=out,
        )
    return EXIT_VIOLATION if broken else EXIT_OK


def _results(
    configs: list[SimulationConfig], jobs: int, level: int, log_format: str
) -> Iterator[tuple[SimulationResult, str]]:
    """Each config's result and log lines, in order; with ``jobs`` > 1, computed in worker processes ahead of time."""
    if jobs == 1 or len(configs) == 1:
        for config in configs:
            yield _run_with_logs(config, level, log_format)
        return
    # Spawned, not forked: a fork copies whatever locks other threads of this
    # process (a test runner's, say) happen to hold at that moment.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures: list[Future[tuple[SimulationResult, str]]] = [
            pool.submit(_run_with_logs, config, level, log_format) for config in configs
        ]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    return run_simulate_command(build_parser().parse_args(argv), out, err)
