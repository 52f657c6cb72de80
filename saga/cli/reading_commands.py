"""``show``, ``list`` and ``events``: what the saga log, or the transfers service (``--api``), holds."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from saga.cli import remote
from saga.cli.options import (
    add_api_options,
    add_db_option,
    add_json_option,
    add_token_option,
    add_transaction_id_argument,
    shown,
    whole_number,
)
from saga.cli.running import (
    EXIT_OK,
    UsageError,
    default_db,
    open_log,
    transfers_api,
)
from saga.cli.trail import service_trails
from saga.deadlines import iso_time
from saga.directory import SERVICE_NAME, ServiceDirectory
from saga.logs import SagaLog, is_shared
from saga.records import Event, SagaRecord
from saga.states import SagaState
from server.shared.contract_rules import USER_ID

#: The most transfers on one page of the transfers service's list, and how many when not told.
MAX_PAGE = 500
API_PAGE = 50
#: As many sagas as a log holds: the limit of a read meant to have none.
_EVERY = 2**62


def add_show_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show = commands.add_parser("show", help="one saga's history")
    add_transaction_id_argument(show)
    add_db_option(show)
    add_api_options(show)
    add_json_option(show)
    show.add_argument(
        "--trail", action="store_true", help="also the audit trail of the same id at each service of the saga"
    )
    add_token_option(show)


def add_list_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = commands.add_parser("list", help="the sagas in the log, or a page of them from the transfers service")
    listing.add_argument("--state", choices=[state.value for state in SagaState])
    add_db_option(listing)
    add_api_options(listing)
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
    add_json_option(listing)


def add_events_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    timeline = commands.add_parser("events", help="one transfer's timeline: every state change and request")
    add_transaction_id_argument(timeline)
    add_db_option(timeline)
    add_api_options(timeline)
    add_json_option(timeline)


def _account(text: str) -> tuple[str | None, str]:
    service, sep, user_id = text.rpartition(":")
    if not USER_ID.fullmatch(user_id) or (sep and not SERVICE_NAME.fullmatch(service)):
        raise argparse.ArgumentTypeError(
            f"an account is a user_id, or SERVICE:USER_ID, each 1-64 of A-Z a-z 0-9 _ . -, got {shown(text)}"
        )
    return (service if sep else None), user_id


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
    from saga.service.presenting import Presenter

    record, history = await logged_saga(database, transaction_id)
    present = Presenter(ServiceDirectory())
    return [present.event(record, event) for event in history]
