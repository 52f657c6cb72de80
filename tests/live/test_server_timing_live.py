"""Every answer of every contract operation says its timing: ``Server-Timing: store;dur=S, total;dur=T``.

A real ``python -m server`` process on loopback, through the generated client,
which the saga uses too; the few answers it cannot provoke (a missing
header, an oversized body or header section) are asked for with httpx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import httpx
import pytest

from generated_client.accounts import AuthenticatedClient, Client
from generated_client.accounts.api.accounts import get_account, get_transaction, list_accounts
from generated_client.accounts.api.ledger import compensate_credit, compensate_debit, credit, debit
from generated_client.accounts.api.operators import open_account
from generated_client.accounts.models import LedgerRequest, OpenAccountRequest
from generated_client.accounts.types import Response
from saga.steps import server_timing
from server.process import ServerProcess

AnyClient = Client | AuthenticatedClient
TOKEN = "caller-secret"
OPERATOR = "operator-secret"
FORMAT = re.compile(r"store;dur=[0-9]+\.[0-9]{3}, total;dur=[0-9]+\.[0-9]{3}")


@pytest.fixture(scope="module")
def service() -> Iterator[ServerProcess]:
    extra = ["--operator-token", f"ops={OPERATOR}", "--max-body-bytes", "1024", "--max-header-bytes", "4096"]
    with ServerProcess({"alice": 1000, "bob": 0}, token=TOKEN, credit_fault_rate=1.0, extra_args=extra) as server:
        yield server


def assert_timed(status: int, headers: Mapping[str, str], expected: int) -> None:
    assert status == expected
    value = httpx.Headers(headers).get("server-timing")
    assert value is not None
    assert FORMAT.fullmatch(value), value
    timing = server_timing(httpx.Headers(headers))
    assert timing is not None
    assert timing.store_us <= timing.total_us, value


def test_the_ledger_operations_answer_their_timing_on_success_and_on_every_refusal(service: ServerProcess) -> None:
    def call(operation: ModuleType, client: AnyClient, tid: str, user: str, amount: int) -> Response[Any]:
        answer: Response[Any] = operation.sync_detailed(
            client=client, transaction_id=tid, body=LedgerRequest(user_id=user, amount=amount)
        )
        return answer

    with AuthenticatedClient(base_url=service.url, token=TOKEN) as caller, Client(base_url=service.url) as stranger:
        answers = [
            (call(debit, caller, "t-1", "alice", 10), 200),
            (call(compensate_debit, caller, "t-1", "alice", 10), 200),
            (call(compensate_credit, caller, "t-2", "bob", 10), 200),
            (call(debit, caller, "t-3", "bob", 10), 409),
            (call(debit, caller, "t-4", "nobody", 10), 404),
            (call(debit, caller, "t-1", "alice", 11), 422),
            # Every credit is refused by the injected fault: a 500 made by the route.
            (call(credit, caller, "t-5", "bob", 10), 500),
            (call(debit, stranger, "t-6", "alice", 10), 401),
            (call(compensate_debit, stranger, "t-6", "alice", 10), 401),
        ]
    for answer, status in answers:
        assert_timed(answer.status_code, answer.headers, status)


def test_the_reads_and_the_opening_answer_their_timing(service: ServerProcess) -> None:
    opening = OpenAccountRequest(user_id="carol", opening_balance=5, reason="a new customer")
    with (
        AuthenticatedClient(base_url=service.url, token=TOKEN) as caller,
        AuthenticatedClient(base_url=service.url, token=OPERATOR) as operator,
        Client(base_url=service.url) as stranger,
        AuthenticatedClient(base_url=service.url, token="not-the-token") as impostor,
    ):
        answers: list[tuple[Response[Any], int]] = [
            (list_accounts.sync_detailed(client=caller, transaction_id="r-1"), 200),
            (list_accounts.sync_detailed(client=stranger, transaction_id="r-1"), 401),
            (get_account.sync_detailed("alice", client=caller, transaction_id="r-2"), 200),
            (get_account.sync_detailed("nobody", client=caller, transaction_id="r-3"), 404),
            (get_account.sync_detailed("alice", client=stranger, transaction_id="r-3"), 401),
            (get_transaction.sync_detailed("t-1", client=caller, transaction_id_header="r-4"), 200),
            (get_transaction.sync_detailed("t-1", client=stranger, transaction_id_header="r-4"), 401),
            (open_account.sync_detailed(client=operator, transaction_id="o-1", body=opening), 201),
            (open_account.sync_detailed(client=operator, transaction_id="o-2", body=opening), 409),
            (open_account.sync_detailed(client=caller, transaction_id="o-3", body=opening), 403),
            (open_account.sync_detailed(client=impostor, transaction_id="o-3", body=opening), 401),
        ]
    for answer, status in answers:
        assert_timed(answer.status_code, answer.headers, status)


def test_the_refusals_before_the_route_answer_their_timing(service: ServerProcess) -> None:
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    body = {"user_id": "alice", "amount": 1}
    with httpx.Client(base_url=service.url, headers=authorized) as client:
        missing_id = client.post("/debit", json=body)
        invalid_body = client.post("/credit", headers={"transaction_id": "v-1"}, json={"user_id": "alice"})
        invalid_path = client.get("/accounts/a%20b", headers={"transaction_id": "v-2"})
        too_large = client.post("/debit", headers={"transaction_id": "v-3"}, content=b"{" + b" " * 2048 + b"}")
    assert_timed(missing_id.status_code, missing_id.headers, 400)
    assert_timed(invalid_body.status_code, invalid_body.headers, 422)
    assert_timed(invalid_path.status_code, invalid_path.headers, 422)
    assert_timed(too_large.status_code, too_large.headers, 413)


def test_an_answer_made_at_the_edge_says_it_spent_nothing(service: ServerProcess) -> None:
    with httpx.Client(base_url=service.url) as client:
        answer = client.get("/accounts", headers={"transaction_id": "e-1", "X-Padding": "x" * 8192})
    assert_timed(answer.status_code, answer.headers, 431)
    assert answer.headers["server-timing"] == "store;dur=0.000, total;dur=0.000"
