"""Option types and option groups shared by the commands of ``python -m saga``.

Kept apart from saga/cli/__init__.py so that the commands defined elsewhere (demo,
scenario, simulation, worker) take them without importing the CLI itself.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path

from server.shared.logformat import LOG_FORMATS

# Only ASCII digits: int() would also take ' 5', '1_000' and other scripts' digits such as '٥'.
_INTEGER = re.compile(r"-?[0-9]+")

MAX_TRANSFERS = 10_000_000
MAX_CONCURRENCY = 100_000
MAX_ATTEMPTS = 1_000_000
MAX_SEED = 2**63 - 1
MAX_PORT = 65_535
MAX_LINGER_SECONDS = 86_400


def whole_number(minimum: int, maximum: int, what: str = "expected a whole number") -> Callable[[str], int]:
    """An argparse type: an integer written in ASCII digits, between ``minimum`` and ``maximum``."""

    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{what} written with the digits 0-9, got {text!r}")
        # Compared by length first: int() of thousands of digits is slow, and refused past 4300.
        digits = text.lstrip("-").lstrip("0")
        if len(digits) > len(str(max(abs(minimum), abs(maximum)))) or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(f"expected a number between {minimum} and {maximum}, got {text}")
        return int(text)

    return parse


def services_file(text: str) -> Path:
    """An argparse type: a JSON file read as the APIs read JSON, a repeated name or NaN refused.

    json.loads keeps the last of two entries with one name, so a file that
    names a service twice would quietly lose the first; the transfers API
    refuses such a body, and so does this. The directory reads the file's
    entries afterwards (saga/directory.py).
    """
    # Here, not at the top: it brings in the web framework, which most commands never need.
    from server.edge import parse_json_exactly

    path = Path(text)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read the services file {text}: {error.strerror or error}") from None
    try:
        parse_json_exactly(raw)
    except ValueError as error:
        reason = getattr(error, "msg", str(error))
        raise argparse.ArgumentTypeError(
            f"the services file {text} is not JSON as the API reads it: {reason}"
        ) from None
    return path


def add_output_options(command: argparse.ArgumentParser) -> None:
    """--quiet and --log-format: for every command that runs sagas (batch, recover, demo, worker)."""
    command.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no summary table; errors and the --json line are still printed",
    )
    command.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="log lines as JSON objects (with transaction_id) or as text; default: text on a terminal, else json",
    )


def add_metrics_options(command: argparse.ArgumentParser) -> None:
    """--metrics-port, --metrics-host and --metrics-linger: for batch, recover and worker."""
    command.add_argument(
        "--metrics-port",
        type=whole_number(0, MAX_PORT),
        default=None,
        help="serve Prometheus metrics on this port (0: any free port; the URL is printed on stderr)",
    )
    command.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (127.0.0.1)")
    command.add_argument(
        "--metrics-linger",
        type=whole_number(0, MAX_LINGER_SECONDS),
        default=0,
        help="seconds the metrics endpoint stays up after the work is done, for a last scrape (0)",
    )


def add_operating_options(command: argparse.ArgumentParser) -> None:
    """Every option of an operated command: output, log format and metrics."""
    add_output_options(command)
    add_metrics_options(command)


def add_directory_options(command: argparse.ArgumentParser, purpose: str) -> None:
    """--service NAME=URLS (repeated) and --services FILE: the accounts services by name (saga/directory.py)."""
    command.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=URL[,URL...]",
        help=f"an accounts service by name, with its replicas' URLs, {purpose}; repeat for each service",
    )
    command.add_argument(
        "--services",
        type=services_file,
        default=None,
        help="a JSON file of service name to a URL or a list of URLs; a name given twice is refused",
    )


DB_HELP = "the saga log: a SQLite file (a path or sqlite:///…), or postgresql://… shared by many workers"
#: The saga log of a command given neither --db nor SAGA_DB.
DEFAULT_DB = "saga.db"


def add_db_option(command: argparse.ArgumentParser, *, what: str = DB_HELP, otherwise: str = DEFAULT_DB) -> None:
    """--db, whose default is SAGA_DB on every command (see :func:`given_db`); ``otherwise``: the default after it."""
    command.add_argument("--db", default=None, help=f"{what} (SAGA_DB; {otherwise})")


def given_db(args: argparse.Namespace) -> str | None:
    """The saga log the command was given: --db, else SAGA_DB; None when neither names one."""
    flag: str | None = args.db
    return flag or os.environ.get("SAGA_DB") or None
