"""The flags several commands of ``python -m saga`` take, each declared once, and their types.

A flag two commands share is added by one function here, so it has one help
text, one default and one way of reading its value wherever it appears
(tests/in_process/test_cli_options.py walks the parser to hold every command to
that). Each command, here in saga/cli/ or elsewhere (demo, serve), adds
itself to the parser from these.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from saga.deadlines import MAX_AHEAD
from saga.orchestrator import DEFAULT_LEASE_SECONDS
from saga.retry import RetryPolicies, RetryPolicy
from server.shared.contract_rules import MAX_AMOUNT, TRANSACTION_ID
from server.shared.logformat import LOG_FORMATS

# Only ASCII digits: int() would also take ' 5', '1_000' and other scripts' digits such as '٥'.
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

MAX_TRANSFERS = 10_000_000
MAX_CONCURRENCY = 100_000
MAX_ATTEMPTS = 1_000_000
MAX_SEED = 2**63 - 1
MAX_PORT = 65_535
MAX_LINGER_SECONDS = 86_400
MAX_REQUEST_TIMEOUT = 86_400.0
DEFAULT_REQUEST_TIMEOUT = 5.0
DEFAULT_COMPENSATION_ATTEMPTS = 200
#: The saga log of a command given neither --db nor SAGA_DB.
DEFAULT_DB = "saga.db"
DB_HELP = "the saga log: a SQLite file (a path or sqlite:///…), or postgresql://… shared by many workers"


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


minor_units = whole_number(1, MAX_AMOUNT, "amount must be a whole number of minor units")


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0 and at most a day, written in ASCII digits."""
    if not _DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a number of seconds written with the digits 0-9, got {text!r}")
    value = float(text)
    if not 0 < value <= MAX_REQUEST_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_REQUEST_TIMEOUT:.0f}, got {text}"
        )
    return value


def shown(text: str, limit: int = 40) -> str:
    """``text`` for an error line: quoted, escaped to ASCII (argv may hold bytes that are not UTF-8), and cut short."""
    if len(text) > limit:
        return f"{ascii(text[:limit])[:-1]}...' ({len(text)} characters)"
    return ascii(text)


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        example = "2026-12-03T08:20:00Z"
        raise argparse.ArgumentTypeError(f"expected an RFC 3339 time such as {example}, got {text!r}") from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: end it with Z or +HH:MM")
    return moment


def _transaction_id(text: str) -> str:
    if not TRANSACTION_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a transaction id is 1-128 of A-Z a-z 0-9 . _ : -, got {shown(text)}")
    return text


def _worker_name(text: str) -> str:
    if not 1 <= len(text) <= 200 or not all(" " < character <= "~" for character in text):
        raise argparse.ArgumentTypeError(
            f"a worker id is 1-200 printable ASCII characters, no space, got {shown(text)}"
        )
    return text


def _lease_seconds(text: str) -> float:
    value = seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"expected at least 0.1 seconds, got {text}")
    return value


# -- the saga log, and the transfers service in its place ------------------------------------------


def add_db_option(command: argparse.ArgumentParser, *, otherwise: str = DEFAULT_DB) -> None:
    """--db, whose default is SAGA_DB on every command (see :func:`given_db`); ``otherwise``: the log without both.

    ``otherwise`` is the one part of the help that may differ between
    commands, as what they fall back on does: ``demo`` keeps its log in a
    temporary file.
    """
    command.add_argument("--db", default=None, help=f"{DB_HELP} (SAGA_DB; {otherwise})")


def given_db(args: argparse.Namespace) -> str | None:
    """The saga log the command was given: --db, else SAGA_DB; None when neither names one."""
    flag: str | None = args.db
    return flag or os.environ.get("SAGA_DB") or None


def add_api_options(command: argparse.ArgumentParser) -> None:
    """--api and --api-token: the transfers service, for the commands that go through it in place of a log."""
    command.add_argument(
        "--api",
        default=None,
        metavar="URL",
        help="go through the transfers service at URL (python -m saga serve) instead of a log (SAGA_API)",
    )
    command.add_argument(
        "--api-token",
        default=os.environ.get("SAGA_API_TOKEN"),
        help="bearer token for the transfers service; cancel, retry and resolve need an operator's (SAGA_API_TOKEN)",
    )


def add_transaction_id_argument(command: argparse.ArgumentParser) -> None:
    """The transfer a command reads or acts on, by its transaction id."""
    command.add_argument("transaction_id", type=_transaction_id, help="the transfer's transaction_id")


def add_json_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--json", action="store_true", help="print the outcome as one line of JSON, the last line on stdout"
    )


# -- the accounts services -------------------------------------------------------------------------


def add_token_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--token", default=os.environ.get("SAGA_TOKEN"), help="bearer token for the accounts services (SAGA_TOKEN)"
    )


def add_url_options(command: argparse.ArgumentParser) -> None:
    """--url, or --source-url and --target-url: the accounts services of a transfer, by their URLs."""
    several = "; several URLs of one service (its replicas), comma-separated"
    command.add_argument("--url", help="one accounts service holding both accounts" + several)
    command.add_argument("--source-url", help="the accounts service of the source account" + several)
    command.add_argument("--target-url", help="the accounts service of the target account" + several)


def add_directory_options(command: argparse.ArgumentParser) -> None:
    """--service NAME=URLS (repeated) and --services FILE: the accounts services by name (saga/directory.py)."""
    command.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=URL[,URL...]",
        help="an accounts service by name, with its replicas' URLs: the name a transfer gives its accounts' "
        "service, and where every request to that service goes, in place of any URLs the log holds for it; "
        "repeat for each service",
    )
    command.add_argument(
        "--services",
        type=services_file,
        default=None,
        help="a JSON file of service name to a URL or a list of URLs; a name given twice is refused",
    )


# -- one transfer ----------------------------------------------------------------------------------


def add_transfer_options(command: argparse.ArgumentParser) -> None:
    """--from, --to and --amount, and the deadline options: the transfer a command moves or submits."""
    under_api = "SERVICE:USER_ID when submit goes through the transfers service (--api)"
    command.add_argument("--from", dest="source", required=True, help=f"source user_id; {under_api}: bank-a:alice")
    command.add_argument("--to", dest="target", required=True, help=f"target user_id; {under_api}: bank-b:bob")
    command.add_argument("--amount", type=minor_units, required=True, help="minor units (cents)")
    deadline = command.add_mutually_exclusive_group()
    deadline.add_argument(
        "--deadline",
        type=_aware_time,
        metavar="TIME",
        help="after this RFC 3339 time the saga sends no new forward request: a debit never sent ends FAILED, "
        "one sent is given back (deadline_exceeded)",
    )
    deadline.add_argument(
        "--deadline-seconds",
        type=whole_number(1, MAX_AHEAD // timedelta(seconds=1)),
        metavar="SECONDS",
        help="the deadline, as whole seconds from now",
    )


# -- many transfers --------------------------------------------------------------------------------


def add_plan_options(command: argparse.ArgumentParser, *, transfers: int | None, shown_transfers: int) -> None:
    """--transfers and --seed: the random transfers of a batch or a demo; ``transfers`` is the default count."""
    command.add_argument(
        "--transfers",
        type=whole_number(1, MAX_TRANSFERS),
        default=transfers,
        help=f"how many transfers ({shown_transfers})",
    )
    command.add_argument(
        "--seed", type=whole_number(-MAX_SEED, MAX_SEED), default=None, help="seed of the transfer plan"
    )


def add_concurrency_option(
    command: argparse.ArgumentParser,
    *,
    default: int | None,
    shown_default: int | None = None,
    parse: Callable[[str], int] | None = None,
) -> None:
    """--concurrency; its default is each command's own, shown as ``shown_default`` when ``default`` is None.

    ``simulate`` reads it as it reads its other counts (``parse``), which
    ``python -m saga.simulation`` shares.
    """
    command.add_argument(
        "--concurrency",
        type=parse or whole_number(1, MAX_CONCURRENCY),
        default=default,
        help=f"sagas driven at once ({default if shown_default is None else shown_default})",
    )


# -- retries ---------------------------------------------------------------------------------------


def policies_from(args: argparse.Namespace) -> RetryPolicies:
    """The retry policies the retry options give."""
    defaults = RetryPolicies()
    return RetryPolicies(
        debit=RetryPolicy(maximum_attempts=5, request_timeout=args.request_timeout),
        credit=RetryPolicy(maximum_attempts=args.max_credit_attempts or 3, request_timeout=args.request_timeout),
        compensation=RetryPolicy(
            maximum_attempts=args.max_compensation_attempts,
            maximum_interval=defaults.compensation.maximum_interval,
            request_timeout=args.request_timeout,
        ),
    )


def default_policies() -> RetryPolicies:
    """The retry policies of a command given no retry option."""
    defaults = argparse.Namespace(
        max_credit_attempts=None,
        request_timeout=DEFAULT_REQUEST_TIMEOUT,
        max_compensation_attempts=DEFAULT_COMPENSATION_ATTEMPTS,
    )
    return policies_from(defaults)


def compensation_help() -> str:
    """--max-compensation-attempts's help, with the longest a compensation can take under the default policies."""
    compensation = default_policies().compensation
    attempts, longest = compensation.maximum_attempts, compensation.longest_step()
    assert attempts is not None
    assert longest is not None
    longest_backoff = compensation.longest_delay_before(attempts)
    return (
        "attempts per compensation in this run; a saga whose compensation cannot finish stays in COMPENSATING for "
        f"the next recover ({attempts}: with one URL per service, a compensation gives up after "
        f"at most {longest / 60:.1f} minutes of requests and backoffs, every request out for the whole "
        f"--request-timeout of {DEFAULT_REQUEST_TIMEOUT:g} s and every backoff at its longest, {longest_backoff:g} s; "
        "a transfer has up to two compensations; with --deadline or --deadline-seconds the wait ends there: past "
        "it no request is retried in this run, and a compensation left without an answer waits for the next recover)"
    )


def add_request_timeout_option(
    command: argparse.ArgumentParser, *, parse: Callable[[str], float | int] = seconds
) -> None:
    """--request-timeout; ``reconcile`` reads it in whole seconds up to ten minutes (``parse``)."""
    command.add_argument(
        "--request-timeout",
        type=parse,
        default=DEFAULT_REQUEST_TIMEOUT,
        help=f"seconds before a request counts as lost; every timeout of the HTTP client follows it "
        f"({DEFAULT_REQUEST_TIMEOUT:g})",
    )


def add_retry_options(command: argparse.ArgumentParser) -> None:
    """--max-credit-attempts, --request-timeout and --max-compensation-attempts: read by :func:`policies_from`."""
    command.add_argument(
        "--max-credit-attempts",
        type=whole_number(1, MAX_ATTEMPTS),
        default=None,
        help="credit attempts before compensating (3)",
    )
    add_request_timeout_option(command)
    command.add_argument(
        "--max-compensation-attempts",
        type=whole_number(1, MAX_ATTEMPTS),
        default=DEFAULT_COMPENSATION_ATTEMPTS,
        help=compensation_help(),
    )


# -- the processes that drive a shared log ---------------------------------------------------------


def add_lease_options(command: argparse.ArgumentParser) -> None:
    """--worker-id, --lease-seconds and --poll-seconds: for a process that claims sagas (worker, serve)."""
    command.add_argument(
        "--worker-id", type=_worker_name, help="this process's name in the log's leases (host:pid:random)"
    )
    command.add_argument(
        "--lease-seconds",
        type=_lease_seconds,
        default=DEFAULT_LEASE_SECONDS,
        help=f"how long a claim holds without renewal ({DEFAULT_LEASE_SECONDS:g})",
    )
    command.add_argument(
        "--poll-seconds",
        type=seconds,
        default=1.0,
        help="look for sagas whose lease ran out this often; a submission wakes the workers at once (1)",
    )


# -- what a command prints, and its metrics --------------------------------------------------------


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
