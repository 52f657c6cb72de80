"""The benchmark's bare ledger: the contract's shapes, a required transaction_id, and a repeat that changes nothing."""

from __future__ import annotations

import httpx

from evaluation.bare_ledger import bare_ledger_app
from generated_client.accounts import Client
from generated_client.accounts.api.ledger import compensate_debit, credit, debit
from generated_client.accounts.models import LedgerRequest, LedgerResult, Operation, Outcome
from tests.support.aio import run

URL = "http://bare.test"


def bare_client(accounts: dict[str, int]) -> tuple[httpx.AsyncClient, Client]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=bare_ledger_app(accounts)), base_url=URL)
    return http, Client(base_url=URL, raise_on_unexpected_status=True).set_async_httpx_client(http)


async def balance_after_debit_of_one(client: Client, transaction_id: str) -> int:
    answer = await debit.asyncio(client=client, body=LedgerRequest("alice", 1), transaction_id=transaction_id)
    assert isinstance(answer, LedgerResult)
    return answer.balance


def test_the_generated_client_reads_each_answer_as_a_ledger_result() -> None:
    async def scenario() -> tuple[object, object]:
        _, client = bare_client({"alice": 100, "bob": 0})
        debited = await debit.asyncio(client=client, body=LedgerRequest("alice", 30), transaction_id="t-1")
        credited = await credit.asyncio(client=client, body=LedgerRequest("bob", 30), transaction_id="t-1")
        return debited, credited

    assert run(scenario()) == (
        LedgerResult("t-1", Operation.DEBIT, "alice", 30, 70, Outcome.APPLIED),
        LedgerResult("t-1", Operation.CREDIT, "bob", 30, 30, Outcome.APPLIED),
    )


def test_a_repeated_transaction_id_answers_200_with_the_first_answer_and_moves_nothing() -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response, int]:
        http, client = bare_client({"alice": 100})
        first = await http.post("/debit", json={"user_id": "alice", "amount": 30}, headers={"transaction_id": "t-1"})
        again = await http.post("/debit", json={"user_id": "alice", "amount": 30}, headers={"transaction_id": "t-1"})
        return first, again, await balance_after_debit_of_one(client, "t-2")

    first, again, balance = run(scenario())
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert balance == 69


def test_a_request_without_a_transaction_id_is_refused_and_moves_nothing() -> None:
    async def scenario() -> tuple[httpx.Response, int]:
        http, client = bare_client({"alice": 100})
        refused = await http.post("/debit", json={"user_id": "alice", "amount": 30})
        return refused, await balance_after_debit_of_one(client, "t-1")

    refused, balance = run(scenario())
    assert refused.status_code == 422
    assert balance == 99


def test_a_compensation_reverses_what_it_finds_and_voids_what_it_does_not() -> None:
    async def scenario() -> tuple[object, object]:
        _, client = bare_client({"alice": 100})
        body = LedgerRequest("alice", 30)
        await debit.asyncio(client=client, body=body, transaction_id="t-1")
        reversed_debit = await compensate_debit.asyncio(client=client, body=body, transaction_id="t-1")
        voided = await compensate_debit.asyncio(client=client, body=body, transaction_id="t-2")
        return reversed_debit, voided

    reversed_debit, voided = run(scenario())
    assert reversed_debit == LedgerResult("t-1", Operation.COMPENSATE_DEBIT, "alice", 30, 100, Outcome.REVERSED)
    assert voided == LedgerResult("t-2", Operation.COMPENSATE_DEBIT, "alice", 30, 100, Outcome.VOIDED)


def test_a_debit_beyond_the_balance_is_refused() -> None:
    async def scenario() -> httpx.Response:
        http, _ = bare_client({"alice": 10})
        return await http.post("/debit", json={"user_id": "alice", "amount": 11}, headers={"transaction_id": "t-1"})

    refused = run(scenario())
    assert (refused.status_code, refused.json()["code"]) == (409, "insufficient_funds")
