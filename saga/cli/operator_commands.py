"""``cancel``, ``retry`` and ``resolve``: an operator's actions, from the command line.

The same operations as the transfers service's (openapi/transfers.yaml),
under the same rules (saga/operator.py):

- with ``--api URL`` they go through the service, with an operator token
  (``--api-token``, SAGA_API_TOKEN), which names who acted;
- with ``--db`` they are written to the saga log directly, as
  ``cli:USER@HOST``. A SQLite log must be one no other process holds (its
  lock says so); there, ``retry`` also drives the saga on at once, since no
  other process will. On PostgreSQL the action reaches whichever worker drives
  the saga, at once.

Exit 0 when the action was recorded (or had been already), 1 when the
transfer is not in a state the action applies to, 2 on bad input or when the
service refuses the token.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
from typing import Any, TextIO

import httpx

from generated_client.transfers import AuthenticatedClient
from generated_client.transfers.api.operators import cancel_transfer, resolve_transfer, retry_transfer
from generated_client.transfers.models import OperatorActionRequest, Problem, ResolveRequest, Transfer
from generated_client.transfers.models import Resolution as ApiResolution
from generated_client.transfers.types import Response
from saga.cli.options import (
    add_api_options,
    add_db_option,
    add_directory_options,
    add_json_option,
    add_retry_options,
    add_token_option,
    add_transaction_id_argument,
    policies_from,
    whole_number,
)
from saga.cli.remote import transfer_line
from saga.cli.running import UsageError, default_db, open_log
from saga.logs import SagaLog, is_shared
from saga.logs.base import UnknownSaga, act_once
from saga.operator import MAX_REASON_LENGTH, ActionRefused, check_action
from saga.orchestrator import wall_clock_ms
from saga.records import ActionKind, OperatorAction, Resolution, SagaRecord

EXIT_RECORDED = 0
EXIT_NOT_APPLICABLE = 1
EXIT_BAD_INPUT = 2

HELP = {
    ActionKind.CANCEL: "cancel a transfer no run has taken up yet (it ends CANCELLED)",
    ActionKind.RETRY: "try a COMPENSATING transfer's compensation again at once",
    ActionKind.RESOLVE: "settle a NEEDS_ATTENTION transfer by hand (it ends RESOLVED)",
}


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for kind in ActionKind:
        command = commands.add_parser(kind.value, help=HELP[kind])
        add_transaction_id_argument(command)
        if kind is ActionKind.RESOLVE:
            command.add_argument(
                "--resolution",
                required=True,
                choices=[resolution.value for resolution in Resolution],
                help="moved_by_hand: the money was put right outside the saga; nothing_to_move: the trails show "
                "nothing to move",
            )
        command.add_argument(
            "--reason", required=True, help=f"why, in one line of at most {MAX_REASON_LENGTH} characters; recorded"
        )
        add_db_option(command)
        add_api_options(command)
        add_json_option(command)
        if kind is ActionKind.RETRY:
            add_token_option(command)
            add_directory_options(command)
            command.add_argument(
                "--within",
                type=whole_number(1, 3600),
                default=60,
                help="with --db on SQLite: drive the saga here for at most this many seconds (60); it stays "
                "COMPENSATING if its compensation has not finished by then",
            )
            add_retry_options(command)


def cli_actor() -> str:
    """Who acts from this shell: ``cli:USER@HOST``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def run_operator_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    kind = ActionKind(args.command)
    resolution = Resolution(args.resolution) if kind is ActionKind.RESOLVE else None
    try:
        check_action(OperatorAction(args.transaction_id, kind, "check", args.reason, 0, resolution))
    except ValueError as error:
        print(f"error: --reason: {error}", file=err)
        return EXIT_BAD_INPUT
    if args.api:
        return _through_api(args, kind, resolution, out, err)
    return asyncio.run(_on_log(args, kind, resolution, out, err))


def _through_api(
    args: argparse.Namespace, kind: ActionKind, resolution: Resolution | None, out: TextIO, err: TextIO
) -> int:
    if not args.api_token:
        print("error: an operator token is needed: --api-token or SAGA_API_TOKEN", file=err)
        return EXIT_BAD_INPUT
    client = AuthenticatedClient(base_url=args.api, token=args.api_token, timeout=httpx.Timeout(30.0))
    answer: Response[Problem | Transfer]
    try:
        if kind is ActionKind.RESOLVE:
            assert resolution is not None
            body = ResolveRequest(resolution=ApiResolution(resolution.value), reason=args.reason)
            answer = resolve_transfer.sync_detailed(args.transaction_id, client=client, body=body)
        elif kind is ActionKind.CANCEL:
            plain = OperatorActionRequest(reason=args.reason)
            answer = cancel_transfer.sync_detailed(args.transaction_id, client=client, body=plain)
        else:
            plain = OperatorActionRequest(reason=args.reason)
            answer = retry_transfer.sync_detailed(args.transaction_id, client=client, body=plain)
    except httpx.TransportError as error:
        print(f"error: cannot reach the transfers service at {args.api}: {type(error).__name__}: {error}", file=err)
        return EXIT_NOT_APPLICABLE
    if isinstance(answer.parsed, Transfer):
        shown = answer.parsed.to_dict()
        replayed = answer.headers.get("idempotent-replayed") == "true"
        _print_outcome(kind, shown, replayed, args.json, out)
        return EXIT_RECORDED
    problem = answer.parsed
    code = problem.code.value if isinstance(problem, Problem) else None
    detail = problem.detail if isinstance(problem, Problem) else ""
    print(f"error: the transfers service answered {answer.status_code} {code or ''}: {detail}".rstrip(": "), file=err)
    if answer.status_code in (404, 409):
        return EXIT_NOT_APPLICABLE
    return EXIT_BAD_INPUT if answer.status_code < 500 else EXIT_NOT_APPLICABLE


async def _on_log(
    args: argparse.Namespace, kind: ActionKind, resolution: Resolution | None, out: TextIO, err: TextIO
) -> int:
    database = default_db(args)
    try:
        log = await open_log(database, create=False)
    except UsageError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    try:
        action = OperatorAction(args.transaction_id, kind, cli_actor(), args.reason, wall_clock_ms(), resolution)
        try:
            record, replayed = await act_once(log, action)
        except UnknownSaga:
            print(f"error: no saga in {database} has the id {args.transaction_id!r}", file=err)
            return EXIT_NOT_APPLICABLE
        except ActionRefused as refused:
            print(f"error: {refused.code}: {refused.detail}; nothing was recorded", file=err)
            return EXIT_NOT_APPLICABLE
        if replayed:
            _print_outcome(kind, _as_api(record), True, args.json, out)
            return EXIT_RECORDED
        if kind is ActionKind.RETRY and not is_shared(database):
            # No other process holds this log, so none would take the saga up: drive it here.
            record = await _drive_now(args, log, record, err)
        _print_outcome(kind, _as_api(record), False, args.json, out)
    finally:
        await log.close()
    return EXIT_RECORDED


async def _drive_now(args: argparse.Namespace, log: SagaLog, record: SagaRecord, err: TextIO) -> SagaRecord:
    from saga.cli.terminal import WaitLines
    from saga.directory import directory_from
    from saga.orchestrator import Orchestrator

    waits = WaitLines(err, own=record.transaction_id)
    async with Orchestrator(
        log,
        policies=policies_from(args),
        token=args.token,
        directory=directory_from(args.service, args.services),
        waits=waits,
    ) as orchestrator:
        try:
            async with asyncio.timeout(args.within):
                result = await orchestrator.resume(record)
        except TimeoutError:
            print(f"retried for {args.within} s: the compensation has not finished; it stays COMPENSATING", file=err)
        else:
            ended = f"retried: {result.state}"
            print(f"{ended} ({result.error})" if result.error else ended, file=err)
        finally:
            waits.close()
    after = await log.get(record.transaction_id)
    assert after is not None
    return after


def _as_api(record: SagaRecord) -> dict[str, Any]:
    from saga.directory import ServiceDirectory
    from saga.service.presenting import Presenter

    return Presenter(ServiceDirectory()).transfer(record)


def _print_outcome(kind: ActionKind, shown: dict[str, Any], replayed: bool, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(shown), file=out)
        return
    done = {ActionKind.CANCEL: "cancelled", ActionKind.RETRY: "retry asked", ActionKind.RESOLVE: "resolved"}[kind]
    prefix = f"{done} (already, nothing recorded)" if replayed else done
    print(f"{prefix}: {transfer_line(shown)}", file=out)
