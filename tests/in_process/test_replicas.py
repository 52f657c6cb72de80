"""One service at several URLs: parsing and validating them, telling a failed connect apart, and failing over."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import httpx
import pytest

from saga import (
    AccountRef,
    InvalidTransfer,
    MemorySagaLog,
    Orchestrator,
    RetryPolicies,
    SagaState,
    ServiceClients,
    services,
)
from saga.clients import fast_transport
from saga.orchestrator import same_account_problem
from saga.records import service_id
from saga.replicas import Replicas, describe, first_reachable, parse_urls, unreachable
from saga.run import TransferResult
from saga.steps import DEBIT, StepAnswer, send
from tests.in_process.test_saga_workflow import FAST, POLICIES, bank, ledger
from tests.support.ports import dead_url

DEAD = "http://dead.test"
LIVE = "http://bank.test"


# -- parsing and validation ------------------------------------------------------------------------


def test_a_comma_list_parses_in_order_without_trailing_slashes_or_repeats() -> None:
    assert parse_urls("http://a:1/, https://b:2 ,http://a:1") == ("http://a:1", "https://b:2")
    assert parse_urls("http://a:1") == ("http://a:1",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty URL"),
        ("http://a,,http://b", "empty URL"),
        ("http://a,", "empty URL"),
        (" , http://a", "empty URL"),
        ("http://a,bank.test:8000", "must start with http:// or https://"),
        ("ftp://a", "must start with http:// or https://"),
        ("http://", "names no host"),
        ("http://a b", "whitespace"),
    ],
)
def test_bad_url_lists_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_urls(text)
    assert "\n" not in str(refused.value)


def test_an_account_ref_of_one_url_and_of_a_tuple() -> None:
    assert AccountRef("http://a", "alice") == AccountRef(urls=("http://a",), user_id="alice")
    both = AccountRef(urls=("http://b", "http://a"), user_id="alice")
    assert both.urls == ("http://b", "http://a"), "the order given is the order tried"
    assert AccountRef("http://b,http://a", "alice") == both
    assert str(both) == "alice@http://b,http://a"


def test_the_service_identity_does_not_depend_on_the_order_of_its_urls() -> None:
    assert (
        AccountRef(("http://b", "http://a"), "x").service_url == AccountRef(("http://a", "http://b"), "y").service_url
    )
    assert service_id("http://a") == "http://a"
    assert AccountRef(service_id(("http://b", "http://a")), "x").urls == ("http://a", "http://b")


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        (AccountRef(("http://a", "http://b"), "alice"), AccountRef(("http://b", "http://a"), "alice"), "same account"),
        (AccountRef(("http://a", "http://b"), "alice"), AccountRef("http://b", "alice"), "same account"),
        (AccountRef(("http://a", "http://b"), "alice"), AccountRef(("http://b", "http://c"), "bob"), "different URLs"),
        (AccountRef(("http://a", "http://b"), "alice"), AccountRef(("http://b", "http://a"), "bob"), None),
        (AccountRef(("http://a", "http://b"), "alice"), AccountRef("http://c", "alice"), None),
        (AccountRef("http://127.0.0.1:8000", "alice"), AccountRef("http://localhost:8000", "alice"), "same account"),
        (AccountRef("http://127.0.0.1:8000", "alice"), AccountRef("http://[::1]:8000/", "alice"), "same account"),
        (AccountRef("HTTP://Bank.Test", "alice"), AccountRef("http://bank.test:80/", "alice"), "same account"),
        (AccountRef("https://bank.test", "alice"), AccountRef("https://bank.test:443", "alice"), "same account"),
        (AccountRef("http://127.0.0.1:8000", "alice"), AccountRef("http://localhost:8000", "bob"), "two spellings"),
        (AccountRef("http://127.0.0.1:8000", "alice"), AccountRef("http://127.0.0.1:8001", "alice"), None),
        (AccountRef("http://bank.test", "alice"), AccountRef("https://bank.test", "alice"), None),
    ],
)
def test_the_same_account_check_compares_sets_of_urls(
    source: AccountRef, target: AccountRef, problem: str | None
) -> None:
    found = same_account_problem(source, target)
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (AccountRef((), "alice"), "no service URL"),
        (AccountRef(("http://a", "bank.test"), "alice"), "'bank.test' must start with http://"),
    ],
)
def test_the_orchestrator_refuses_bad_urls_before_logging(source: AccountRef, message: str) -> None:
    log = MemorySagaLog()

    async def run() -> None:
        async with Orchestrator(log) as orchestrator:
            await orchestrator.transfer(source, AccountRef("http://c", "bob"), 1)

    with pytest.raises(InvalidTransfer, match=message):
        asyncio.run(run())
    assert asyncio.run(log.sagas()) == []


# -- which failures move on to the next URL ---------------------------------------------------------

REQUEST = httpx.Request("POST", "http://a/debit")


def caused_by(error: httpx.TransportError, cause: BaseException) -> httpx.TransportError:
    error.__cause__ = cause
    return error


def connector_error() -> aiohttp.ClientConnectorError:
    key: Any = None
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


@pytest.mark.parametrize(
    ("error", "moves_on"),
    [
        (httpx.ConnectError("refused", request=REQUEST), True),
        # httpx-aiohttp's name for a refused connection: only the cause says so.
        (caused_by(httpx.ConnectTimeout("refused"), connector_error()), True),
        (caused_by(httpx.ConnectTimeout("dropped"), aiohttp.ServerDisconnectedError()), False),
        (httpx.ConnectTimeout("connect timed out", request=REQUEST), False),
        (httpx.ReadTimeout("no answer", request=REQUEST), False),
        (httpx.ReadError("broken mid-answer", request=REQUEST), False),
        (httpx.RemoteProtocolError("server hung up", request=REQUEST), False),
        (TimeoutError(), False),
    ],
)
def test_only_a_connection_that_was_never_made_moves_on(error: BaseException, moves_on: bool) -> None:
    assert unreachable(error) is moves_on


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_refused_connection_on_a_real_socket_moves_on(transport: str) -> None:
    async def attempt() -> BaseException:
        async with httpx.AsyncClient(transport=fast_transport() if transport == "aiohttp" else None) as client:
            try:
                await client.post(f"{dead_url()}/debit")
            except Exception as error:
                return error
        raise AssertionError("a dead port answered")

    assert unreachable(asyncio.run(attempt()))


def test_a_refused_connection_is_logged_as_a_refused_connection() -> None:
    async def attempt() -> StepAnswer:
        async with Orchestrator(MemorySagaLog()) as orchestrator:
            url = dead_url()
            return await send(
                orchestrator.client_for(url), DEBIT, "t-1", "alice", 5, number=1, request_timeout=5, url=url
            )

    answer = asyncio.run(attempt())
    assert answer.unreachable
    assert answer.attempt.error == "unreachable: ConnectError: connection refused"


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (caused_by(httpx.ConnectTimeout("refused"), connector_error()), "ConnectError: connection refused"),
        (caused_by(httpx.ConnectTimeout("dropped"), aiohttp.ServerDisconnectedError()), "ServerDisconnectedError"),
        (caused_by(httpx.ConnectTimeout("slow"), aiohttp.ConnectionTimeoutError()), "ConnectTimeout"),
        (httpx.ReadTimeout("no answer", request=REQUEST), "ReadTimeout"),
    ],
)
def test_transport_errors_are_named_by_their_real_kind(error: BaseException, named: str) -> None:
    assert describe(error) == named


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


A, B, C = "http://a", "http://b", "http://c"


def chosen(replicas: Replicas, urls: tuple[str, ...], requests: int) -> list[str | None]:
    return [replicas.choose(urls) for _ in range(requests)]


def test_requests_take_the_urls_in_turn_the_first_in_the_order_given() -> None:
    assert chosen(Replicas(Clock()), (A, B, C), 7) == [A, B, C, A, B, C, A]


def test_the_urls_are_shared_by_every_spelling_of_a_service_and_apart_from_other_services() -> None:
    replicas = Replicas(Clock())
    assert chosen(replicas, (A, B), 1) + chosen(replicas, (B, A), 1) + chosen(replicas, (A, B), 2) == [A, B, A, B]
    assert chosen(replicas, (C,), 3) == [C, C, C], "one URL is every request's"


def test_a_request_that_could_not_connect_is_given_each_other_url_once() -> None:
    replicas = Replicas(Clock())
    assert [replicas.choose((A, B, C), tried) for tried in ([], [A], [A, B], [A, B, C])] == [A, B, C, None]


def test_a_url_that_refused_a_connection_is_chosen_only_after_the_others_until_it_is_due_again() -> None:
    clock = Clock()
    replicas = Replicas(clock, down_for=5.0)
    replicas.unreachable(B)
    assert replicas.is_down(B)
    assert chosen(replicas, (A, B, C), 4) == [A, C, A, C]
    assert replicas.choose((A, B, C), tried=[A, C]) == B, "still tried, last, when the others refuse too"
    clock.now = 4.9
    assert chosen(replicas, (A, B, C), 2) == [A, C]
    clock.now = 5.0
    assert not replicas.is_down(B)
    assert chosen(replicas, (A, B, C), 3) == [B, A, C], "back in turn, least recently chosen first"


def test_a_url_refusing_again_stays_down_and_one_reached_is_up_at_once() -> None:
    clock = Clock()
    replicas = Replicas(clock, down_for=5.0)
    replicas.unreachable(A)
    clock.now = 6.0
    assert replicas.choose((A, B)) == A, "due again"
    replicas.unreachable(A)
    assert chosen(replicas, (A, B), 2) == [B, B]
    replicas.reached(A)
    assert chosen(replicas, (A, B), 2) == [A, B]


def test_when_every_url_is_down_the_one_down_longest_comes_first() -> None:
    clock = Clock()
    replicas = Replicas(clock, down_for=5.0)
    replicas.unreachable(B)
    clock.now = 1.0
    replicas.unreachable(A)
    assert replicas.choose((A, B)) == B
    assert replicas.choose((A, B), tried=[B]) == A


def test_concurrent_reads_spread_over_the_replicas_and_their_failovers_too_then_skip_the_dead_one() -> None:
    other = "http://other.test"
    urls = (DEAD, LIVE, other)
    calls: list[str] = []

    async def call(url: str) -> str:
        calls.append(url)
        await asyncio.sleep(0)
        if url == DEAD:
            raise httpx.ConnectError("connection refused")
        return url

    async def read(replicas: Replicas, reads: int) -> list[str]:
        return list(await asyncio.gather(*(first_reachable(urls, replicas, call) for _ in range(reads))))

    async def read_twice() -> tuple[list[str], list[str]]:
        replicas = Replicas(Clock())
        return await read(replicas, 12), await read(replicas, 6)

    at_once, later = asyncio.run(read_twice())
    # A third of the first twelve went to the dead URL before anyone knew; they moved on evenly.
    assert calls[:12].count(DEAD) == 4
    assert (at_once.count(LIVE), at_once.count(other)) == (6, 6)
    assert calls.count(DEAD) == 4, "down once it refused"
    assert (later.count(LIVE), later.count(other)) == (3, 3)


# -- failover in a saga, against an in-process service ---------------------------------------------


class OneDeadReplica(httpx.AsyncBaseTransport):
    """``http://bank.test`` is the app; ``http://dead.test`` refuses every connection.

    ``lose_first`` loses the answer of that many ledger requests to the live
    replica after applying them: an outcome the saga cannot know.
    """

    def __init__(self, app: Any, lose_first: int = 0) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.lose_first = lose_first
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        if request.url.host == "dead.test":
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and self.lose_first:
            self.lose_first -= 1
            await response.aread()
            raise httpx.ReadTimeout("response lost", request=request)
        return response


def transfer_through(
    transport: OneDeadReplica, urls: tuple[str, ...], policies: RetryPolicies = POLICIES
) -> tuple[TransferResult, MemorySagaLog]:
    log = MemorySagaLog()

    async def run() -> TransferResult:
        orchestrator = Orchestrator(log, policies=policies, transport=transport, rng=random.Random(1))
        return await orchestrator.transfer(AccountRef(urls, "alice"), AccountRef(urls, "bob"), 100)

    return asyncio.run(run()), log


def test_a_refused_connection_moves_the_same_attempt_to_the_next_url() -> None:
    app = bank()
    transport = OneDeadReplica(app)
    result, log = transfer_through(transport, (DEAD, LIVE))
    assert result.state is SagaState.COMPLETED
    assert [(a.step, a.number, a.url, a.status) for a in result.attempts] == [
        ("debit", 1, DEAD, None),
        ("debit", 1, LIVE, 200),
        ("credit", 1, LIVE, 200),  # the live URL is now tried first
    ]
    assert result.attempts[0].error == "unreachable: ConnectError: connection refused"
    assert result.retries == 0, "moving to another URL is not a retry"
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)
    logged = [event.attempt.url for event in asyncio.run(log.history(result.transaction_id)) if event.attempt]
    assert logged == [DEAD, LIVE, LIVE]


def test_a_lost_answer_is_retried_not_moved_to_another_url() -> None:
    app = bank()
    transport = OneDeadReplica(app, lose_first=1)
    result, _ = transfer_through(transport, (LIVE, DEAD))
    assert result.state is SagaState.COMPLETED
    # The lost answer is a failed attempt, retried after its backoff; the
    # retry is a new choice of URL, and moves on from the dead one at once.
    assert [(a.step, a.number, a.url, a.error) for a in result.attempts] == [
        ("debit", 1, LIVE, "ReadTimeout"),
        ("debit", 2, DEAD, "unreachable: ConnectError: connection refused"),
        ("debit", 2, LIVE, None),
        ("credit", 1, LIVE, None),
    ]
    assert ledger(app).balance("alice") == 900, "the replayed debit applied once"


def test_when_no_url_can_be_reached_the_attempt_counts_as_unknown() -> None:
    app = bank()
    transport = OneDeadReplica(app)
    few_compensations = RetryPolicies(debit=FAST, credit=FAST, compensation=FAST)
    result, _ = transfer_through(transport, (DEAD,), few_compensations)
    # The debit never got through, but the saga stays on the safe side: it
    # compensates, and with the only URL dead the compensation cannot finish.
    assert [(a.step, a.number) for a in result.attempts] == [
        ("debit", 1),
        ("debit", 2),
        ("debit", 3),
        ("compensate_debit", 1),
        ("compensate_debit", 2),
        ("compensate_debit", 3),
    ]
    assert result.state is SagaState.COMPENSATING
    assert ledger(app).balance("alice") == 1_000


def test_reads_fail_over_and_count_a_service_once() -> None:
    app = bank()

    async def read() -> dict[str, dict[str, int]]:
        async with ServiceClients(transport=OneDeadReplica(app)) as reader:
            assert await services.balances(reader, (DEAD, LIVE)) == {"alice": 1_000, "bob": 1_000}
            return await services.snapshot(reader, [(DEAD, LIVE), (LIVE, DEAD)])

    assert asyncio.run(read()) == {service_id((DEAD, LIVE)): {"alice": 1_000, "bob": 1_000}}


def test_a_read_with_no_reachable_url_reports_the_service_unavailable() -> None:
    async def read() -> None:
        async with ServiceClients(transport=OneDeadReplica(bank())) as reader:
            with pytest.raises(services.ServiceUnavailable, match="cannot reach"):
                await services.balances(reader, (DEAD,))

    asyncio.run(read())
