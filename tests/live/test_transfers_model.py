"""A model of the transfers service's contract, checked by Hypothesis against real processes.

Random transfers between two banks with credit faults, exact resends of
them, and reuses of their keys for other bodies, all through the generated
client. At the end of each run every transfer is awaited, and the run is
judged by the banks: the money is conserved and where the end states say,
and each transfer's events agree with the banks' audit trails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule, run_state_machine_as_test

from generated_client.transfers.models import Transfer, TransferRequest
from saga import verify
from saga.service.process import TransfersProcess
from server.process import ServerProcess
from tests.support.transfers import (
    ENDS,
    Balances,
    Banks,
    TransfersClient,
    every_transfer,
    problem_code,
    story_mismatches_of,
    submit,
    transfer_request,
    transfers_client,
    wait_for_end,
)

ACCOUNTS = {
    "bank-a": {"alice": 3_000, "amir": 3_000},
    "bank-b": {"bob": 3_000, "bea": 3_000},
}
EVERY_ACCOUNT = [(service, user) for service, users in ACCOUNTS.items() for user in users]


@dataclass(frozen=True)
class Services:
    client: TransfersClient
    banks: Banks


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    with (
        ServerProcess(ACCOUNTS["bank-a"], credit_fault_rate=0.3, fault_seed=31) as bank_a,
        ServerProcess(ACCOUNTS["bank-b"], credit_fault_rate=0.3, fault_seed=32) as bank_b,
        TransfersProcess({"bank-a": bank_a.url, "bank-b": bank_b.url}) as service,
    ):
        yield Services(transfers_client(service.url), Banks({"bank-a": bank_a.url, "bank-b": bank_b.url}))


@dataclass
class Submission:
    key: str
    body: TransferRequest
    transaction_id: str


@dataclass
class Model:
    """What the service must hold by the end of a run: each key's one transfer, and nothing else."""

    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    by_key: dict[str, Submission] = field(default_factory=dict)


accounts = st.sampled_from(EVERY_ACCOUNT)
amounts = st.integers(min_value=1, max_value=4_000)


class TransfersContract(RuleBasedStateMachine):
    """Each run starts on the banks as the last one left them; only its own transfers move money meanwhile."""

    services: Services
    submissions = Bundle("submissions")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.before: Balances = self.services.banks.balances()

    @rule(target=submissions, source=accounts, target_account=accounts, amount=amounts)
    def submit_a_new_transfer(
        self, source: tuple[str, str], target_account: tuple[str, str], amount: int
    ) -> Submission | None:
        key = f"{self.model.prefix}-{len(self.model.by_key)}"
        body = transfer_request(source, target_account, amount)
        answer = submit(self.services.client, body, key)
        if source == target_account:
            assert answer.status_code == 422, answer.content
            assert problem_code(answer) == "invalid_request"
            return None
        assert answer.status_code == 201, answer.content
        assert isinstance(answer.parsed, Transfer)
        assert answer.headers["location"] == f"/transfers/{answer.parsed.transaction_id}"
        submission = Submission(key, body, answer.parsed.transaction_id)
        self.model.by_key[key] = submission
        return submission

    @rule(submission=submissions)
    def send_the_same_submission_again(self, submission: Submission | None) -> None:
        if submission is None:
            return
        answer = submit(self.services.client, submission.body, submission.key)
        assert answer.status_code == 200, answer.content
        assert answer.headers["idempotent-replayed"] == "true"
        assert isinstance(answer.parsed, Transfer)
        assert answer.parsed.transaction_id == submission.transaction_id

    @rule(submission=submissions, source=accounts, target_account=accounts, amount=amounts)
    def reuse_a_key_for_another_transfer(
        self, submission: Submission | None, source: tuple[str, str], target_account: tuple[str, str], amount: int
    ) -> None:
        if submission is None:
            return
        other = transfer_request(source, target_account, amount)
        if other.to_dict() == submission.body.to_dict():
            return
        answer = submit(self.services.client, other, submission.key)
        assert answer.status_code == 422, answer.content
        assert problem_code(answer) in {"idempotency_key_reused", "invalid_request"}
        if source != target_account:
            assert problem_code(answer) == "idempotency_key_reused"

    def teardown(self) -> None:
        client, banks = self.services.client, self.services.banks
        ended = [wait_for_end(client, s.transaction_id) for s in self.model.by_key.values()]
        assert {t.state for t in ended} <= ENDS

        recorded = {
            transfer.idempotency_key: transfer
            for transfer in every_transfer(client)
            if transfer.idempotency_key is not None and transfer.idempotency_key.startswith(self.model.prefix)
        }
        assert sorted(recorded) == sorted(self.model.by_key), "a refused submission was recorded"
        for key, submission in self.model.by_key.items():
            transfer = recorded[key]
            assert transfer.transaction_id == submission.transaction_id
            asked = submission.body
            assert (transfer.source.service, transfer.source.user_id) == (asked.source.service, asked.source.user_id)
            assert (transfer.target.service, transfer.target.user_id) == (asked.target.service, asked.target.user_id)
            assert transfer.amount == asked.amount, "a reuse of the key changed the transfer"

        assert verify.total(banks.balances()) == verify.total(self.before), "money was made or lost"
        assert banks.judge(self.before, ended, banks.trails(ended)) == []
        assert story_mismatches_of(client, banks, ended) == []


def test_duplicates_and_key_reuses_never_make_a_second_transfer_and_every_transfer_ends_as_the_banks_say(
    services: Services,
) -> None:
    TransfersContract.services = services
    run_state_machine_as_test(
        TransfersContract,
        settings=settings(
            max_examples=20,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
