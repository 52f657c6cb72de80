"""The CLI's way through the transfers service (``--api URL``): submit, show, list and events over HTTP.

Everything goes through the generated transfers client; accounts are named
``SERVICE:USER_ID``, as the service knows them. A submission that meets a
lost connection, a timeout or a 503 is sent again under the same
Idempotency-Key, which the service records at most once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from generated_client.transfers import AuthenticatedClient, Client
from generated_client.transfers.api.transfers import create_transfer, get_transfer, get_transfer_events, list_transfers
from generated_client.transfers.models import AccountAt, Problem, Transfer, TransferRequest, TransferState
from generated_client.transfers.types import UNSET, Response
from saga.states import TERMINAL_STATES

#: Submissions sent again after a lost answer, before giving up.
SUBMIT_ATTEMPTS = 5
#: The longest wait the contract allows per request.
WAIT_PER_REQUEST = 30


class ApiError(Exception):
    """The transfers service refused, or could not be reached: one line for the user."""


@dataclass(frozen=True, slots=True)
class Submitted:
    transfer: dict[str, Any]
    replayed: bool


def parse_account(text: str, flag: str) -> AccountAt:
    """``SERVICE:USER_ID`` -> the account as the API names it; ApiError in one line when it is not one."""
    service, sep, user_id = text.partition(":")
    if not sep or not service or not user_id:
        raise ApiError(f"{flag} takes SERVICE:USER_ID under --api (for example bank-a:alice), got {text!r}")
    return AccountAt(service=service, user_id=user_id)


class TransfersApi:
    """One transfers service, through the generated client."""

    def __init__(self, url: str, token: str | None = None, timeout: float = WAIT_PER_REQUEST + 10.0) -> None:
        self.url = url
        http_timeout = httpx.Timeout(timeout)
        self.client: Client | AuthenticatedClient
        if token:
            self.client = AuthenticatedClient(
                base_url=url, token=token, timeout=http_timeout, raise_on_unexpected_status=True
            )
        else:
            self.client = Client(base_url=url, timeout=http_timeout, raise_on_unexpected_status=True)

    def _unreachable(self, error: Exception) -> ApiError:
        return ApiError(f"cannot reach the transfers service at {self.url}: {type(error).__name__}: {error}")

    def submit(
        self, source: AccountAt, target: AccountAt, amount: int, key: str | None, *, deadline_ms: int | None = None
    ) -> Submitted:
        """POST /transfers under ``key`` (a new one if None), sent again after a lost answer."""
        key = key or f"cli-{uuid.uuid4()}"
        body = TransferRequest(source=source, target=target, amount=amount)
        if deadline_ms is not None:
            whole_seconds, millis = divmod(deadline_ms, 1000)
            body.deadline = datetime.fromtimestamp(whole_seconds, UTC) + timedelta(milliseconds=millis)
        last: ApiError | None = None
        for attempt in range(SUBMIT_ATTEMPTS):
            if attempt:
                time.sleep(min(0.2 * 2**attempt, 2.0))
            try:
                answer = create_transfer.sync_detailed(client=self.client, body=body, idempotency_key=key)
            except httpx.TransportError as error:
                last = self._unreachable(error)
                continue
            if answer.status_code == 503:
                last = _refused(answer)
                continue
            if answer.status_code in (200, 201) and isinstance(answer.parsed, Transfer):
                return Submitted(_transfer(answer.parsed), replayed=answer.status_code == 200)
            raise _refused(answer)
        assert last is not None
        raise last

    def transfer(self, transaction_id: str, wait: int = 0) -> dict[str, Any]:
        try:
            answer = get_transfer.sync_detailed(transaction_id, client=self.client, wait=wait)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if not isinstance(answer.parsed, Transfer):
            raise _refused(answer)
        return _transfer(answer.parsed)

    def wait_for_end(self, transaction_id: str) -> dict[str, Any]:
        """The transfer once it is final, asking again for as long as it runs."""
        while True:
            shown = self.transfer(transaction_id, wait=WAIT_PER_REQUEST)
            if TransferState(shown["state"]) in FINAL_STATES:
                return shown

    def events(self, transaction_id: str) -> list[dict[str, Any]]:
        try:
            answer = get_transfer_events.sync_detailed(transaction_id, client=self.client)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        parsed = answer.parsed
        if isinstance(parsed, Problem) or parsed is None:
            raise _refused(answer)
        return [event.to_dict() | {"at": iso(event.at)} for event in parsed.events]

    def page(self, state: str | None, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of transfers, newest first, and the cursor of the next (None on the last)."""
        try:
            answer = list_transfers.sync_detailed(
                client=self.client,
                state=TransferState(state) if state else UNSET,
                limit=limit,
                after=after if after is not None else UNSET,
            )
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        parsed = answer.parsed
        if isinstance(parsed, Problem) or parsed is None:
            raise _refused(answer)
        next_cursor = parsed.next_ if isinstance(parsed.next_, str) else None
        return [_transfer(item) for item in parsed.transfers], next_cursor


def iso(moment: datetime) -> str:
    """A time as the service writes it: ISO 8601 in UTC, to the millisecond."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def _transfer(parsed: Transfer) -> dict[str, Any]:
    return parsed.to_dict() | {"created_at": iso(parsed.created_at), "updated_at": iso(parsed.updated_at)}


def _refused(answer: Response[Any]) -> ApiError:
    parsed = answer.parsed
    if isinstance(parsed, Problem):
        return ApiError(f"the transfers service answered {answer.status_code} {parsed.code}: {parsed.detail}")
    return ApiError(f"the transfers service answered {answer.status_code}")


#: The states a transfer ends in, by name: every terminal state of saga/states.py, CANCELLED and RESOLVED
#: included. Names, not TransferState members, so that the set never lags behind the generated client.
FINAL_STATES: frozenset[str] = frozenset(state.value for state in TERMINAL_STATES)


def account_text(account: dict[str, Any]) -> str:
    return f"{account['service'] or '(unnamed service)'}:{account['user_id']}"


def transfer_line(shown: dict[str, Any]) -> str:
    because = f" ({shown['last_error']})" if shown.get("last_error") else ""
    return (
        f"{shown['state']} {shown['transaction_id']}: {shown['amount']} from {account_text(shown['source'])} "
        f"to {account_text(shown['target'])}, {shown['attempts']} requests{because}"
    )


def key_line(idempotency_key: str | None, submitted_by: str | None) -> str:
    """Under a transfer's first line: the key it was submitted under and by whom, ``-`` for none."""
    key = "-" if idempotency_key is None else repr(idempotency_key)
    return f"  idempotency key {key}, submitted by {submitted_by or '-'}"


def event_line(event: dict[str, Any]) -> str:
    if event["kind"] == "attempt":
        answer = f"{event.get('status') or event.get('error')} {event.get('code') or ''}".rstrip()
        line = f"{event['step']} attempt {event['attempt']}: {answer} in {event['latency_us'] / 1000:.1f} ms"
        if event.get("service"):
            line += f" at {event['service']}"
        if event.get("ledger_id"):
            line += f" (ledger {event['ledger_id']})"
    elif event["kind"] == "claim":
        line = f"claimed by {event['worker']} at epoch {event['epoch']}"
    elif event["kind"] == "action":
        how = f" ({event['resolution']})" if event.get("resolution") else ""
        led_to = f" -> {event['state']}" if event.get("state") else ""
        line = f"{event['action']}{how} by {event['actor']}{led_to}: {event['reason']}"
    else:
        line = f"-> {event['state']}" + (f" ({event['because']})" if event.get("because") else "")
    return f"  {event['at']}  {line}"
