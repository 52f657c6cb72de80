"""A live ``python -m server`` driven through the generated client, sync and async, on every operation."""

from __future__ import annotations

import asyncio

import httpx

from generated_client.accounts import AuthenticatedClient, Client
from generated_client.accounts.api.accounts import get_account, get_transaction, list_accounts
from generated_client.accounts.api.ledger import compensate_credit, compensate_debit, credit, debit
from generated_client.accounts.models import (
    AccountList,
    ErrorCode,
    LedgerRequest,
    LedgerResult,
    Operation,
    Outcome,
    Problem,
    TransactionTrail,
)
from tests.conftest import StartServer


def body(user_id: str, amount: int) -> LedgerRequest:
    return LedgerRequest(user_id=user_id, amount=amount)


def test_every_operation_sync(start_server: StartServer) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    with Client(base_url=server.url, raise_on_unexpected_status=True) as client:
        debited = debit.sync(client=client, body=body("alice", 300), transaction_id="t1")
        assert isinstance(debited, LedgerResult)
        assert (debited.operation, debited.outcome, debited.balance) == (Operation.DEBIT, Outcome.APPLIED, 700)

        replay = debit.sync_detailed(client=client, body=body("alice", 300), transaction_id="t1")
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.parsed == debited

        credited = credit.sync(client=client, body=body("bob", 300), transaction_id="t1")
        assert isinstance(credited, LedgerResult)
        assert credited.balance == 300

        reversed_credit = compensate_credit.sync(client=client, body=body("bob", 300), transaction_id="t1")
        assert isinstance(reversed_credit, LedgerResult)
        assert (reversed_credit.outcome, reversed_credit.balance) == (Outcome.REVERSED, 0)

        reversed_debit = compensate_debit.sync(client=client, body=body("alice", 300), transaction_id="t1")
        assert isinstance(reversed_debit, LedgerResult)
        assert (reversed_debit.outcome, reversed_debit.balance) == (Outcome.REVERSED, 1_000)

        accounts = list_accounts.sync(client=client, transaction_id="read-1")
        assert isinstance(accounts, AccountList)
        assert [(account.user_id, account.balance) for account in accounts.accounts] == [("alice", 1_000), ("bob", 0)]

        alice = get_account.sync("alice", client=client, transaction_id="read-2")
        assert not isinstance(alice, Problem)
        assert alice is not None
        assert alice.balance == 1_000

        trail = get_transaction.sync("t1", client=client, transaction_id_header="read-3")
        assert isinstance(trail, TransactionTrail)
        assert [entry.operation for entry in trail.entries] == [
            Operation.DEBIT,
            Operation.CREDIT,
            Operation.COMPENSATE_CREDIT,
            Operation.COMPENSATE_DEBIT,
        ]


def test_every_problem_parses_into_a_typed_model(start_server: StartServer) -> None:
    server = start_server({"alice": 100, "bob": 0})
    with Client(base_url=server.url, raise_on_unexpected_status=True) as client:
        overdraft = debit.sync_detailed(client=client, body=body("alice", 101), transaction_id="t1")
        assert overdraft.status_code == 409
        assert isinstance(overdraft.parsed, Problem)
        assert overdraft.parsed.code == ErrorCode.INSUFFICIENT_FUNDS

        unknown = credit.sync(client=client, body=body("zed", 1), transaction_id="t2")
        assert isinstance(unknown, Problem)
        assert unknown.code == ErrorCode.UNKNOWN_USER

        voided = compensate_debit.sync(client=client, body=body("alice", 5), transaction_id="t3")
        assert isinstance(voided, LedgerResult)
        assert voided.outcome == Outcome.VOIDED
        late = debit.sync(client=client, body=body("alice", 5), transaction_id="t3")
        assert isinstance(late, Problem)
        assert late.code == ErrorCode.TRANSACTION_COMPENSATED

        debit.sync(client=client, body=body("alice", 5), transaction_id="t4")
        reused = debit.sync_detailed(client=client, body=body("alice", 6), transaction_id="t4")
        assert reused.status_code == 422
        assert isinstance(reused.parsed, Problem)
        assert reused.parsed.code == ErrorCode.IDEMPOTENCY_KEY_REUSED

        malformed = debit.sync_detailed(client=client, body=body("alice", 5), transaction_id="no spaces allowed")
        assert malformed.status_code == 400
        assert isinstance(malformed.parsed, Problem)
        assert malformed.parsed.code == ErrorCode.INVALID_TRANSACTION_ID

        missing = get_account.sync_detailed("zed", client=client, transaction_id="read-1")
        assert missing.status_code == 404
        assert isinstance(missing.parsed, Problem)
        assert missing.parsed.code == ErrorCode.UNKNOWN_USER


def test_injected_fault_parses_as_a_500_problem(start_server: StartServer) -> None:
    server = start_server({"bob": 0}, credit_fault_rate=1.0)
    with Client(base_url=server.url, raise_on_unexpected_status=True) as client:
        response = credit.sync_detailed(client=client, body=body("bob", 10), transaction_id="t1")
        assert response.status_code == 500
        assert isinstance(response.parsed, Problem)
        assert response.parsed.code == ErrorCode.INJECTED_FAULT
        account = get_account.sync("bob", client=client, transaction_id="read-1")
        assert account is not None
        assert not isinstance(account, Problem)
        assert account.balance == 0


def test_every_ledger_operation_async(start_server: StartServer) -> None:
    server = start_server({"alice": 1_000, "bob": 0})

    async def scenario() -> None:
        async with Client(base_url=server.url, raise_on_unexpected_status=True) as client:
            results = await asyncio.gather(
                *(debit.asyncio(client=client, body=body("alice", 10), transaction_id=f"t{i}") for i in range(20))
            )
            assert all(isinstance(result, LedgerResult) for result in results)
            credited = await credit.asyncio(client=client, body=body("bob", 10), transaction_id="t0")
            assert isinstance(credited, LedgerResult)
            assert credited.balance == 10
            undone = await compensate_credit.asyncio(client=client, body=body("bob", 10), transaction_id="t0")
            assert isinstance(undone, LedgerResult)
            assert undone.outcome == Outcome.REVERSED
            restored = await compensate_debit.asyncio(client=client, body=body("alice", 10), transaction_id="t0")
            assert isinstance(restored, LedgerResult)
            assert restored.balance == 810
            trail = await get_transaction.asyncio("t0", client=client, transaction_id_header="read-1")
            assert isinstance(trail, TransactionTrail)
            assert len(trail.entries) == 4
            accounts = await list_accounts.asyncio(client=client, transaction_id="read-2")
            assert isinstance(accounts, AccountList)
            assert sum(account.balance for account in accounts.accounts) == 810

    asyncio.run(scenario())


def test_bearer_token_through_the_authenticated_client(start_server: StartServer) -> None:
    server = start_server({"alice": 10}, token="s3cret")
    with Client(base_url=server.url, raise_on_unexpected_status=True) as anonymous:
        refused = list_accounts.sync_detailed(client=anonymous, transaction_id="r1")
        assert refused.status_code == 401
        assert isinstance(refused.parsed, Problem)
        assert refused.parsed.code == ErrorCode.UNAUTHORIZED
    with AuthenticatedClient(base_url=server.url, token="s3cret", raise_on_unexpected_status=True) as client:
        accepted = list_accounts.sync(client=client, transaction_id="r2")
        assert isinstance(accepted, AccountList)


def test_caller_supplied_async_httpx_client(start_server: StartServer) -> None:
    server = start_server({"alice": 10})

    async def scenario() -> None:
        seen: list[str] = []

        async def record(request: httpx.Request) -> None:
            seen.append(request.headers["transaction_id"])

        http = httpx.AsyncClient(base_url=server.url, event_hooks={"request": [record]})
        client = Client(base_url=server.url).set_async_httpx_client(http)
        async with client:
            result = await debit.asyncio(client=client, body=body("alice", 1), transaction_id="own-pool")
        assert isinstance(result, LedgerResult)
        assert seen == ["own-pool"]

    asyncio.run(scenario())


def test_wrong_header_spelling_is_explained(start_server: StartServer) -> None:
    server = start_server({"alice": 10})
    response = httpx.post(
        f"{server.url}/debit", headers={"Transaction-Id": "t1"}, json={"user_id": "alice", "amount": 1}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "missing_transaction_id"
    assert "spelled transaction_id" in response.json()["detail"]


def test_one_log_line_per_request(start_server: StartServer) -> None:
    server = start_server({"alice": 10}, log_level="info")
    with Client(base_url=server.url) as client:
        debit.sync(client=client, body=body("alice", 1), transaction_id="logged-1")
        debit.sync(client=client, body=body("alice", 1), transaction_id="logged-1")
    log_lines = [line for line in server.log().splitlines() if "logged-1" in line]
    assert len(log_lines) == 2
    assert '"operation":"debit"' in log_lines[0]
    assert '"outcome":"applied"' in log_lines[0]
    assert '"replayed":true' in log_lines[1]
