"""``transfer``, ``batch`` and ``submit``: the commands that move money, or record it to be moved."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import TextIO

from generated_client.accounts.api.accounts import get_account
from generated_client.accounts.models import Account
from generated_client.transfers.models import AccountAt
from saga import recovery, services
from saga.cli import remote, terminal
from saga.cli.options import (
    add_api_options,
    add_concurrency_option,
    add_db_option,
    add_json_option,
    add_operating_options,
    add_plan_options,
    add_retry_options,
    add_token_option,
    add_transfer_options,
    add_url_options,
    minor_units,
    policies_from,
    shown,
)
from saga.cli.reading_commands import saga_json
from saga.cli.running import (
    EXIT_INVARIANT_BROKEN,
    EXIT_OK,
    EXIT_SAGA_DID_NOT_COMPLETE,
    Outage,
    UsageError,
    close_log,
    default_db,
    open_log,
    result_json,
    transfers_api,
)
from saga.clients import ServiceClients
from saga.deadlines import deadline_problem, epoch_ms
from saga.directory import SERVICE_NAME
from saga.drive import batch
from saga.failures import LOG_FAILURES, what_failed
from saga.ledgers import LedgerUntrusted, ServiceQuarantined
from saga.logs import IdempotencyKeyConflict, SagaLogError, is_shared
from saga.orchestrator import InvalidTransfer, Orchestrator, validate, wall_clock_ms
from saga.records import AccountRef
from saga.replicas import describe, first_reachable, parse_urls
from saga.run import TransferResult
from saga.states import SagaState
from saga.submission import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE, submit, wait
from saga.telemetry.metrics import observed
from server.shared.contract_rules import USER_ID


def add_transfer_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    transfer = commands.add_parser("transfer", help="move money once")
    add_transfer_options(transfer)
    add_url_options(transfer)
    add_db_option(transfer)
    add_token_option(transfer)
    add_json_option(transfer)
    add_retry_options(transfer)


def add_batch_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run_batch = commands.add_parser("batch", help="run many random transfers and check the money afterwards")
    run_batch.add_argument(
        "scenario", nargs="?", type=Path, help="a scenario file (instances/scenarios/*.json): starts its own services"
    )
    add_url_options(run_batch)
    add_plan_options(run_batch, transfers=None, shown_transfers=200)
    add_concurrency_option(run_batch, default=None, shown_default=16)
    run_batch.add_argument("--max-amount", type=minor_units, default=None, help="largest amount drawn (1000)")
    run_batch.add_argument("--no-audit", action="store_true", help="skip reading every saga's audit trail")
    run_batch.add_argument(
        "--progress", action="store_true", help="show progress even when not on a terminal (as plain lines)"
    )
    add_db_option(run_batch)
    add_token_option(run_batch)
    add_json_option(run_batch)
    add_retry_options(run_batch)
    add_operating_options(run_batch)


def add_submit_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submission = commands.add_parser("submit", help="record a transfer for the workers; print its transaction_id")
    add_transfer_options(submission)
    add_url_options(submission)
    add_db_option(submission)
    add_api_options(submission)
    submission.add_argument(
        "--idempotency-key",
        type=_idempotency_key,
        help="submit once per key: again returns the first transaction_id (under --api, a new key when not given)",
    )
    submission.add_argument("--wait", action="store_true", help="wait until the transfer ends; exit as transfer does")
    add_json_option(submission)


def _idempotency_key(text: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"an idempotency key is {IDEMPOTENCY_KEY_RULE}, got {shown(text)}")
    return text


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
                    sole_traffic=False,
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
