"""Where one transfer's time goes: the saga log's commits, the client stack and the service, per attempt.

The saga runs on the virtual clock against a mock transport whose answers
take a known time and carry a known ``Server-Timing``, over a log whose every
commit takes a known time, so each part of the split is exact.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import httpx
import pytest

from saga import AccountRef, MemorySagaLog, Orchestrator, TransferResult
from saga.clients import LeanAsyncClient
from saga.records import Attempt, Change, SagaRecord
from saga.simulation.clock import run_in_virtual_time
from saga.states import SagaState
from saga.telemetry.metrics import SagaMetrics

URL = "http://bank.test"
COMMIT_SECONDS = 0.002
ANSWER_SECONDS = 0.001
SERVER_TIMING = "store;dur=0.150, total;dur=0.400"


class SlowCommits(MemorySagaLog):
    """A log whose every write takes COMMIT_SECONDS, as an fsync would."""

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        await asyncio.sleep(COMMIT_SECONDS)
        await super().create(saga, first_state)

    async def commit_all(self, changes: Sequence[Change]) -> None:
        await asyncio.sleep(COMMIT_SECONDS)
        await super().commit_all(changes)


class TimedBank(httpx.AsyncBaseTransport):
    """Applies every request after ANSWER_SECONDS and says it spent 0.4 ms on it."""

    def __init__(self, server_timing: str | None = SERVER_TIMING, answer_seconds: float = ANSWER_SECONDS) -> None:
        self.server_timing = server_timing
        self.answer_seconds = answer_seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.answer_seconds)
        body = json.loads(request.content)
        operation = request.url.path.strip("/")
        headers = {"ledger-id": "ledger-1", "ledger-position": "1"}
        if self.server_timing is not None:
            headers["server-timing"] = self.server_timing
        answer = {
            "transaction_id": request.headers["transaction_id"],
            "operation": operation,
            "user_id": body["user_id"],
            "amount": body["amount"],
            "balance": 1_000,
            "outcome": "applied",
        }
        return httpx.Response(200, json=answer, headers=headers)


def transfer(transport: httpx.AsyncBaseTransport) -> TransferResult:
    async def run() -> TransferResult:
        async with Orchestrator(SlowCommits(exclusive=True), transport=transport) as orchestrator:
            return await orchestrator.transfer(AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)

    return run_in_virtual_time(run())


def test_each_attempt_records_its_wait_for_the_log_its_time_at_the_service_and_the_rest_as_the_client_stack() -> None:
    result = transfer(TimedBank())

    assert result.state is SagaState.COMPLETED
    debit, credit = result.attempts
    # The debit needs nothing beyond its saga's creation, durable before it; the credit waits for
    # the debit's answer, the first from that ledger, to be durable.
    assert (debit.log_wait_us, credit.log_wait_us) == (0, 2_000)
    assert (debit.server_us, credit.server_us) == (400, 400)
    assert (debit.client_us, credit.client_us) == (600, 600)


def test_a_transfer_counts_every_commit_it_waited_for_its_creation_included() -> None:
    result = transfer(TimedBank())

    # Creation, the debit's answer before the credit, and COMPLETED.
    assert result.log_wait_us == 3 * 2_000
    assert result.seconds == pytest.approx(3 * COMMIT_SECONDS + 2 * ANSWER_SECONDS)


def test_an_answer_without_server_timing_leaves_the_service_and_client_parts_unknown() -> None:
    result = transfer(TimedBank(server_timing=None))

    assert all(attempt.server_us is None and attempt.client_us is None for attempt in result.attempts)


def test_the_metrics_export_each_part_of_an_attempt_as_a_histogram() -> None:
    metrics = SagaMetrics()
    attempt = Attempt("debit", 1, 200, None, 1_000, log_wait_us=2_000, server_us=400)

    metrics.attempts([attempt, Attempt("credit", 1, None, None, 5_000, error="timeout")])

    def observed(part: str, statistic: str) -> float | None:
        return metrics.registry.get_sample_value(f"saga_attempt_split_seconds_{statistic}", {"part": part})

    assert observed("log_wait", "sum") == pytest.approx(0.002)
    assert observed("server", "sum") == pytest.approx(0.0004)
    assert observed("client", "sum") == pytest.approx(0.0006)
    # The timed-out credit has no answer to split: only its wait for the log (none given) could count.
    assert observed("server", "count") == 1


# -- the lean client ---------------------------------------------------------------


def lean(base_url: str, handler: httpx.MockTransport) -> LeanAsyncClient:
    return LeanAsyncClient(base_url=base_url, transport=handler)


@pytest.mark.parametrize("base_url", ["http://bank.test", "http://bank.test/", "http://bank.test/bank-a"])
@pytest.mark.parametrize("path", ["/debit", "debit", "/transactions/t%201"])
def test_the_lean_client_builds_the_url_httpx_builds(base_url: str, path: str) -> None:
    expected = httpx.AsyncClient(base_url=base_url).build_request("POST", path).url
    client = lean(base_url, httpx.MockTransport(lambda request: httpx.Response(200)))

    # Twice: the second comes from what the first remembered.
    assert client.build_request("POST", path).url == expected
    assert client.build_request("POST", path).url == expected


def test_the_lean_client_keeps_no_cookie_a_service_sets() -> None:
    cookies_sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cookies_sent.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"})

    async def run() -> None:
        async with lean(URL, httpx.MockTransport(handler)) as client:
            await client.post("/debit", json={})
            await client.post("/debit", json={})

    asyncio.run(run())
    assert cookies_sent == [None, None]


def test_the_lean_client_answers_a_redirect_as_it_came_and_refuses_to_follow_one() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://elsewhere.test/debit"})

    async def run() -> None:
        async with lean(URL, httpx.MockTransport(handler)) as client:
            answer = await client.post("/debit", json={})
            assert (answer.status_code, answer.request.url.host) == (307, "bank.test")
            with pytest.raises(ValueError, match="no redirects followed"):
                await client.post("/debit", json={}, follow_redirects=True)
            with pytest.raises(ValueError, match="no auth flow"):
                await client.post("/debit", json={}, auth=("user", "secret"))

    asyncio.run(run())


def test_the_lean_client_reads_the_whole_answer_before_returning_it() -> None:
    async def run() -> bytes:
        async with lean(
            URL, httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 100_000))
        ) as client:
            answer = await client.post("/debit", json={})
        # The client is closed: the body was read before.
        return answer.content

    assert len(asyncio.run(run())) == 100_000


# -- the clock ---------------------------------------------------------------------


class WholeMillisecondLoop(asyncio.SelectorEventLoop):
    """A loop whose clock moves in whole milliseconds, as uvloop's does."""

    def time(self) -> float:
        return int(super().time() * 1000) / 1000


def test_a_request_quicker_than_the_loops_clock_tick_is_timed_on_a_finer_clock() -> None:
    class QuickBank(TimedBank):
        """Answers after a tenth of a millisecond of work, which a whole-millisecond clock does not see."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            until = time.perf_counter() + 0.0001
            while time.perf_counter() < until:
                pass
            return await super().handle_async_request(request)

    async def run() -> TransferResult:
        bank = QuickBank(answer_seconds=0)
        async with Orchestrator(MemorySagaLog(exclusive=True), transport=bank) as orchestrator:
            return await orchestrator.transfer(AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)

    with asyncio.Runner(loop_factory=WholeMillisecondLoop) as runner:
        result = runner.run(run())

    assert all(attempt.latency_us >= 100 for attempt in result.attempts)
    assert result.seconds >= 0.0002
