"""Opening an account on a running ledger: the rule, every store, and the HTTP operation.

An opening brings money into the ledger from outside it. It is keyed by its
transaction id like every state change: a repeat replays the first answer,
a refusal included, and the same id never opens two different accounts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import Settings, create_app
from server.ledger import DEBIT, MAX_BALANCE, Account
from server.openings import Opening, OpeningKeyReused, OpeningRequest, decide_opening
from tests.support.stores import STORES

NOW = "2026-12-03T17:00:00.000Z"


def asked(transaction_id: str = "open-1", user_id: str = "dora", balance: int = 5_000, **extra: Any) -> OpeningRequest:
    fields: dict[str, Any] = {"operator": "ops", "reason": "ticket 42", **extra}
    return OpeningRequest(transaction_id, user_id, balance, fields["operator"], fields["reason"])


# -- the rule ------------------------------------------------------------------


def test_a_new_account_is_opened_with_its_balance_and_who_asked_and_why() -> None:
    opening, replayed = decide_opening(asked(), account_exists=False, recorded=None, max_balance=MAX_BALANCE, now=NOW)
    assert (opening, replayed) == (Opening("open-1", "dora", 5_000, "ops", "ticket 42", NOW), False)
    assert opening.opened
    assert opening.status == 201


def test_an_account_that_exists_is_refused_and_the_refusal_is_an_answer_to_record() -> None:
    opening, replayed = decide_opening(asked(), account_exists=True, recorded=None, max_balance=MAX_BALANCE, now=NOW)
    assert (opening.rejection, opening.status, opening.opened, replayed) == ("account_exists", 409, False, False)


def test_an_opening_over_the_balance_limit_is_refused() -> None:
    over, _ = decide_opening(asked(balance=1_001), account_exists=False, recorded=None, max_balance=1_000, now=NOW)
    at, _ = decide_opening(asked(balance=1_000), account_exists=False, recorded=None, max_balance=1_000, now=NOW)
    assert (over.rejection, at.rejection) == ("balance_limit_exceeded", None)


def test_a_repeat_replays_what_was_recorded_whoever_asks_and_whatever_they_say() -> None:
    recorded = Opening("open-1", "dora", 5_000, "ops", "ticket 42", NOW, "account_exists")
    again = asked(operator="someone else", reason="retrying")
    # The account exists now too, but the recorded answer stands.
    assert decide_opening(again, account_exists=True, recorded=recorded, max_balance=MAX_BALANCE, now="later") == (
        recorded,
        True,
    )


@pytest.mark.parametrize(("user_id", "balance"), [("erin", 5_000), ("dora", 5_001)])
def test_the_same_id_never_opens_another_account_or_another_balance(user_id: str, balance: int) -> None:
    recorded = Opening("open-1", "dora", 5_000, "ops", "ticket 42", NOW)
    with pytest.raises(OpeningKeyReused, match="already opened 'dora' with 5000"):
        decide_opening(asked(user_id=user_id, balance=balance), account_exists=False, recorded=recorded,
                       max_balance=MAX_BALANCE, now=NOW)  # fmt: skip


# -- every store ---------------------------------------------------------------


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_every_store_opens_once_counts_the_money_as_brought_in_and_replays(store_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with STORES[store_name]({"alice": 1_000}, tmp_path) as store:
            opening, replayed = await store.open_account(asked())
            assert (opening.opened, replayed) == (True, False)
            assert await store.accounts() == [Account("alice", 1_000, 1_000), Account("dora", 5_000, 5_000)]
            # Money brought in is the opening balance, so the balances still agree with the record.
            await store.check_invariants()
            assert await store.open_account(asked(reason="again")) == (opening, True)
            assert await store.opening("open-1") == opening
            assert await store.opening("never-used") is None

            refused, replayed = await store.open_account(asked("open-2", "alice", 9_999))
            assert (refused.rejection, replayed) == ("account_exists", False)
            assert await store.open_account(asked("open-2", "alice", 9_999)) == (refused, True)
            assert await store.balance("alice") == 1_000
            with pytest.raises(OpeningKeyReused):
                await store.open_account(asked("open-2", "zed", 1))
            assert await store.balance("zed") is None

            # The opened account takes part in transfers like any other.
            execution = await store.execute(DEBIT, "t1", "dora", 1_500)
            assert execution is not None
            assert execution[0].balance == 3_500
            await store.check_invariants()

    asyncio.run(scenario())


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_racing_openings_of_one_account_open_it_once(store_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with STORES[store_name]({}, tmp_path) as store:
            results = await asyncio.gather(*(store.open_account(asked(f"open-{n}", "dora", 100 + n)) for n in range(8)))
            opened = [opening for opening, _ in results if opening.opened]
            assert len(opened) == 1
            assert {opening.rejection for opening, _ in results if not opening.opened} == {"account_exists"}
            assert await store.accounts() == [Account("dora", opened[0].opening_balance, opened[0].opening_balance)]
            await store.check_invariants()

    asyncio.run(scenario())


# -- the HTTP operation --------------------------------------------------------

OPERATOR = {"Authorization": "Bearer operator-secret"}
BODY = {"user_id": "dora", "opening_balance": 5_000, "reason": "ticket 42"}


def call(settings: Settings, *requests: tuple[str, str, dict[str, str], Any]) -> list[httpx.Response]:
    async def scenario() -> list[httpx.Response]:
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as client:
            return [
                await client.request(method, path, headers=headers, json=body)
                for method, path, headers, body in requests
            ]

    return asyncio.run(scenario())


def settings(**extra: Any) -> Settings:
    fields: dict[str, Any] = {"accounts": {"alice": 1_000}, "credit_fault_rate": 0.0, "log_requests": False}
    return Settings(**{**fields, **extra})


OPERATORS = {"operator_tokens": {"ops": "operator-secret"}}


def test_an_operator_opens_an_account_and_a_repeat_replays_it() -> None:
    first, again, listing, trail = call(
        settings(**OPERATORS),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, BODY),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, {**BODY, "reason": "retry"}),
        ("GET", "/accounts", {"transaction_id": "read-1"}, None),
        ("GET", "/transactions/open-1", {"transaction_id": "read-2"}, None),
    )
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    body = first.json()
    recorded = ("transaction_id", "user_id", "opening_balance", "operator", "reason", "status")
    assert [body[key] for key in recorded] == ["open-1", "dora", 5_000, "ops", "ticket 42", 201]
    assert body["recorded_at"].endswith("Z")
    assert (again.status_code, again.headers["idempotent-replayed"], again.json()) == (201, "true", body)
    assert listing.json()["accounts"][1] == {"user_id": "dora", "balance": 5_000, "opening_balance": 5_000}
    assert trail.json() == {"transaction_id": "open-1", "entries": [], "opening": body}


def test_an_opening_of_an_existing_account_is_refused_recorded_and_replayed() -> None:
    refused, again = call(
        settings(**OPERATORS),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, {**BODY, "user_id": "alice"}),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, {**BODY, "user_id": "alice"}),
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "account_exists")
    assert refused.headers["content-type"] == "application/problem+json"
    assert (again.status_code, again.json()["code"], again.headers["idempotent-replayed"]) == (
        409,
        "account_exists",
        "true",
    )


def test_the_same_id_with_another_account_is_refused_and_changes_nothing() -> None:
    _, reused, listing = call(
        settings(**OPERATORS),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, BODY),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, {**BODY, "user_id": "erin"}),
        ("GET", "/accounts", {"transaction_id": "read-1"}, None),
    )
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
    assert [account["user_id"] for account in listing.json()["accounts"]] == ["alice", "dora"]


@pytest.mark.parametrize(
    ("extra", "headers", "status", "code"),
    [
        (OPERATORS, {}, 401, "unauthorized"),
        (OPERATORS, {"Authorization": "Bearer not-an-operator"}, 403, "operator_only"),
        ({}, OPERATOR, 403, "operator_only"),
        # The service's own token lets a caller move money, not bring it in.
        ({**OPERATORS, "token": "service-token"}, {"Authorization": "Bearer service-token"}, 403, "operator_only"),
    ],
)
def test_only_an_operator_may_open_an_account(
    extra: dict[str, Any], headers: dict[str, str], status: int, code: str
) -> None:
    refused, listing = call(
        settings(**extra),
        ("POST", "/accounts", {**headers, "transaction_id": "open-1"}, BODY),
        ("GET", "/accounts", {**headers, "transaction_id": "read-1"}, None),
    )
    assert (refused.status_code, refused.json()["code"]) == (status, code)
    if listing.status_code == 200:
        assert [account["user_id"] for account in listing.json()["accounts"]] == ["alice"]


def test_an_operator_token_is_accepted_wherever_the_service_token_is() -> None:
    (listing,) = call(
        settings(token="service-token", **OPERATORS), ("GET", "/accounts", {**OPERATOR, "transaction_id": "r"}, None)
    )
    assert listing.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {**BODY, "opening_balance": -1},
        {**BODY, "opening_balance": MAX_BALANCE + 1},
        {**BODY, "opening_balance": 10.5},
        {**BODY, "opening_balance": "5000"},
        {**BODY, "reason": ""},
        {**BODY, "reason": "   "},
        {**BODY, "reason": "two\nlines"},
        {**BODY, "reason": "x" * 501},
        {**BODY, "user_id": "no spaces allowed"},
        {"user_id": "dora", "opening_balance": 5_000},
        {**BODY, "extra": 1},
    ],
)
def test_bad_input_is_refused_and_opens_nothing(body: dict[str, Any]) -> None:
    refused, listing = call(
        settings(**OPERATORS),
        ("POST", "/accounts", {**OPERATOR, "transaction_id": "open-1"}, body),
        ("GET", "/accounts", {"transaction_id": "read-1"}, None),
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_request")
    assert [account["user_id"] for account in listing.json()["accounts"]] == ["alice"]
