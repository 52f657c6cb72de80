"""Reads of the accounts services through clients of their own, and what a ledger watch makes of them."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from saga import MemorySagaLog, Orchestrator, RetryPolicies, RetryPolicy, ServiceClients, services
from saga.ledger_watch import LedgerWatch
from saga.ledgers import LedgerWentBack

BANK = "http://bank.test"


def listing(positions: list[int], accounts: list[dict[str, object]], seen: list[httpx.Request]) -> httpx.MockTransport:
    """A service whose account lists answer at each of ``positions`` in turn, on one ledger."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        position = positions[min(len(seen), len(positions)) - 1]
        headers = {"Ledger-Id": "ledger-1", "Ledger-Position": str(position)}
        return httpx.Response(200, json={"accounts": accounts}, headers=headers)

    return httpx.MockTransport(answer)


ALICE = {"user_id": "alice", "balance": 70, "opening_balance": 100}


def test_what_was_opened_between_two_snapshots_comes_from_the_second_listing() -> None:
    before = {"http://a": {"alice": 100}, "http://b": {"bob": 5}}
    after = services.Snapshot(
        {"http://a": {"alice": 40, "dora": 90}, "http://b": {"bob": 5}, "http://c": {"erin": 3}},
        {"http://a": {"alice": 100, "dora": 30}, "http://b": {"bob": 5}, "http://c": {"erin": 1}},
    )
    # The opening balance, not the balance now; a service with nothing new is not named.
    assert services.opened_between(before, after) == {"http://a": {"dora": 30}, "http://c": {"erin": 1}}
    assert after == {"http://a": {"alice": 40, "dora": 90}, "http://b": {"bob": 5}, "http://c": {"erin": 3}}


def test_a_snapshot_keeps_each_account_s_opening_balance_from_its_one_listing() -> None:
    seen: list[httpx.Request] = []

    async def read() -> services.Snapshot:
        async with ServiceClients(transport=listing([3], [ALICE], seen), token="secret") as reader:
            return await services.snapshot(reader, [BANK, BANK])

    snapshot = asyncio.run(read())
    assert (snapshot, snapshot.openings) == ({BANK: {"alice": 70}}, {BANK: {"alice": 100}})
    assert len(seen) == 1, "a service listed twice is read once"
    assert seen[0].headers["Authorization"] == "Bearer secret"


def test_a_ledger_that_went_back_is_quarantined_by_the_watch_of_the_read() -> None:
    log = MemorySagaLog()
    seen: list[httpx.Request] = []

    async def read() -> None:
        watch = LedgerWatch(log, lambda: 0)
        async with ServiceClients(transport=listing([5, 4], [ALICE], seen)) as reader:
            assert await services.balances(reader, BANK, watch) == {"alice": 70}
            with pytest.raises(LedgerWentBack, match="went back from position 5 to 4"):
                await services.snapshot(reader, [BANK], watch)

    asyncio.run(read())
    assert [quarantine.service for quarantine in asyncio.run(log.quarantines())] == [BANK]


def test_without_a_watch_a_read_judges_no_position() -> None:
    seen: list[httpx.Request] = []

    async def read() -> list[dict[str, int]]:
        async with ServiceClients(transport=listing([5, 4], [ALICE], seen)) as reader:
            return [await services.balances(reader, BANK), await services.balances(reader, BANK)]

    assert asyncio.run(read()) == [{"alice": 70}, {"alice": 70}]


def test_an_orchestrator_s_clients_carry_its_token_and_its_longest_request_timeout() -> None:
    async def clients() -> tuple[str | None, float]:
        policies = RetryPolicies(credit=RetryPolicy(request_timeout=12.0))
        transport = listing([1], [], [])
        async with Orchestrator(
            MemorySagaLog(), policies=policies, token="secret", transport=transport
        ) as orchestrator:
            assert orchestrator.client_for(BANK) is orchestrator.clients.client_for(BANK)
            return orchestrator.clients.token, orchestrator.clients.timeout

    assert asyncio.run(clients()) == ("secret", 12.0)
