"""One request of one step, as the saga classifies it: by status and problem code, into OK, REJECTED or UNKNOWN.

Each answer comes from an httpx mock transport, so every status the contract
names (and some it does not) is tried without a service; the clock is the
virtual one, so a request's latency and its timeout are exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from generated_client.accounts import Client
from generated_client.accounts.models import LedgerResult
from saga.simulation.clock import run_in_virtual_time
from saga.steps import COMPENSATE_CREDIT, COMPENSATE_DEBIT, CREDIT, DEBIT, StepAnswer, Verdict, ledger_position, send

URL = "http://bank.test"
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def result_body(request: httpx.Request, operation: str = "debit") -> dict[str, Any]:
    body = json.loads(request.content)
    return {
        "transaction_id": request.headers["transaction_id"],
        "operation": operation,
        "user_id": body["user_id"],
        "amount": body["amount"],
        "balance": 900,
        "outcome": "applied",
    }


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": "about:blank", "title": code, "status": status, "detail": code, "code": code}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def send_through(
    handler: Handler,
    step: str = DEBIT,
    *,
    request_timeout: float = 5.0,
    number: int = 3,
    raise_on_unexpected_status: bool = True,
) -> StepAnswer:
    async def run() -> StepAnswer:
        client = Client(base_url=URL, raise_on_unexpected_status=raise_on_unexpected_status)
        client.set_async_httpx_client(httpx.AsyncClient(base_url=URL, transport=httpx.MockTransport(handler)))
        return await send(client, step, "t-1", "alice", 100, number=number, request_timeout=request_timeout, url=URL)

    return run_in_virtual_time(run())


@pytest.mark.parametrize("step", [DEBIT, CREDIT, COMPENSATE_DEBIT, COMPENSATE_CREDIT])
def test_each_step_posts_its_own_path_with_the_id_header_and_the_body(step: str) -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.sleep(0.25)
        return httpx.Response(200, json=result_body(request, step))

    answer = send_through(handler, step)
    (request,) = seen
    assert (request.method, request.url.path, request.headers["transaction_id"]) == ("POST", f"/{step}", "t-1")
    assert json.loads(request.content) == {"user_id": "alice", "amount": 100}
    assert answer.verdict is Verdict.OK
    assert answer.unreachable is False
    attempt = answer.attempt
    assert (attempt.step, attempt.number, attempt.status, attempt.code, attempt.error, attempt.url) == (
        step,
        3,
        200,
        None,
        None,
        URL,
    )
    assert attempt.latency_us == 250_000
    assert isinstance(answer.result, LedgerResult)
    assert (answer.result.balance, answer.code) == (900, None)


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (400, "invalid_transaction_id", Verdict.REJECTED),
        (401, "unauthorized", Verdict.REJECTED),
        (404, "unknown_user", Verdict.REJECTED),
        (409, "insufficient_funds", Verdict.REJECTED),
        (413, "request_too_large", Verdict.REJECTED),
        (422, "idempotency_key_reused", Verdict.REJECTED),
        (500, "injected_fault", Verdict.UNKNOWN),
        (503, "storage_unavailable", Verdict.UNKNOWN),
    ],
)
def test_a_documented_problem_is_classified_by_its_status_and_keeps_its_code(
    status: int, code: str, verdict: Verdict
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return problem(status, code)

    answer = send_through(handler)
    assert (answer.verdict, answer.attempt.status, answer.code, answer.attempt.error) == (verdict, status, code, None)
    assert answer.result is None
    assert answer.unreachable is False


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (418, Verdict.REJECTED),
        (428, Verdict.REJECTED),
        (429, Verdict.UNKNOWN),
        (451, Verdict.REJECTED),
        (502, Verdict.UNKNOWN),
        (504, Verdict.UNKNOWN),
    ],
)
def test_an_undocumented_status_is_unknown_from_500_up_and_for_429(status: int, verdict: Verdict) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="proxy page")

    answer = send_through(handler)
    assert (answer.verdict, answer.attempt.status, answer.code, answer.attempt.error) == (
        verdict,
        status,
        None,
        "undocumented status",
    )


def test_an_answer_that_does_not_parse_is_unknown() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="{not json", headers={"content-type": "application/json"})

    answer = send_through(handler)
    assert (answer.verdict, answer.attempt.status, answer.attempt.error) == (
        Verdict.UNKNOWN,
        None,
        "no usable answer: JSONDecodeError",
    )


def test_a_request_that_does_not_answer_in_time_is_unknown_after_exactly_its_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        return httpx.Response(200, json=result_body(request))

    answer = send_through(handler, request_timeout=1.5)
    assert (answer.verdict, answer.attempt.status, answer.attempt.error, answer.unreachable) == (
        Verdict.UNKNOWN,
        None,
        "timeout",
        False,
    )
    assert answer.attempt.latency_us == 1_500_000


def test_a_connection_never_made_is_unknown_and_unreachable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    answer = send_through(handler)
    assert (answer.verdict, answer.unreachable, answer.attempt.status) == (Verdict.UNKNOWN, True, None)
    assert answer.attempt.error == "unreachable: ConnectError: connection refused"


def test_a_connection_broken_after_the_request_left_is_unknown_but_not_unreachable() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    answer = send_through(handler)
    assert (answer.verdict, answer.unreachable, answer.attempt.error) == (Verdict.UNKNOWN, False, "ReadError")


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (200, None, Verdict.OK),
        (409, "insufficient_funds", Verdict.REJECTED),
        (503, "storage_unavailable", Verdict.UNKNOWN),
    ],
)
def test_an_answer_names_the_ledger_the_service_answered_from(status: int, code: str | None, verdict: Verdict) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(200, json=result_body(request)) if code is None else problem(status, code)
        response.headers["ledger-id"] = "ledger-7"
        return response

    answer = send_through(handler)
    assert (answer.verdict, answer.code, answer.attempt.ledger_id) == (verdict, code, "ledger-7")


def test_an_answer_without_a_ledger_header_names_no_ledger() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=result_body(request))

    assert send_through(handler).attempt.ledger_id is None


@pytest.mark.parametrize(
    ("status", "verdict"), [(418, Verdict.REJECTED), (429, Verdict.UNKNOWN), (502, Verdict.UNKNOWN)]
)
def test_a_client_that_lets_undocumented_statuses_through_gets_them_classified_by_status_alone(
    status: int, verdict: Verdict
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="proxy page", headers={"ledger-id": "ledger-7"})

    answer = send_through(handler, raise_on_unexpected_status=False)
    assert (answer.verdict, answer.attempt.status, answer.code, answer.attempt.error, answer.result) == (
        verdict,
        status,
        None,
        None,
        None,
    )
    assert answer.attempt.ledger_id == "ledger-7"


@pytest.mark.parametrize(
    ("headers", "position"),
    [
        ([(b"Ledger-Position", b"0")], 0),
        ([(b"ledger-position", b"4096")], 4096),
        ([], None),
        ([(b"Ledger-Position", b"")], None),
        ([(b"Ledger-Position", b"-1")], None),
        ([(b"Ledger-Position", b"12.0")], None),
        # Byte 0xB2 reads as "²", which str.isdigit() takes and int() refuses.
        ([(b"Ledger-Position", b"\xb2")], None),
    ],
)
def test_a_ledger_position_is_read_only_when_written_in_the_ascii_digits(
    headers: list[tuple[bytes, bytes]], position: int | None
) -> None:
    assert ledger_position(httpx.Headers(headers)) == position
