"""The simulated network, one fault at a time, against a real accounts service app."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from saga.simulation.clock import run_in_virtual_time
from saga.simulation.faults import (
    CRASH,
    DELAY_REORDER,
    DUPLICATE_LATE,
    OUTAGE,
    REQUEST_LOST,
    RESPONSE_LOST,
    SERVICE_RESTART,
    STALE_CREDENTIALS,
    FaultRates,
    MillisecondRange,
    TraceEvent,
    no_faults,
)
from saga.simulation.network import SERVICE_TOKEN, SimulatedNetwork
from server import Settings, create_app
from server.ledger import Ledger
from server.stores.memory import MemoryStore

HOST = "bank.sim"
OPENING = 1_000

_Result = TypeVar("_Result")


@dataclass
class Bank:
    network: SimulatedNetwork
    store: MemoryStore
    trace: list[TraceEvent]
    client: httpx.AsyncClient

    @property
    def ledger(self) -> Ledger:
        return self.store.ledger


def run_with_bank(rates: FaultRates, scenario: Callable[[Bank], Awaitable[_Result]]) -> tuple[Bank, _Result]:
    """Run ``scenario`` on the virtual clock against one service behind a network with ``rates``."""

    async def main() -> tuple[Bank, _Result]:
        store = MemoryStore.create({"alice": OPENING})
        app = create_app(Settings(accounts={"alice": OPENING}, credit_fault_rate=0.0), store)
        trace: list[TraceEvent] = []
        network = SimulatedNetwork({HOST: app}, rates, random.Random(7), trace)
        async with httpx.AsyncClient(transport=network, base_url=f"http://{HOST}") as client:
            bank = Bank(network, store, trace, client)
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
    assert response.json() == {"accounts": [{"user_id": "alice", "balance": OPENING, "opening_balance": OPENING}]}
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


# -- a service that crashes and restarts ----------------------------------------

#: Every request crashes the service while the bank allows it (see crash_next_send).
RESTARTS = replace(
    no_faults(),
    service_restart=1.0,
    restart_downtime_ms=MillisecondRange(1_000, 1_000),
    latency_ms=MillisecondRange(50, 50),
)


def crash_next_send(bank: Bank, restarted: list[object]) -> None:
    """Let the next request crash the service; it comes back as a new app over the same, reloaded store."""

    def restart(host: str) -> ASGIApp:
        bank.store.reload()
        app = create_app(Settings(accounts={"alice": OPENING}, credit_fault_rate=0.0), bank.store)
        restarted.append(app)
        return app

    bank.network.on_restart = restart


async def crash_at(bank: Bank, seconds: float, restarted: list[object]) -> None:
    """At ``seconds`` in, a request crashes the service and is itself refused."""
    await asyncio.sleep(seconds)
    crash_next_send(bank, restarted)
    with pytest.raises(httpx.ConnectError):
        await debit(bank, "crasher", amount=1)
    bank.network.on_restart = None


def test_a_crashed_service_refuses_connections_then_comes_back_as_a_new_app_over_the_same_store() -> None:
    restarted: list[object] = []

    async def scenario(bank: Bank) -> list[int]:
        first = await debit(bank, "t-1")
        await crash_at(bank, 0.0, restarted)
        with pytest.raises(httpx.ConnectError):
            await debit(bank, "t-2")
        await asyncio.sleep(1.0)
        again = await debit(bank, "t-1")
        second = await debit(bank, "t-2")
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json() == first.json()
        return [first.json()["balance"], second.json()["balance"]]

    bank, balances = run_with_bank(RESTARTS, scenario)
    assert balances == [OPENING - 100, OPENING - 200]
    assert len(restarted) == 1
    assert bank.network.counts[SERVICE_RESTART] == 1
    assert [event.kind for event in bank.trace if event.kind in ("down", "up")] == ["down", "up"]
    bank.ledger.check_invariants()


# Down when the request arrives, or already back: either way its connection died with the crash.
@pytest.mark.parametrize("downtime_ms", [1_000, 20])
def test_a_request_on_the_wire_to_a_service_that_crashes_is_lost(downtime_ms: int) -> None:
    async def scenario(bank: Bank) -> None:
        async def sent_first() -> None:
            with pytest.raises(httpx.ReadError):
                await debit(bank, "t-1")

        # Sent at 0 and 50ms on the wire: the crash at 10ms gets there first.
        await asyncio.gather(sent_first(), crash_at(bank, 0.01, []))

    rates = replace(RESTARTS, restart_downtime_ms=MillisecondRange(downtime_ms, downtime_ms))
    bank, _ = run_with_bank(rates, scenario)
    assert bank.ledger.balance("alice") == OPENING
    assert bank.ledger.trail("t-1") == []
    assert any(event.kind == "dropped" and event.transaction_id == "t-1" for event in bank.trace)


def test_an_answer_on_its_way_back_from_a_service_that_crashes_is_lost_though_the_request_was_applied() -> None:
    async def scenario(bank: Bank) -> None:
        async def sent_first() -> None:
            with pytest.raises(httpx.ReadError):
                await debit(bank, "t-1")

        # Lands at 50ms, answer due at 100ms: the crash at 70ms cuts it off.
        await asyncio.gather(sent_first(), crash_at(bank, 0.07, []))

    bank, _ = run_with_bank(RESTARTS, scenario)
    assert bank.ledger.balance("alice") == OPENING - 100
    assert [entry.outcome for entry in bank.ledger.trail("t-1")] == ["applied"]


def test_a_request_the_service_is_handling_when_it_crashes_is_killed_where_it_is() -> None:
    # A handler that awaits partway, as a database store does: the crash lands in the middle.
    reached: list[str] = []

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append("started")
        await asyncio.sleep(1.0)
        reached.append("finished")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> tuple[SimulatedNetwork, list[TraceEvent]]:
        trace: list[TraceEvent] = []
        network = SimulatedNetwork({HOST: slow_app}, RESTARTS, random.Random(7), trace)
        async with httpx.AsyncClient(transport=network, base_url=f"http://{HOST}") as client:

            async def handled_when_the_crash_comes() -> None:
                with pytest.raises(httpx.ReadError):
                    await client.post("/debit", headers={"transaction_id": "t-1"}, json={})

            async def crash() -> None:
                await asyncio.sleep(0.5)
                network.on_restart = lambda host: slow_app
                with pytest.raises(httpx.ConnectError):
                    await client.post("/debit", headers={"transaction_id": "crasher"}, json={})
                network.on_restart = None

            await asyncio.gather(handled_when_the_crash_comes(), crash())
            await network.drain()
        return network, trace

    network, trace = run_in_virtual_time(main())
    assert reached == ["started"]
    assert network.counts[SERVICE_RESTART] == 1
    assert [(event.kind, event.transaction_id) for event in trace if event.kind == "dropped"] == [("dropped", "t-1")]


def test_a_service_whose_credentials_rotated_refuses_the_orchestrators_token_and_records_nothing() -> None:
    async def main() -> tuple[httpx.Response, MemoryStore, SimulatedNetwork, list[TraceEvent]]:
        store = MemoryStore.create({"alice": OPENING})
        app = create_app(Settings(accounts={"alice": OPENING}, credit_fault_rate=0.0, token=SERVICE_TOKEN), store)
        trace: list[TraceEvent] = []
        rates = replace(no_faults(), credential_rotation=1.0)
        network = SimulatedNetwork({HOST: app}, rates, random.Random(7), trace)
        headers = {"Authorization": f"Bearer {SERVICE_TOKEN}", "transaction_id": "t-1"}
        async with httpx.AsyncClient(transport=network, base_url=f"http://{HOST}") as client:
            response = await client.post("/debit", headers=headers, json={"user_id": "alice", "amount": 100})
            await network.drain()
        return response, store, network, trace

    response, store, network, trace = run_in_virtual_time(main())
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")
    assert store.ledger.balance("alice") == OPENING
    assert store.ledger.trail("t-1") == []
    assert network.counts[STALE_CREDENTIALS] == 1
    assert [(event.kind, event.answer) for event in trace] == [("rotated", ""), ("send", "401 unauthorized")]
