"""The saga's steps: one request each to an accounts service, through the generated client.

A step's answer is classified by status and problem ``code`` only, never by
message text:

* ``Verdict.OK``: the service answered 200.
* ``Verdict.REJECTED``: a 4xx answer: this request was not applied. The
  service records and replays those of :data:`RECORDED_REJECTIONS`, so
  retrying cannot change them; the others (401, 422,
  ``reversal_exceeds_balance_limit``, ...) say nothing of a later attempt.
* ``Verdict.UNKNOWN``: a 5xx (``injected_fault`` included), a timeout or a
  connection error. The request may or may not have been applied: retry it
  under the same transaction_id, or fence it with a compensation.

A connection that could not be made at all is also UNKNOWN, to stay on the
safe side, but the answer says ``unreachable``: the saga may send the same
request to another URL of the service at once (see saga/replicas.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

import httpx

from generated_client.accounts import AuthenticatedClient, Client, errors
from generated_client.accounts.api.ledger import compensate_credit, compensate_debit, credit, debit
from generated_client.accounts.models import LedgerRequest, LedgerResult, Problem
from generated_client.accounts.types import Response
from saga.records import Attempt
from saga.replicas import describe, unreachable

DEBIT: Final = "debit"
CREDIT: Final = "credit"
COMPENSATE_DEBIT: Final = "compensate_debit"
COMPENSATE_CREDIT: Final = "compensate_credit"

AnyClient = Client | AuthenticatedClient
LedgerCall = Callable[..., Awaitable[Response[LedgerResult | Problem]]]

_CALLS: Final[dict[str, LedgerCall]] = {
    DEBIT: debit.asyncio_detailed,
    CREDIT: credit.asyncio_detailed,
    COMPENSATE_DEBIT: compensate_debit.asyncio_detailed,
    COMPENSATE_CREDIT: compensate_credit.asyncio_detailed,
}


#: Rejections the service records under (transaction_id, operation): every
#: later request of that operation under that id gets the same answer, so the
#: operation can never apply afterwards.
RECORDED_REJECTIONS: Final = frozenset(
    {"unknown_user", "insufficient_funds", "balance_limit_exceeded", "transaction_compensated", "transfer_completed"}
)

#: The refusals that end each compensation, because the contract says what
#: they mean for the money: no account (nothing was taken or given there), the
#: transfer completed (the credit stands, and so does the debit), or, for the
#: credit, its money already spent (the credit stands). Any other answer, even
#: one the service records, leaves the money unaccounted for, so the
#: compensation is blocked rather than taken as done:
#: ``reversal_exceeds_balance_limit`` (the debit is given back once there is
#: room) and any code a service should never give to this operation.
ENDS_COMPENSATION: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        COMPENSATE_DEBIT: frozenset({"unknown_user", "transfer_completed"}),
        COMPENSATE_CREDIT: frozenset({"unknown_user", "insufficient_funds", "transfer_completed"}),
    }
)


class Verdict(Enum):
    OK = "ok"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class StepAnswer:
    verdict: Verdict
    attempt: Attempt
    result: LedgerResult | None = None
    #: The request never left: another URL of the service may take it now.
    unreachable: bool = False
    #: The answering ledger's position (``Ledger-Position``), where it said one.
    ledger_position: int | None = None

    @property
    def code(self) -> str | None:
        return self.attempt.code


async def send(
    client: AnyClient,
    step: str,
    transaction_id: str,
    user_id: str,
    amount: int,
    *,
    number: int,
    request_timeout: float,
    url: str | None = None,
    sent_at_ms: int | None = None,
    log_wait_us: int | None = None,
) -> StepAnswer:
    """Send one request of ``step`` through ``client`` (whose base URL is ``url``) and classify its answer.

    ``sent_at_ms`` is when the request goes out on the caller's clock, and
    ``log_wait_us`` how long it waited for the saga log, for the attempt's record.
    """
    clock = timing_clock()
    started = clock()

    def attempt(
        status: int | None,
        code: str | None = None,
        error: str | None = None,
        ledger_id: str | None = None,
        server_us: int | None = None,
    ) -> Attempt:
        latency_us = int((clock() - started) * 1_000_000)
        return Attempt(
            step, number, status, code, latency_us, error, url, ledger_id, sent_at_ms, log_wait_us, server_us
        )

    try:
        async with asyncio.timeout(request_timeout):
            response = await _CALLS[step](
                client=client, body=LedgerRequest(user_id=user_id, amount=amount), transaction_id=transaction_id
            )
    except TimeoutError:
        return StepAnswer(Verdict.UNKNOWN, attempt(None, error="timeout"))
    except httpx.TransportError as error:
        if unreachable(error):
            return StepAnswer(Verdict.UNKNOWN, attempt(None, error=f"unreachable: {describe(error)}"), unreachable=True)
        return StepAnswer(Verdict.UNKNOWN, attempt(None, error=describe(error)))
    except errors.UnexpectedStatus as error:
        return StepAnswer(_verdict(error.status_code), attempt(error.status_code, error="undocumented status"))
    except Exception as error:
        # Whatever else went wrong (a body that does not parse, a proxy's error
        # page, a broken connection mid-answer) tells nothing about the outcome.
        return StepAnswer(Verdict.UNKNOWN, attempt(None, error=f"no usable answer: {type(error).__name__}"))
    status = int(response.status_code)
    parsed = response.parsed
    headers = response.headers
    ledger_id = headers.get("ledger-id")
    position = ledger_position(headers)
    timing = server_timing(headers)
    server_us = None if timing is None else timing.total_us
    # The client parses a 200, and only a 200, as a LedgerResult.
    if isinstance(parsed, LedgerResult):
        answered = attempt(status, ledger_id=ledger_id, server_us=server_us)
        return StepAnswer(Verdict.OK, answered, parsed, ledger_position=position)
    code = parsed.code.value if isinstance(parsed, Problem) else None
    answered = attempt(status, code, ledger_id=ledger_id, server_us=server_us)
    return StepAnswer(_verdict(status), answered, ledger_position=position)


def timing_clock() -> Callable[[], float]:
    """The clock, in seconds, that a request's latency and a commit's wait are measured on.

    ``time.perf_counter``, except on the simulator's loop, whose virtual time
    is the only time there is. Not the running loop's ``time()``: uvloop's
    moves in whole milliseconds, once per turn of the loop, and would record
    a sub-millisecond request as taking no time at all.
    """
    loop = asyncio.get_running_loop()
    return loop.time if getattr(loop, "virtual_time", False) else time.perf_counter


def ledger_position(headers: Mapping[str, str]) -> int | None:
    """The ``Ledger-Position`` an answer carries; None when it carries none, or none that reads as a count."""
    value = headers.get("ledger-position")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


@dataclass(frozen=True)
class ServerTiming:
    """What an answer's ``Server-Timing`` says the service spent on it, in microseconds."""

    store_us: int
    total_us: int


def server_timing(headers: Mapping[str, str]) -> ServerTiming | None:
    """The ``store`` and ``total`` durations of an answer's ``Server-Timing``; None without both.

    Other metrics and parameters are ignored, as the W3C format asks; a
    duration that is not a plain non-negative number of milliseconds, or a
    metric given twice, makes the header unreadable.
    """
    value = headers.get("server-timing")
    if value is None:
        return None
    durations: dict[str, int] = {}
    for metric in value.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if name not in ("store", "total"):
            continue
        dur = [param[4:].strip().strip('"') for param in params if param[:4].lower() == "dur="]
        micros = _microseconds(dur[0]) if len(dur) == 1 else None
        if micros is None or name in durations:
            return None
        durations[name] = micros
    if len(durations) != 2:
        return None
    return ServerTiming(store_us=durations["store"], total_us=durations["total"])


def _microseconds(milliseconds: str) -> int | None:
    """``"1.234"`` as 1234; None for anything but digits with at most one point."""
    whole, point, fraction = milliseconds.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (point and not (fraction.isascii() and fraction.isdigit())):
        return None
    # Past the microsecond a duration says nothing the saga uses: truncated, as the service writes it.
    return int(whole) * 1000 + int((fraction + "000")[:3])


def _verdict(status: int) -> Verdict:
    return Verdict.UNKNOWN if status >= 500 or status == 429 else Verdict.REJECTED
