"""What a service does when it is told nothing: the brief's demo in memory, nothing risky on a durable ledger.

Real ``python -m server`` processes on loopback, through the generated client.
"""

from __future__ import annotations

from pathlib import Path

from generated_client.accounts import AuthenticatedClient, Client
from generated_client.accounts.api.accounts import list_accounts
from generated_client.accounts.api.ledger import credit
from generated_client.accounts.api.operators import open_account
from generated_client.accounts.models import AccountList, AccountOpening, LedgerRequest, OpenAccountRequest
from server.process import ServerProcess

CREDITS = 40


def first_line(server: ServerProcess) -> str:
    return server.log().strip().splitlines()[0]


def credits_refused(url: str, user_id: str) -> int:
    with Client(base_url=url) as client:
        statuses = [
            credit.sync_detailed(
                client=client, transaction_id=f"c-{n}", body=LedgerRequest(user_id=user_id, amount=1)
            ).status_code
            for n in range(CREDITS)
        ]
    return sum(1 for status in statuses if status == 500)


def test_the_memory_service_is_the_brief_demo_with_its_accounts_and_failing_credits() -> None:
    with ServerProcess(credit_fault_rate=None, log_level="info") as server:
        line = first_line(server)
        with Client(base_url=server.url) as client:
            listed = list_accounts.sync(client=client, transaction_id="read")
        refused = credits_refused(server.url, "alice")
    assert "store memory" in line
    assert "credit faults 0.3 before commit" in line
    assert "auth off" in line
    assert isinstance(listed, AccountList)
    assert [account.user_id for account in listed.accounts] == ["alice", "bob", "charlie"]
    # With 30% faults, none failing in 40 credits happens once in 1.6 million runs (0.7 ** 40).
    assert refused > 0


def test_a_durable_service_seeds_nothing_fails_nothing_and_an_operator_opens_accounts(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    extra = ["--database", database, "--operator-token", "ops=operator-secret", "--token", "caller-secret"]
    with ServerProcess(credit_fault_rate=None, token=None, log_level="info", extra_args=extra) as server:
        line = first_line(server)
        operator = AuthenticatedClient(base_url=server.url, token="operator-secret")
        with operator:
            empty = list_accounts.sync(client=operator, transaction_id="read-1")
            opened = open_account.sync(
                client=operator,
                transaction_id="open-dora",
                body=OpenAccountRequest(user_id="dora", opening_balance=1_000, reason="ticket 7"),
            )
            with AuthenticatedClient(base_url=server.url, token="caller-secret") as caller:
                refused = open_account.sync_detailed(
                    client=caller,
                    transaction_id="open-erin",
                    body=OpenAccountRequest(user_id="erin", opening_balance=1_000, reason="not mine to open"),
                )
                statuses = [
                    credit.sync_detailed(
                        client=caller, transaction_id=f"c-{n}", body=LedgerRequest(user_id="dora", amount=1)
                    ).status_code
                    for n in range(CREDITS)
                ]
            listed = list_accounts.sync(client=operator, transaction_id="read-2")
    assert f"store {database}" in line
    assert "ledger " in line
    assert "credit faults 0 before commit, 0 after commit" in line
    assert "auth on" in line
    assert "1 operator token" in line
    assert isinstance(empty, AccountList)
    assert empty.accounts == []
    assert isinstance(opened, AccountOpening)
    assert (opened.user_id, opened.opening_balance, opened.operator) == ("dora", 1_000, "ops")
    assert refused.status_code == 403
    assert set(statuses) == {200}
    assert isinstance(listed, AccountList)
    assert [(a.user_id, a.balance, a.opening_balance) for a in listed.accounts] == [("dora", 1_040, 1_000)]


def test_a_durable_service_injects_faults_and_seeds_accounts_only_when_asked(tmp_path: Path) -> None:
    extra = ["--database", f"sqlite:///{tmp_path / 'ledger.db'}"]
    with ServerProcess({"alice": 500}, credit_fault_rate=0.5, log_level="info", extra_args=extra) as server:
        line = first_line(server)
        refused = credits_refused(server.url, "alice")
    assert "credit faults 0.5 before commit" in line
    assert refused > 0
