"""The simulated network, one fault at a time, against a real accounts service app."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import httpx
import pytest

from saga.simulation.clock import run_in_virtual_time
from saga.simulation.faults import (
    CRASH,
    DELAY_REORDER,
    DUPLICATE_LATE,
    OUTAGE,
    REQUEST_LOST,
    RESPONSE_LOST,
    FaultRates,
    MillisecondRange,
    TraceEvent,
    no_faults,
)
from saga.simulation.network import SimulatedNetwork
from server import Settings, create_app
from server.ledger import Ledger

HOST = "bank.sim"
OPENING = 1_000

_Result = TypeVar("_Result")


@dataclass
class Bank:
    network: SimulatedNetwork
    ledger: Ledger
    trace: list[TraceEvent]
    client: httpx.AsyncClient


def run_with_bank(rates: FaultRates, scenario: Callable[[Bank], Awaitable[_Result]]) -> tuple[Bank, _Result]:
    """Run ``scenario`` on the virtual clock against one service behind a network with ``rates``."""

    async def main() -> tuple[Bank, _Result]:
        app = create_app(Settings(accounts={"alice": OPENING}, credit_fault_rate=0.0))
        trace: list[TraceEvent] = []
        network = SimulatedNetwork({HOST: app}, rates, random.Random(7), trace)
        async with httpx.AsyncClient(transport=network, base_url=f"http://{HOST}") as client:
            bank = Bank(network, app.state.ledger, trace, client)
            result = await scenario(bank)
            await network.drain()
        return bank, result

    return run_in_virtual_time(main())


async def debit(bank: Bank, transaction_id: str = "t-1", amount: int = 100) -> httpx.Response:
    return await bank.client.post(
        "/debit", headers={"transaction_id": transaction_id}, json={"user_id": "alice", "amount": amount}
    )


def test_without_faults_a_request_reaches_the_server_and_its_answer_comes_back() -> None:
    bank, response = run_with_bank(no_faults(), debit)
    assert response.status_code == 200
    assert response.json()["balance"] == OPENING - 100
    assert bank.ledger.balance("alice") == OPENING - 100
    assert [(event.kind, event.step, event.answer) for event in bank.trace] == [("send", "debit", "200 applied")]
    assert sum(bank.network.counts.values()) == 0


def test_a_lost_request_never_reaches_the_server() -> None:
    async def scenario(bank: Bank) -> None:
        with pytest.raises(httpx.ConnectError):
            await debit(bank)

    bank, _ = run_with_bank(replace(no_faults(), request_lost=1.0), scenario)
    assert bank.ledger.balance("alice") == OPENING
    assert bank.network.counts[REQUEST_LOST] == 1


def test_a_lost_response_fails_fast_after_the_server_applied_the_request() -> None:
    async def scenario(bank: Bank) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await debit(bank)

    bank, _ = run_with_bank(replace(no_faults(), response_lost=1.0, response_hangs=0.0), scenario)
    assert bank.ledger.balance("alice") == OPENING - 100
    assert bank.network.counts[RESPONSE_LOST] == 1


def test_a_hanging_response_lasts_until_the_client_gives_up() -> None:
    async def scenario(bank: Bank) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5.0):
                await debit(bank)
        return loop.time() - started

    bank, waited = run_with_bank(replace(no_faults(), response_lost=1.0, response_hangs=1.0), scenario)
    assert waited == pytest.approx(5.0)
    assert bank.ledger.balance("alice") == OPENING - 100


def test_a_late_duplicate_lands_after_the_original_and_is_answered_as_a_replay() -> None:
    rates = replace(no_faults(), duplicate_late=1.0, duplicate_delay_ms=MillisecondRange(5_000, 5_000))
    bank, response = run_with_bank(rates, debit)
    assert response.status_code == 200
    original, duplicate = bank.trace
    assert (duplicate.kind, duplicate.answer) == ("duplicate", "200 applied replayed")
    assert duplicate.at_ms - original.at_ms == 5_000
    assert bank.ledger.balance("alice") == OPENING - 100
    assert bank.network.counts[DUPLICATE_LATE] == 1


def test_a_request_on_the_wire_lands_even_when_its_client_is_gone() -> None:
    rates = replace(no_faults(), latency_ms=MillisecondRange(50, 50))

    async def scenario(bank: Bank) -> None:
        sending = asyncio.create_task(debit(bank))
        await asyncio.sleep(0.01)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

    bank, _ = run_with_bank(rates, scenario)
    assert bank.ledger.balance("alice") == OPENING - 100


def test_a_slow_request_takes_the_slow_latency_on_one_of_its_legs() -> None:
    rates = replace(no_faults(), slow=1.0, slow_latency_ms=MillisecondRange(400, 400))

    async def scenario(bank: Bank) -> list[float]:
        loop = asyncio.get_running_loop()

        async def timed_debit(transaction_id: str) -> float:
            await debit(bank, transaction_id)
            return loop.time()

        return list(await asyncio.gather(*(timed_debit(f"t-{number}") for number in range(4))))

    bank, finished_at = run_with_bank(rates, scenario)
    assert bank.network.counts[DELAY_REORDER] == 4
    assert all(0.4 <= at <= 0.41 for at in finished_at)


def test_an_outage_takes_the_service_off_the_network_for_a_while() -> None:
    rates = replace(no_faults(), outage=1.0, outage_ms=MillisecondRange(1_000, 1_000), response_hangs=0.0)

    async def scenario(bank: Bank) -> None:
        with pytest.raises(httpx.TransportError):
            await debit(bank)

    bank, _ = run_with_bank(rates, scenario)
    assert bank.network.counts[OUTAGE] == 1
    assert bank.trace[0].kind == "outage"


def test_a_partition_that_holds_requests_breaks_the_connection_and_delivers_them_when_it_heals() -> None:
    # Every request starts a new outage of a random kind: some of them hold.
    rates = replace(no_faults(), outage=1.0, outage_ms=MillisecondRange(1_000, 1_000), response_hangs=0.0)

    async def scenario(bank: Bank) -> list[str]:
        outcomes = []
        for number in range(12):
            try:
                await debit(bank, f"t-{number}", amount=1)
                outcomes.append("answered")
            except httpx.TransportError as error:
                outcomes.append(type(error).__name__)
        return outcomes

    bank, outcomes = run_with_bank(rates, scenario)
    assert "ReadError" in outcomes
    held = [event.transaction_id for event in bank.trace if event.fault.startswith("outage:held")]
    landed = [event for event in bank.trace if event.transaction_id in held and event.answer.startswith("200")]
    assert held
    assert sorted(event.transaction_id for event in landed) == sorted(held)
    assert all(event.at_ms >= 1_000 for event in landed)


def test_the_plan_tells_the_run_when_to_crash() -> None:
    async def scenario(bank: Bank) -> int:
        crashes: list[int] = []
        bank.network.on_crash = lambda: crashes.append(1)
        await debit(bank)
        return len(crashes)

    bank, crashes = run_with_bank(replace(no_faults(), crash=1.0), scenario)
    assert crashes == 1
    # The run counts crashes it carried out; the network only asks for them.
    assert bank.network.counts[CRASH] == 0


def test_reads_are_the_simulators_own_and_pass_untouched() -> None:
    async def scenario(bank: Bank) -> httpx.Response:
        return await bank.client.get("/accounts", headers={"transaction_id": "read-1"})

    bank, response = run_with_bank(replace(no_faults(), request_lost=1.0), scenario)
    assert response.status_code == 200
    assert response.json() == {"accounts": [{"user_id": "alice", "balance": OPENING}]}
    assert bank.network.requests == 0


def test_requests_landing_in_the_same_millisecond_are_handled_together() -> None:
    rates = replace(no_faults(), latency_ms=MillisecondRange(1, 1))

    async def scenario(bank: Bank) -> None:
        async def debit_after(seconds: float, transaction_id: str) -> None:
            await asyncio.sleep(seconds)
            await debit(bank, transaction_id)

        await asyncio.gather(debit_after(0.0002, "t-1"), debit_after(0.0006, "t-2"))

    bank, _ = run_with_bank(rates, scenario)
    # Sent 0.2ms and 0.6ms in, 1ms on the wire: both land on the 2ms tick.
    assert [event.at_ms for event in bank.trace] == [2, 2]
