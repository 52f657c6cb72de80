"""``python -m saga``: transfer, batch, submit, worker, recover, show, list."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO, TypeVar, cast

from generated_client.accounts.api.accounts import get_account
from generated_client.accounts.models import Account
from generated_client.transfers.models import AccountAt
from saga import recovery, services
from saga.cli import remote, terminal
from saga.cli.options import (
    DEFAULT_DB,
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    MAX_SEED,
    MAX_TRANSFERS,
    add_db_option,
    add_directory_options,
    add_operating_options,
    given_db,
    whole_number,
)
from saga.cli.trail import service_trails
from saga.clients import ServiceClients
from saga.deadlines import MAX_AHEAD, deadline_problem, epoch_ms, iso_time
from saga.directory import SERVICE_NAME, ServiceDirectory, directory_from
from saga.drive import batch
from saga.failures import LOG_FAILURES, what_failed
from saga.ledgers import LedgerUntrusted, Quarantine, ServiceQuarantined
from saga.logs import IdempotencyKeyConflict, SagaLog, SagaLogError, is_shared
from saga.logs import open_log as open_any_log
from saga.orchestrator import InvalidTransfer, Orchestrator, default_owner, validate, wall_clock_ms
from saga.records import AccountRef, Event, SagaRecord
from saga.replicas import describe, first_reachable, parse_urls
from saga.retry import RetryPolicies, RetryPolicy
from saga.run import TransferResult
from saga.states import SagaState
from saga.submission import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE, submit, wait
from saga.telemetry.logging_setup import configure_saga_logging
from saga.telemetry.metrics import MetricsEndpointError, observed, serving_metrics
from saga.telemetry.redact import redacting
from saga.worker import Worker, WorkerStats
from server.shared.contract_rules import MAX_AMOUNT, TRANSACTION_ID, USER_ID

EXIT_OK = 0
EXIT_SAGA_DID_NOT_COMPLETE = 1
EXIT_BAD_INPUT = 2
EXIT_INVARIANT_BROKEN = 3


class UsageError(Exception):
    """Bad input: reported on one line, with nothing done."""


class Outage(Exception):
    """The saga log or a service failed before the command could do anything: one line, exit 1."""


class OneLineParser(argparse.ArgumentParser):
    """Bad options are bad input like any other: one line on stderr, exit 2, nothing done."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

MAX_REQUEST_TIMEOUT = 86_400.0

_amount = whole_number(1, MAX_AMOUNT, "amount must be a whole number of minor units")


def _seconds(text: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected a number of seconds written with the digits 0-9, got {text!r}")
    value = float(text)
    if not 0 < value <= MAX_REQUEST_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_REQUEST_TIMEOUT:.0f}, got {text}"
        )
    return value


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        example = "2026-12-03T08:20:00Z"
        raise argparse.ArgumentTypeError(f"expected an RFC 3339 time such as {example}, got {text!r}") from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: end it with Z or +HH:MM")
    return moment


def add_deadline_options(command: argparse.ArgumentParser) -> None:
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


def deadline_from(args: argparse.Namespace, now_ms: int) -> int | None:
    """The deadline the options give, in ms since the epoch; UsageError when it cannot be one."""
    seconds: int | None = args.deadline_seconds
    if seconds is not None:
        return now_ms + seconds * 1000
    deadline: datetime | None = args.deadline
    if deadline is None:
        return None
    problem = deadline_problem(deadline, now_ms)
    if problem is not None:
        raise UsageError(f"--deadline {problem}")
    return epoch_ms(deadline)


#: The most transfers on one page of the transfers service's list, and how many when not told.
MAX_PAGE = 500
API_PAGE = 50
#: As many sagas as a log holds: the limit of a read meant to have none.
_EVERY = 2**62


def shown(text: str, limit: int = 40) -> str:
    """``text`` for an error line: quoted, escaped to ASCII (argv may hold bytes that are not UTF-8), and cut short."""
    if len(text) > limit:
        return f"{ascii(text[:limit])[:-1]}...' ({len(text)} characters)"
    return ascii(text)


def _transaction_id(text: str) -> str:
    if not TRANSACTION_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a transaction id is 1-128 of A-Z a-z 0-9 . _ : -, got {shown(text)}")
    return text


def _idempotency_key(text: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"an idempotency key is {IDEMPOTENCY_KEY_RULE}, got {shown(text)}")
    return text


def _account(text: str) -> tuple[str | None, str]:
    service, sep, user_id = text.rpartition(":")
    if not USER_ID.fullmatch(user_id) or (sep and not SERVICE_NAME.fullmatch(service)):
        raise argparse.ArgumentTypeError(
            f"an account is a user_id, or SERVICE:USER_ID, each 1-64 of A-Z a-z 0-9 _ . -, got {shown(text)}"
        )
    return (service if sep else None), user_id


def _worker_name(text: str) -> str:
    if not 1 <= len(text) <= 200 or not all(" " < character <= "~" for character in text):
        raise argparse.ArgumentTypeError(
            f"a worker id is 1-200 printable ASCII characters, no space, got {shown(text)}"
        )
    return text


def _lease_seconds(text: str) -> float:
    value = _seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"expected at least 0.1 seconds, got {text}")
    return value


DEFAULT_REQUEST_TIMEOUT = 5.0
DEFAULT_COMPENSATION_ATTEMPTS = 200


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


def retry_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--max-credit-attempts",
        type=whole_number(1, MAX_ATTEMPTS),
        default=None,
        help="credit attempts before compensating (3)",
    )
    command.add_argument(
        "--request-timeout",
        type=_seconds,
        default=DEFAULT_REQUEST_TIMEOUT,
        help=f"seconds before a request counts as lost; every timeout of the HTTP client follows it "
        f"({DEFAULT_REQUEST_TIMEOUT:g})",
    )
    command.add_argument(
        "--max-compensation-attempts",
        type=whole_number(1, MAX_ATTEMPTS),
        default=DEFAULT_COMPENSATION_ATTEMPTS,
        help=compensation_help(),
    )


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = OneLineParser(
        prog="python -m saga", description="Money transfers as durable sagas."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every retry and recovery")
    commands = parser.add_subparsers(dest="command", required=True)

    def services_options(command: argparse.ArgumentParser) -> None:
        several = "; several URLs of one service (its replicas), comma-separated"
        command.add_argument("--url", help="one accounts service holding both accounts" + several)
        command.add_argument("--source-url", help="the accounts service of the source account" + several)
        command.add_argument("--target-url", help="the accounts service of the target account" + several)

    def common(command: argparse.ArgumentParser) -> None:
        add_db_option(command)
        command.add_argument("--token", default=os.environ.get("SAGA_TOKEN"), help="bearer token (SAGA_TOKEN)")
        command.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    transfer = commands.add_parser("transfer", help="move money once")
    transfer.add_argument("--from", dest="source", required=True, help="source user_id")
    transfer.add_argument("--to", dest="target", required=True, help="target user_id")
    transfer.add_argument("--amount", type=_amount, required=True, help="minor units (cents)")
    add_deadline_options(transfer)
    services_options(transfer)
    common(transfer)
    retry_options(transfer)

    run_batch = commands.add_parser("batch", help="run many random transfers and check the money afterwards")
    run_batch.add_argument(
        "scenario", nargs="?", type=Path, help="a scenario file (instances/scenarios/*.json): starts its own services"
    )
    services_options(run_batch)
    run_batch.add_argument(
        "--transfers", type=whole_number(1, MAX_TRANSFERS), default=None, help="how many transfers (200)"
    )
    run_batch.add_argument(
        "--concurrency", type=whole_number(1, MAX_CONCURRENCY), default=None, help="sagas in flight at once (16)"
    )
    run_batch.add_argument(
        "--seed", type=whole_number(-MAX_SEED, MAX_SEED), default=None, help="seed of the transfer plan"
    )
    run_batch.add_argument("--max-amount", type=_amount, default=None, help="largest amount drawn (1000)")
    run_batch.add_argument("--no-audit", action="store_true", help="skip reading every saga's audit trail")
    run_batch.add_argument(
        "--progress", action="store_true", help="show progress even when not on a terminal (as plain lines)"
    )
    common(run_batch)
    retry_options(run_batch)
    add_operating_options(run_batch)

    def api_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--api",
            default=None,
            metavar="URL",
            help="go through the transfers service at URL (python -m saga serve) instead of a log (SAGA_API)",
        )
        command.add_argument(
            "--api-token",
            default=os.environ.get("SAGA_API_TOKEN"),
            help="bearer token for the transfers service (SAGA_API_TOKEN)",
        )

    submission = commands.add_parser("submit", help="record a transfer for the workers; print its transaction_id")
    submission.add_argument(
        "--from", dest="source", required=True, help="source user_id; under --api, SERVICE:USER_ID (bank-a:alice)"
    )
    submission.add_argument(
        "--to", dest="target", required=True, help="target user_id; under --api, SERVICE:USER_ID (bank-b:bob)"
    )
    submission.add_argument("--amount", type=_amount, required=True, help="minor units (cents)")
    add_deadline_options(submission)
    services_options(submission)
    add_db_option(submission)
    api_options(submission)
    submission.add_argument(
        "--idempotency-key",
        type=_idempotency_key,
        help="submit once per key: again returns the first transaction_id (under --api, a new key when not given)",
    )
    submission.add_argument("--wait", action="store_true", help="wait until the transfer ends; exit as transfer does")
    submission.add_argument("--json", action="store_true")

    work = commands.add_parser("worker", help="drive the log's sagas, with any other workers, until SIGTERM or SIGINT")
    add_db_option(work)
    work.add_argument("--token", default=os.environ.get("SAGA_TOKEN"))
    work.add_argument(
        "--concurrency", type=whole_number(1, MAX_CONCURRENCY), default=16, help="sagas driven at once (16)"
    )
    work.add_argument("--worker-id", type=_worker_name, help="this worker's name in the log's leases (host:pid:random)")
    work.add_argument(
        "--lease-seconds", type=_lease_seconds, default=10.0, help="how long a claim holds without renewal (10)"
    )
    work.add_argument(
        "--poll-seconds",
        type=_seconds,
        default=1.0,
        help="look for expired leases this often; a submission wakes workers at once (1)",
    )
    add_directory_options(work, "sent to in place of the URLs logged for sagas that name it")
    retry_options(work)
    add_operating_options(work)

    recover = commands.add_parser("recover", help="resume every unfinished saga in the log that no worker holds")
    add_db_option(recover)
    recover.add_argument("--token", default=os.environ.get("SAGA_TOKEN"))
    recover.add_argument("--json", action="store_true")
    add_directory_options(recover, "sent to in place of the URLs logged for sagas that name it")
    retry_options(recover)
    add_operating_options(recover)

    show = commands.add_parser("show", help="one saga's history")
    show.add_argument("transaction_id", type=_transaction_id)
    add_db_option(show)
    api_options(show)
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--trail", action="store_true", help="also the audit trail of the same id at each service of the saga"
    )
    show.add_argument("--token", default=os.environ.get("SAGA_TOKEN"), help="bearer token for --trail (SAGA_TOKEN)")

    listing = commands.add_parser("list", help="the sagas in the log, or a page of them from the transfers service")
    listing.add_argument("--state", choices=[state.value for state in SagaState])
    add_db_option(listing)
    api_options(listing)
    listing.add_argument(
        "--account",
        type=_account,
        metavar="USER_ID",
        help="only the sagas with this account at either end: a user_id, or SERVICE:USER_ID for a named service "
        "(a log only)",
    )
    listing.add_argument(
        "--limit",
        type=whole_number(1, MAX_PAGE),
        default=None,
        help=f"only the newest this many, listed oldest first as without it (a log: all; under --api: the "
        f"transfers on the page, newest first, {API_PAGE})",
    )
    listing.add_argument("--after", help="under --api: the cursor a previous page printed, for the next page")
    listing.add_argument("--json", action="store_true")

    timeline = commands.add_parser("events", help="one transfer's timeline: every state change and request")
    timeline.add_argument("transaction_id", type=_transaction_id)
    add_db_option(timeline)
    api_options(timeline)
    timeline.add_argument("--json", action="store_true")
    from saga.cli.operator_commands import add_operator_commands
    from saga.cli.reconcile_command import add_reconcile_command
    from saga.cli.simulate import add_simulate_command
    from saga.drive.demo import add_demo_command
    from saga.service.command import add_serve_command

    add_demo_command(commands)
    add_simulate_command(commands)
    add_serve_command(commands)
    add_reconcile_command(commands)
    add_operator_commands(commands)
    return parser


def policies_from(args: argparse.Namespace) -> RetryPolicies:
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


def service_urls(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The URLs of the source's service and of the target's, from --url or --source-url and --target-url."""
    given = {flag: getattr(args, flag) is not None for flag in ("url", "source_url", "target_url")}
    if given["url"] and (given["source_url"] or given["target_url"]):
        raise UsageError("give either --url, or --source-url and --target-url")
    if not given["url"] and not (given["source_url"] and given["target_url"]):
        raise UsageError("give --url, or both --source-url and --target-url")
    try:
        if given["url"]:
            urls = parse_urls(args.url)
            return urls, urls
        source, target = parse_urls(args.source_url), parse_urls(args.target_url)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if AccountRef(source, "").same_service(AccountRef(target, "")) and set(source) != set(target):
        # Compared as spelt alike (case, default port, loopback names), so that
        # localhost and 127.0.0.1 cannot pass for two services.
        raise UsageError(
            "--source-url and --target-url share a URL, so name one service: give it the same URLs both times"
        )
    return source, target


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


async def recover_first(orchestrator: Orchestrator, err: TextIO) -> list[TransferResult]:
    """Resume what an earlier run left in the log; Outage when the log fails meanwhile."""
    outcome = await recovery.recover(orchestrator)
    recovered = outcome.results
    if recovered:
        states = ", ".join(f"{result.transaction_id} {result.state}" for result in recovered[:5])
        print(f"recovered {len(recovered)} unfinished sagas from the log: {states}", file=err)
    if outcome.failure is not None:
        raise Outage(f"{outcome.failure}; nothing new was started")
    return recovered


async def require_account(clients: ServiceClients, account: AccountRef) -> None:
    where = ",".join(account.urls)
    try:
        answer = await first_reachable(
            account.urls,
            clients.replicas,
            lambda url: get_account.asyncio(
                account.user_id, client=clients.client_for(url), transaction_id="saga-cli-check"
            ),
        )
    except Exception as error:
        raise UsageError(f"cannot reach the accounts service at {where}: {describe(error)}") from None
    if not isinstance(answer, Account):
        code = getattr(answer, "code", None)
        if code is not None and code.value == "unknown_user":
            raise UsageError(f"unknown user {account.user_id!r} at {where}")
        detail = getattr(answer, "detail", "no readable answer")
        raise UsageError(f"the accounts service at {where} refused: {detail}")


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


def checked_accounts(args: argparse.Namespace, source: AccountRef, target: AccountRef) -> None:
    """UsageError, saying what is wrong with the account, for a transfer the saga could not run."""
    try:
        validate(source, target, args.amount)
    except InvalidTransfer as error:
        raise UsageError(str(error)) from None


async def cmd_transfer(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    source_urls, target_urls = service_urls(args)
    source, target = AccountRef(source_urls, args.source), AccountRef(target_urls, args.target)
    checked_accounts(args, source, target)
    # Chosen here, so that a transfer the log fails under can still be named.
    transaction_id = str(uuid.uuid4())
    failure = None
    log = await open_log(default_db(args))
    waits = terminal.WaitLines(err, own=transaction_id)
    try:
        async with Orchestrator(
            observed(log, args),
            policies=policies_from(args),
            token=args.token,
            concurrency=8,
            new_id=lambda: transaction_id,
            waits=waits,
        ) as orchestrator:
            await require_account(orchestrator.clients, source)
            await require_account(orchestrator.clients, target)
            if not is_shared(default_db(args)):
                # On a shared log the workers take over what others left.
                await recover_first(orchestrator, err)
            try:
                deadline = deadline_from(args, wall_clock_ms())
                result = await orchestrator.transfer(source, target, args.amount, deadline_ms=deadline)
            except InvalidTransfer as error:
                raise UsageError(str(error)) from None
            except ServiceQuarantined as refused:
                if args.json:
                    print(json.dumps({"refused": str(refused), "quarantined": refused.service}), file=out)
                print(f"error: refused, nothing sent: {refused}", file=err)
                return EXIT_INVARIANT_BROKEN
            except LOG_FAILURES as error:
                failure = what_failed(error)
    finally:
        waits.close()
        await close_log(log)
    if failure is not None:
        return transfer_cut_off(args, transaction_id, source, target, failure, out, err)
    if args.json:
        print(json.dumps(result_json(result)), file=out)
    else:
        because = f" ({result.error})" if result.error else ""
        print(
            f"{result.state} {result.transaction_id}: {result.amount} from {result.source} to {result.target}, "
            f"{len(result.attempts)} requests, {result.retries} retries{because}",
            file=out,
        )
    if result.state is SagaState.NEEDS_ATTENTION:
        return EXIT_INVARIANT_BROKEN
    return EXIT_OK if result.state is SagaState.COMPLETED else EXIT_SAGA_DID_NOT_COMPLETE


def transfer_cut_off(
    args: argparse.Namespace,
    transaction_id: str,
    source: AccountRef,
    target: AccountRef,
    failure: str,
    out: TextIO,
    err: TextIO,
) -> int:
    """The summary of a transfer the saga log failed under: its end is unknown, and recovery finds it."""
    if args.json:
        shown_result = {
            "transaction_id": transaction_id,
            "state": None,
            "source": str(source),
            "target": str(target),
            "amount": args.amount,
            "attempts": None,
            "retries": None,
            "error": failure,
            "seconds": None,
            "interrupted": True,
        }
        print(json.dumps(shown_result), file=out)
    else:
        print(
            f"UNKNOWN {transaction_id}: {args.amount} from {source} to {target}, cut off by a failure of the saga log",
            file=out,
        )
    print(f"error: {failure}; if saga {transaction_id} was logged, `python -m saga recover` ends it", file=err)
    return EXIT_SAGA_DID_NOT_COMPLETE


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


def run_scenario(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from saga.drive.scenario import ScenarioError, run_scenario_command

    if args.url or args.source_url or args.target_url:
        raise UsageError("a scenario starts its own services: give no --url with it")
    try:
        return run_scenario_command(args, out, err)
    except (ScenarioError, SagaLogError) as error:
        raise UsageError(str(error)) from None


async def cmd_batch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    source_urls, target_urls = service_urls(args)
    workload = batch.Workload(
        transfers=args.transfers or 200,
        max_amount=args.max_amount or 1_000,
        seed=args.seed,
    )
    concurrency = args.concurrency or 16
    shared = is_shared(default_db(args))
    log = await open_log(default_db(args))
    try:
        async with Orchestrator(
            observed(log, args), policies=policies_from(args), token=args.token, concurrency=concurrency
        ) as orchestrator:
            try:
                # On a shared log the workers, this batch's among them, take over what others left.
                recovered = [] if shared else await recover_first(orchestrator, err)
                before = await services.snapshot(orchestrator.clients, [source_urls, target_urls], orchestrator.watch)
            except services.ServiceUnavailable as error:
                raise UsageError(str(error)) from None
            except LedgerUntrusted as untrusted:
                # A ledger that went back in time, seen before any transfer: none is started.
                if args.json:
                    refused = {"transfers": 0, "quarantined": [untrusted.service], "failure": str(untrusted)}
                    print(json.dumps(refused), file=out)
                print(f"error: {untrusted}", file=err)
                return EXIT_INVARIANT_BROKEN
            try:
                planned = batch.plan(workload, source_urls, target_urls, before)
            except ValueError as error:
                raise UsageError(str(error)) from None
            show_progress = not args.quiet and (args.progress or (err.isatty() and not args.json))
            if not args.quiet:
                print(
                    f"running {len(planned)} transfers, {concurrency} at a time, "
                    f"from {','.join(source_urls)} to {','.join(target_urls)}",
                    file=err,
                )
            with terminal.progress(err, show=show_progress) as progress:
                report = await batch.run(
                    orchestrator,
                    planned,
                    [source_urls, target_urls],
                    progress=progress,
                    audit=not args.no_audit,
                    before=before,
                    # A live service may serve others too, another batch among them.
                    exclusive=False,
                    shared=shared,
                    concurrency=concurrency,
                )
            report.recovered = recovered
    finally:
        await close_log(log)
    if not args.quiet:
        print(report.render(), file=err if args.json else out)
    if args.json:
        print(json.dumps(report.to_json()), file=out)
    problem = batch_problem(report)
    if problem is not None:
        print(f"error: {problem}", file=err)
    for quarantine in report.quarantined:
        print(f"error: {quarantine}; {report.refused} transfers refused", file=err)
    if report.violations or report.quarantined:
        return EXIT_INVARIANT_BROKEN
    return EXIT_SAGA_DID_NOT_COMPLETE if problem is not None else EXIT_OK


def batch_problem(report: batch.BatchReport) -> str | None:
    """The one line that says what cut a batch short or left its audit incomplete; None when nothing did."""
    if report.failure is not None:
        left = []
        if report.interrupted:
            left.append(f"{report.interrupted} transfers cut off before their end")
        if report.not_started:
            left.append(f"{report.not_started} not started")
        if report.interrupted:
            left.append("the saga log keeps what it recorded of them for `python -m saga recover`")
        return "; ".join([report.failure, *left])
    if report.audit_problem is not None:
        return f"audit: incomplete ({report.audit_problem})"
    return None


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


def transfers_api(args: argparse.Namespace) -> remote.TransfersApi:
    from saga.replicas import url_problem

    problem = url_problem(args.api)
    if problem is not None:
        raise UsageError(f"--api {args.api!r} {problem}")
    return remote.TransfersApi(args.api.rstrip("/"), args.api_token)


def submit_through_api(args: argparse.Namespace, out: TextIO) -> int:
    if args.url or args.source_url or args.target_url:
        raise UsageError("--api names services by name: give --from SERVICE:USER_ID and --to SERVICE:USER_ID, no URL")
    source, target = api_account(args.source, "--from"), api_account(args.target, "--to")
    api = transfers_api(args)
    deadline = deadline_from(args, wall_clock_ms())
    submitted = api.submit(source, target, args.amount, args.idempotency_key, deadline_ms=deadline)
    shown = api.wait_for_end(submitted.transfer["transaction_id"]) if args.wait else submitted.transfer
    if args.json:
        print(json.dumps({**shown, "replayed": submitted.replayed}), file=out)
    elif args.wait:
        print(remote.transfer_line(shown), file=out)
    else:
        print(shown["transaction_id"], file=out)
    if not args.wait:
        return EXIT_OK
    return EXIT_OK if shown["state"] == SagaState.COMPLETED else EXIT_SAGA_DID_NOT_COMPLETE


def api_account(text: str, flag: str) -> AccountAt:
    """``SERVICE:USER_ID`` as the transfers service names an account; UsageError saying what is wrong."""
    service, sep, user_id = text.partition(":")
    if not sep or not SERVICE_NAME.fullmatch(service) or not USER_ID.fullmatch(user_id):
        raise UsageError(
            f"{flag} takes SERVICE:USER_ID under --api (for example bank-a:alice): a service name of 1-64 of "
            f"A-Z a-z 0-9 _ . - and a user_id of 1-64 of A-Z a-z 0-9 _ . -, got {shown(text)}"
        )
    return remote.parse_account(text, flag)


async def cmd_submit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.api:
        return submit_through_api(args, out)
    source_urls, target_urls = service_urls(args)
    source, target = AccountRef(source_urls, args.source), AccountRef(target_urls, args.target)
    log = await open_log(default_db(args))
    try:
        try:
            transaction_id = await submit(
                log,
                source,
                target,
                args.amount,
                idempotency_key=args.idempotency_key,
                deadline_ms=deadline_from(args, wall_clock_ms()),
            )
        except (InvalidTransfer, IdempotencyKeyConflict) as error:
            raise UsageError(str(error)) from None
        record = await wait(log, transaction_id) if args.wait else await log.get(transaction_id)
    finally:
        await log.close()
    assert record is not None
    if args.json:
        print(json.dumps(saga_json(record)), file=out)
    elif args.wait:
        because = f" ({record.last_error})" if record.last_error else ""
        print(
            f"{record.state} {record.transaction_id}: {record.amount} from {record.source} to {record.target}, "
            f"{record.attempts} requests{because}",
            file=out,
        )
    else:
        print(record.transaction_id, file=out)
    if not args.wait:
        return EXIT_OK
    return EXIT_OK if record.state is SagaState.COMPLETED else EXIT_SAGA_DID_NOT_COMPLETE


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


def saga_json(record: SagaRecord) -> dict[str, Any]:
    return {
        "transaction_id": record.transaction_id,
        "state": record.state.value,
        "source": str(record.source),
        "target": str(record.target),
        "amount": record.amount,
        "attempts": record.attempts,
        "fence_credit": record.fence_credit,
        "created_at_ms": record.created_at_ms,
        "updated_at_ms": record.updated_at_ms,
        "last_error": record.last_error,
        "owner": record.owner,
        "epoch": record.epoch,
        "deadline_ms": record.deadline_ms,
        "code": record.code,
        "idempotency_key": record.idempotency_key,
        "submitted_by": record.submitted_by,
        "created_at": iso_time(record.created_at_ms),
        "updated_at": iso_time(record.updated_at_ms),
        "deadline": None if record.deadline_ms is None else iso_time(record.deadline_ms),
    }


def show_through_api(args: argparse.Namespace, out: TextIO) -> int:
    if args.trail:
        raise UsageError("--trail reads the accounts services directly: use it with --db")
    api = transfers_api(args)
    shown, events = api.transfer(args.transaction_id), api.events(args.transaction_id)
    if args.json:
        print(json.dumps({**shown, "events": events}), file=out)
        return EXIT_OK
    print(remote.transfer_line(shown), file=out)
    print(remote.key_line(shown["idempotency_key"], shown["submitted_by"]), file=out)
    for event in events:
        print(remote.event_line(event), file=out)
    return EXIT_OK


async def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.api:
        return show_through_api(args, out)
    record, history = await logged_saga(default_db(args), args.transaction_id)
    trails = await service_trails(record, args.token) if args.trail else None
    if args.json:
        events = []
        for event in history:
            # For an attempt, the time its request was sent.
            item: dict[str, Any] = {"at_ms": event.at_ms, "at": iso_time(event.at_ms), "kind": event.kind}
            if event.state is not None:
                item["state"] = event.state.value
            if event.attempt is not None:
                attempt = event.attempt
                item |= {
                    "step": attempt.step,
                    "attempt": attempt.number,
                    "status": attempt.status,
                    "code": attempt.code,
                    "latency_us": attempt.latency_us,
                    "error": attempt.error,
                    "url": attempt.url,
                    "ledger_id": attempt.ledger_id,
                }
            if event.detail:
                item["detail"] = event.detail
            if event.epoch is not None:
                item |= {"owner": event.owner, "epoch": event.epoch}
            events.append(item)
        shown = {**saga_json(record), "history": events}
        if trails is not None:
            shown["trails"] = [trail.to_json() for trail in trails]
        print(json.dumps(shown), file=out)
        return EXIT_OK
    print(f"{record.transaction_id}: {record.state}, {record.amount} from {record.source} to {record.target}", file=out)
    print(remote.key_line(record.idempotency_key, record.submitted_by), file=out)
    for event in history:
        if event.attempt is not None:
            attempt = event.attempt
            answer = f"{attempt.status or attempt.error} {attempt.code or ''}".rstrip()
            line = f"{attempt.step} attempt {attempt.number}: {answer} in {attempt.latency_us / 1000:.1f} ms"
            if attempt.url is not None:
                line += f" at {attempt.url}"
            if attempt.ledger_id is not None:
                line += f" (ledger {attempt.ledger_id})"
        elif event.kind == "claim":
            line = f"claimed by {event.owner} at epoch {event.epoch}"
        elif event.action is not None:
            action = event.action
            how = f" ({action.resolution})" if action.resolution else ""
            led_to = f" -> {event.state}" if event.state else ""
            line = f"{action.kind}{how} by {action.actor}{led_to}: {action.reason}"
        else:
            line = f"-> {event.state}" + (f" ({event.detail})" if event.detail else "")
        # An attempt's time is when its request was sent.
        print(f"  {iso_time(event.at_ms)}  {line}", file=out)
    for trail in trails or []:
        print("\n".join(trail.lines()), file=out)
    return EXIT_OK


async def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.api:
        if args.account is not None:
            raise UsageError("--account reads a saga log (--db): the transfers service lists by state only")
        transfers, next_cursor = transfers_api(args).page(args.state, args.limit or API_PAGE, args.after)
        if args.json:
            print(json.dumps({"transfers": transfers, "next": next_cursor}), file=out)
            return EXIT_OK
        for shown in transfers:
            print(
                f"{shown['transaction_id']}  {shown['created_at']}  {shown['state']:<12} {shown['amount']:>12}  "
                f"{remote.account_text(shown['source'])} -> {remote.account_text(shown['target'])}",
                file=out,
            )
        more = f"; next page: --after {next_cursor}" if next_cursor else ""
        print(f"{len(transfers)} transfers{more}", file=out)
        return EXIT_OK
    if args.after is not None:
        raise UsageError("--after pages through the transfers service (--api); a log lists the newest with --limit")
    state = SagaState(args.state) if args.state else None
    log = await open_log(default_db(args), create=False, exclusive=False)
    try:
        records = await listed(log, state, args.account, args.limit)
    finally:
        await log.close()
    if args.json:
        print(json.dumps([saga_json(record) for record in records]), file=out)
        return EXIT_OK
    for record in records:
        print(
            f"{record.transaction_id}  {iso_time(record.created_at_ms)}  {record.state:<12} {record.amount:>12}  "
            f"{record.source} -> {record.target}",
            file=out,
        )
    print(f"{len(records)} sagas", file=out)
    return EXIT_OK


async def listed(
    log: SagaLog, state: SagaState | None, account: tuple[str | None, str] | None, limit: int | None
) -> list[SagaRecord]:
    """The sagas ``list`` shows, oldest first: in ``state``, with ``account`` at either end, the newest ``limit``."""
    if account is None:
        if limit is None:
            return await log.sagas(state)
        return (await log.page(state=state, limit=limit))[::-1]
    service, user_id = account
    # The log reads an account's sagas newest first, in any state: the state is sorted out here.
    newest = await log.by_account(user_id, service=service, limit=limit if state is None and limit else _EVERY)
    chosen = [record for record in newest if state is None or record.state is state]
    return chosen[:limit][::-1]


async def cmd_events(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.api:
        events = transfers_api(args).events(args.transaction_id)
    else:
        events = await logged_events(default_db(args), args.transaction_id)
    if args.json:
        print(json.dumps({"transaction_id": args.transaction_id, "events": events}), file=out)
        return EXIT_OK
    print(f"{args.transaction_id}: {len(events)} events", file=out)
    for event in events:
        print(remote.event_line(event), file=out)
    return EXIT_OK


async def logged_saga(database: str, transaction_id: str) -> tuple[SagaRecord, list[Event]]:
    """A saga and its history, read from the log; UsageError when the log has no such saga."""
    log = await open_log(database, create=False, exclusive=False)
    try:
        record = await log.get(transaction_id)
        if record is None:
            raise UsageError(f"no saga {transaction_id} in {database if not is_shared(database) else 'the log'}")
        return record, await log.history(transaction_id)
    finally:
        await log.close()


async def logged_events(database: str, transaction_id: str) -> list[dict[str, Any]]:
    """A saga's history from the log, as the transfers service shows it."""
    from saga.directory import ServiceDirectory
    from saga.service.presenting import Presenter

    record, history = await logged_saga(database, transaction_id)
    present = Presenter(ServiceDirectory())
    return [present.event(record, event) for event in history]


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
