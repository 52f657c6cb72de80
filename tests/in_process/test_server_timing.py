"""The ``Server-Timing`` header: as the service writes it, and as the saga reads it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from saga.steps import ServerTiming, server_timing
from server import Settings, create_app
from server.stores.memory import MemoryStore
from server.timing import UNTIMED, RequestClock
from server.timing import server_timing as written_timing
from tests.support.aio import run
from tests.support.inprocess import asgi_client, ledger_call


@pytest.mark.parametrize(
    ("value", "timing"),
    [
        ("store;dur=0.123, total;dur=0.456", ServerTiming(store_us=123, total_us=456)),
        ("store;dur=12.000, total;dur=3456.789", ServerTiming(store_us=12_000, total_us=3_456_789)),
        (UNTIMED, ServerTiming(store_us=0, total_us=0)),
        # The order, the spacing, the case of a parameter and its quoting are free.
        ("total;dur=2.5,store;dur=1", ServerTiming(store_us=1000, total_us=2500)),
        ('store; DUR="0.010" , total ;dur=0.020', ServerTiming(store_us=10, total_us=20)),
        # Past the microsecond, digits are dropped.
        ("store;dur=0.0019, total;dur=0.0021", ServerTiming(store_us=1, total_us=2)),
        # Other metrics and other parameters are not the saga's business.
        ('db;dur=9.000, store;desc="ledger";dur=0.001, total;dur=0.002, cache', ServerTiming(1, 2)),
        ("store;dur=0.001;desc=x, total;dur=0.002", ServerTiming(1, 2)),
        # Unreadable: a metric missing, or either said twice, or without a duration.
        ("store;dur=0.123", None),
        ("total;dur=0.456", None),
        ("", None),
        ("store;dur=0.1, store;dur=0.2, total;dur=0.3", None),
        ("store, total;dur=0.3", None),
        ("store;dur=0.1;dur=0.2, total;dur=0.3", None),
        # Unreadable: a duration that is not a plain non-negative number.
        ("store;dur=-1.000, total;dur=0.456", None),
        ("store;dur=, total;dur=0.456", None),
        ("store;dur=1., total;dur=0.456", None),
        ("store;dur=.5, total;dur=0.456", None),
        ("store;dur=1e3, total;dur=0.456", None),
        ("store;dur=0x10, total;dur=0.456", None),
        ("store;dur=nan, total;dur=0.456", None),
        ("store;dur=1.2.3, total;dur=0.456", None),
        ("garbage", None),
    ],
)
def test_a_server_timing_is_read_only_when_it_says_both_durations_plainly(
    value: str, timing: ServerTiming | None
) -> None:
    assert server_timing(httpx.Headers({"Server-Timing": value})) == timing


def test_a_duration_in_digits_outside_ascii_is_unreadable() -> None:
    # Byte 0xB2 reads as "²", which str.isdigit() takes and int() refuses.
    headers = httpx.Headers([(b"Server-Timing", b"store;dur=\xb2, total;dur=0.456")])
    assert server_timing(headers) is None


def test_an_answer_without_a_server_timing_has_none() -> None:
    assert server_timing(httpx.Headers({"Ledger-Position": "3"})) is None


def test_two_server_timing_headers_are_read_as_one_list() -> None:
    headers = httpx.Headers([(b"Server-Timing", b"store;dur=0.004"), (b"Server-Timing", b"total;dur=0.009")])
    assert server_timing(headers) == ServerTiming(store_us=4, total_us=9)


def test_the_service_writes_microseconds_exactly_with_three_decimals() -> None:
    clock = RequestClock(started_ns=0)
    clock.store_ns = 1_234_567_891
    value = written_timing(clock).decode()
    store, total = value.split(", ")
    assert store == "store;dur=1234.567"
    assert re.fullmatch(r"total;dur=[0-9]+\.[0-9]{3}", total), total


def test_every_answer_of_the_app_says_its_store_time_within_its_total() -> None:
    async def answers() -> list[httpx.Response]:
        async with asgi_client(create_app()) as client:
            return [
                await client.post("/debit", **ledger_call("t-1", amount=5)),
                await client.post("/debit", headers={"transaction_id": "t-2"}, json={"user_id": "alice"}),
                await client.get("/healthz"),
            ]

    applied, refused, health = run(answers())
    assert (applied.status_code, refused.status_code) == (200, 422)
    for answer in (applied, refused):
        timing = server_timing(answer.headers)
        assert timing is not None, answer.headers
        assert timing.store_us <= timing.total_us
    # Outside the contract, no timing is owed.
    assert "server-timing" not in health.headers


def test_an_unexpected_error_answered_outside_the_middleware_says_its_timing_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore.create({"alice": 100})

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store.ledger, "apply", fail)

    async def call() -> httpx.Response:
        app = create_app(Settings(accounts={"alice": 100}, log_requests=False), store)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts.test") as client:
            return await client.post("/debit", **ledger_call("t-1", amount=1))

    response = run(call())
    assert (response.status_code, response.json()["code"]) == (500, "internal_error")
    timing = server_timing(response.headers)
    assert timing is not None, response.headers
    assert timing.store_us <= timing.total_us


def test_the_store_time_is_the_sum_of_the_requests_store_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore.create({"alice": 100})
    read_trail, read_opening = store.trail_with_position, store.opening

    async def slow_trail(transaction_id: str) -> Any:
        await asyncio.sleep(0.02)
        return await read_trail(transaction_id)

    async def slow_opening(transaction_id: str) -> Any:
        await asyncio.sleep(0.03)
        return await read_opening(transaction_id)

    monkeypatch.setattr(store, "trail_with_position", slow_trail)
    monkeypatch.setattr(store, "opening", slow_opening)

    async def call() -> httpx.Response:
        async with asgi_client(create_app(Settings(accounts={"alice": 100}, log_requests=False), store)) as client:
            return await client.get("/transactions/t-1", headers={"transaction_id": "r-1"})

    response = run(call())
    timing = server_timing(response.headers)
    assert response.status_code == 200
    # A trail read is two store calls, and both count.
    assert timing is not None, response.headers
    assert 50_000 <= timing.store_us <= timing.total_us
