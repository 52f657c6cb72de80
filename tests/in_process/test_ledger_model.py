"""Random ledger traffic through the HTTP app, judged by a small reference model.

A Hypothesis state machine sends debits, credits and both compensations to the
in-process app, with fresh transaction ids and reused ones, resent with the
same body and with another, on every ledger store (tests/support/stores.py).
Before each request the reference model below, written from the contract's
rules and not from server/ledger.py, predicts the answer; after each step the
app's balances are compared with the model and with the money its own answers
say it moved, and the store checks its balances against its own record. A
second machine adds credit faults, before and after commit, and learns from
the audit trail what a lost answer did, as a saga would.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from server import Settings, create_app
from server.ledger import MAX_BALANCE
from server.shared.contract_rules import MAX_AMOUNT
from tests.support.stores import STORES, CheckedStore, StoreFactory, memory_store

T = TypeVar("T")

#: An account with money, an empty one, and one just below the balance limit.
ACCOUNTS = {"alice": 1_000, "bob": 0, "carol": MAX_BALANCE - 300}
USERS = (*ACCOUNTS, "zed")
FORWARDS = ("debit", "credit")
COMPENSATION_OF = {"debit": "compensate_debit", "credit": "compensate_credit"}
FORWARD_OF = {compensation: forward for forward, compensation in COMPENSATION_OF.items()}
OPERATIONS = (*FORWARDS, *FORWARD_OF)

# A few recurring amounts, so that bodies collide and money moved is spent exactly.
amounts = st.one_of(st.sampled_from([100, 250, 700]), st.integers(min_value=1, max_value=1_500), st.just(MAX_AMOUNT))


@dataclass(frozen=True)
class Request:
    operation: str
    transaction_id: str
    user_id: str
    amount: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.transaction_id, self.operation)

    @property
    def body(self) -> tuple[str, int]:
        return (self.user_id, self.amount)


@dataclass(frozen=True)
class Decision:
    """What the contract says the service answers to one request."""

    status: int
    code: str | None = None
    outcome: str | None = None
    balance: int | None = None
    #: Recorded answers are replayed for the same body; the others leave no trace.
    recorded: bool = True


@dataclass
class ReferenceLedger:
    """The contract's ledger rules, as plainly as they can be written."""

    balances: dict[str, int]
    #: The first request and decision of every recorded (transaction_id, operation).
    recorded: dict[tuple[str, str], tuple[Request, Decision]] = field(default_factory=dict)

    def decide(self, request: Request) -> tuple[Decision, bool]:
        """The decision for ``request``, and whether it is a replay of a recorded one."""
        first = self.recorded.get(request.key)
        if first is not None:
            if first[0].body != request.body:
                return Decision(422, "idempotency_key_reused", recorded=False), False
            return first[1], True
        forward = FORWARD_OF.get(request.operation)
        undone = self.recorded.get((request.transaction_id, forward or ""))
        if undone is not None and undone[1].outcome == "applied" and undone[0].body != request.body:
            # A compensation must name the body of the operation it undoes.
            return Decision(422, "idempotency_key_reused", recorded=False), False
        balance = self.balances.get(request.user_id)
        if balance is None:
            return Decision(404, "unknown_user"), False
        return self._rule(request, balance), False

    def _rule(self, request: Request, balance: int) -> Decision:
        tx, amount = request.transaction_id, request.amount
        if request.operation == "debit":
            if (tx, "compensate_debit") in self.recorded:
                return Decision(409, "transaction_compensated")
            if balance < amount:
                return Decision(409, "insufficient_funds")
            return Decision(200, outcome="applied", balance=balance - amount)
        if request.operation == "credit":
            if (tx, "compensate_credit") in self.recorded:
                return Decision(409, "transaction_compensated")
            if balance + amount > MAX_BALANCE:
                return Decision(409, "balance_limit_exceeded")
            return Decision(200, outcome="applied", balance=balance + amount)
        if request.operation == "compensate_debit":
            if not self.applied(tx, "debit"):
                return Decision(200, outcome="voided", balance=balance)
            if self.applied(tx, "credit") and not self.reversed(tx, "compensate_credit"):
                # Debit and credit both landed here: undoing the debit alone would create money.
                return Decision(409, "transfer_completed")
            if balance + amount > MAX_BALANCE:
                # The debit is given back once there is room, so this refusal leaves no trace.
                return Decision(409, "reversal_exceeds_balance_limit", recorded=False)
            return Decision(200, outcome="reversed", balance=balance + amount)
        if self.refused(tx, "compensate_debit", "transfer_completed"):
            # The service said the transfer completed: the credit stands with the debit.
            return Decision(409, "transfer_completed")
        if not self.applied(tx, "credit"):
            return Decision(200, outcome="voided", balance=balance)
        if balance < amount:
            return Decision(409, "insufficient_funds")
        return Decision(200, outcome="reversed", balance=balance - amount)

    def applied(self, transaction_id: str, operation: str) -> bool:
        first = self.recorded.get((transaction_id, operation))
        return first is not None and first[1].outcome == "applied"

    def refused(self, transaction_id: str, operation: str, code: str) -> bool:
        first = self.recorded.get((transaction_id, operation))
        return first is not None and first[1].code == code

    def reversed(self, transaction_id: str, operation: str) -> bool:
        first = self.recorded.get((transaction_id, operation))
        return first is not None and first[1].outcome == "reversed"

    def commit(self, request: Request, decision: Decision) -> None:
        if not decision.recorded:
            return
        self.recorded[request.key] = (request, decision)
        if decision.balance is not None:
            self.balances[request.user_id] = decision.balance


class LedgerMachine(RuleBasedStateMachine):
    """Drives one in-process app on one event loop, step by step."""

    app_settings: ClassVar[dict[str, Any]] = {"credit_fault_rate": 0.0}
    open_store: ClassVar[StoreFactory] = staticmethod(memory_store)

    transactions = Bundle("transactions")
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.TemporaryDirectory(prefix="ledger-model-")
        self.resources = AsyncExitStack()
        self.client: httpx.AsyncClient | None = None
        self.model = ReferenceLedger(dict(ACCOUNTS))
        self.ids = itertools.count(1)
        #: The first answer the app gave to each recorded (transaction_id, operation).
        self.first_answers: dict[tuple[str, str], tuple[int, Any]] = {}
        #: Money moved, by kind, as the app's own answers (or audit trail) report it.
        self.moved: dict[str, dict[str, int]] = {kind: dict.fromkeys(ACCOUNTS, 0) for kind in OPERATIONS}
        #: Forward operations fenced by a voiding compensation.
        self.voided: set[tuple[str, str]] = set()

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.resources.aclose())
        finally:
            self.loop.close()
            self.folder.cleanup()

    # -- rules -----------------------------------------------------------------

    @initialize(fault_seed=st.integers(min_value=0, max_value=2**32))
    def start_the_app(self, fault_seed: int) -> None:
        # The fault generator's seed comes from Hypothesis, so that replaying
        # or shrinking an example replays the same faults.
        self.store: CheckedStore = self.run(
            self.resources.enter_async_context(type(self).open_store(ACCOUNTS, Path(self.folder.name)))
        )
        self.app = create_app(
            Settings(accounts=ACCOUNTS, log_requests=False, fault_seed=fault_seed, **self.app_settings), self.store
        )
        self.client = self.run(
            self.resources.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://accounts.test")
            )
        )

    @rule(target=transactions)
    def fresh_transaction_id(self) -> str:
        return f"tx-{next(self.ids)}"

    @rule(
        target=requests,
        operation=st.sampled_from(OPERATIONS),
        transaction_id=transactions,
        user_id=st.sampled_from(USERS),
        amount=amounts,
    )
    def send(self, operation: str, transaction_id: str, user_id: str, amount: int) -> Request:
        return self.submit(Request(operation, transaction_id, user_id, amount))

    @rule(request=requests)
    def send_again(self, request: Request) -> None:
        self.submit(request)

    @rule(target=requests, request=requests, user_id=st.sampled_from(USERS), amount=amounts)
    def send_again_with_another_body(self, request: Request, user_id: str, amount: int) -> Request:
        return self.submit(Request(request.operation, request.transaction_id, user_id, amount))

    @rule(
        target=requests,
        transaction_id=transactions,
        payer=st.sampled_from(USERS),
        payee=st.sampled_from(USERS),
        amount=amounts,
        undo=st.sampled_from(["nothing", "the debit", "the credit, then the debit"]),
    )
    def transfer(self, transaction_id: str, payer: str, payee: str, amount: int, undo: str) -> Request:
        # A saga between two accounts of this one service: both legs share the
        # transaction id, so compensate_debit meets its own applied credit.
        debit = self.submit(Request("debit", transaction_id, payer, amount))
        credit = Request("credit", transaction_id, payee, amount)
        self.submit(credit)
        if undo == "the credit, then the debit":
            self.submit(Request("compensate_credit", transaction_id, payee, amount))
        if undo != "nothing":
            self.submit(Request("compensate_debit", transaction_id, payer, amount))
        return debit

    @rule(
        target=requests,
        payer=st.sampled_from(list(ACCOUNTS)),
        payee=st.sampled_from(list(ACCOUNTS)),
        amount=amounts,
        undo=st.sampled_from(["nothing", "the debit, then the credit", "the credit, then the debit"]),
    )
    def single_service_transfer_conserves_money(self, payer: str, payee: str, amount: int, undo: str) -> Request:
        # A saga's requests between two accounts of this one service, under an
        # id of its own, with its compensations in either order: whatever the
        # service refuses along the way, the total over the service must not
        # change, except by a debit whose credit has not landed yet.
        transaction_id = f"transfer-{next(self.ids)}"
        total_before = self.total()
        debit = self.submit(Request("debit", transaction_id, payer, amount))
        if not self.model.applied(transaction_id, "debit"):
            assert self.total() == total_before
            return debit
        credit = Request("credit", transaction_id, payee, amount)
        self.submit(credit)
        if undo == "the debit, then the credit":
            self.submit(Request("compensate_debit", transaction_id, payer, amount))
            self.submit(Request("compensate_credit", transaction_id, payee, amount))
        elif undo == "the credit, then the debit":
            self.submit(Request("compensate_credit", transaction_id, payee, amount))
            self.submit(Request("compensate_debit", transaction_id, payer, amount))
        in_flight = amount if undo == "nothing" and not self.model.applied(transaction_id, "credit") else 0
        assert self.total() == total_before - in_flight, f"{undo}: money was created or destroyed"
        return debit

    @rule(
        target=requests,
        payer=st.sampled_from(list(ACCOUNTS)),
        payee=st.sampled_from(list(ACCOUNTS)),
        amount=amounts,
        order=st.permutations(["debit", "credit", "compensate_debit", "compensate_credit"]),
    )
    def single_service_transfer_in_any_order_conserves_money(
        self, payer: str, payee: str, amount: int, order: list[str]
    ) -> Request:
        # The four requests of one transfer between two accounts of this
        # service, in any order the network may deliver them: a credit
        # overtaking its debit, a compensation arriving before what it undoes.
        # Once all four have landed, the total over the service is unchanged.
        transaction_id = f"transfer-{next(self.ids)}"
        total_before = self.total()
        user_of = {"debit": payer, "compensate_debit": payer, "credit": payee, "compensate_credit": payee}
        requests = [Request(operation, transaction_id, user_of[operation], amount) for operation in order]
        for request in requests:
            self.submit(request)
        assert self.total() == total_before, f"{order}: money was created or destroyed"
        return requests[-1]

    def total(self) -> int:
        return sum(account["balance"] for account in self.get("/accounts")["accounts"])

    @rule(target=requests, request=requests, transaction_id=transactions)
    def spend_the_same_amount(self, request: Request, transaction_id: str) -> Request:
        return self.submit(Request("debit", transaction_id, request.user_id, request.amount))

    @rule(
        target=requests,
        credit_id=transactions,
        spend_id=transactions,
        user_id=st.sampled_from(list(ACCOUNTS)),
        amount=amounts,
    )
    def credit_spend_and_take_back(self, credit_id: str, spend_id: str, user_id: str, amount: int) -> Request:
        # Money credited and then spent cannot be taken back: the credit stands.
        self.submit(Request("credit", credit_id, user_id, amount))
        self.submit(Request("debit", spend_id, user_id, amount))
        return self.submit(Request("compensate_credit", credit_id, user_id, amount))

    @rule(
        target=requests,
        operation=st.sampled_from(FORWARDS),
        transaction_id=transactions,
        user_id=st.sampled_from(list(ACCOUNTS)),
        beyond=st.sampled_from([0, 1]),
    )
    def at_the_edge(self, operation: str, transaction_id: str, user_id: str, beyond: int) -> Request:
        # Exactly the whole balance, or exactly up to the limit, and one more.
        balance = self.model.balances[user_id]
        amount = (balance if operation == "debit" else MAX_BALANCE - balance) + beyond
        assume(1 <= amount <= MAX_AMOUNT)
        return self.submit(Request(operation, transaction_id, user_id, amount))

    @rule(target=requests, user_id=st.sampled_from(list(ACCOUNTS)), amount=amounts)
    def give_a_debit_back_once_there_is_room(self, user_id: str, amount: int) -> Request:
        # Credits fill the account after its debit, so the debit cannot be
        # given back until a later debit makes room; then it is, exactly once.
        debit_id, fill_id, room_id = (f"room-{next(self.ids)}" for _ in range(3))
        self.submit(Request("debit", debit_id, user_id, amount))
        room = MAX_BALANCE - self.model.balances[user_id]
        if 1 <= room <= MAX_AMOUNT:
            self.submit(Request("credit", fill_id, user_id, room))
        undo = Request("compensate_debit", debit_id, user_id, amount)
        self.submit(undo)
        self.submit(Request("debit", room_id, user_id, amount))
        self.submit(undo)
        return self.submit(undo)

    @rule(target=requests, request=requests)
    def compensate(self, request: Request) -> Request:
        operation = COMPENSATION_OF.get(request.operation, request.operation)
        return self.submit(Request(operation, request.transaction_id, request.user_id, request.amount))

    @rule()
    def read_the_balances(self) -> None:
        listing = self.get("/accounts")
        assert {account["user_id"]: account["balance"] for account in listing["accounts"]} == self.model.balances

    # -- one request, predicted and checked -------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def post(self, request: Request) -> httpx.Response:
        assert self.client is not None
        return self.run(
            self.client.post(
                f"/{request.operation}",
                headers={"transaction_id": request.transaction_id},
                json={"user_id": request.user_id, "amount": request.amount},
            )
        )

    def get(self, path: str) -> Any:
        assert self.client is not None
        response = self.run(self.client.get(path, headers={"transaction_id": "model-check"}))
        assert response.status_code == 200
        return response.json()

    def submit(self, request: Request) -> Request:
        decision, replay = self.model.decide(request)
        response = self.post(request)
        body = response.json()
        # Shown by --hypothesis-show-statistics: which paths the runs reached.
        event(f"{request.operation}: {response.status_code} {body.get('code') or body.get('outcome')}")
        if replay:
            event("replayed")
        if response.status_code == 500 and body.get("code") == "injected_fault":
            self.learn_from_the_trail(request, decision, replay)
            return request
        if replay:
            assert response.headers.get("idempotent-replayed") == "true"
            assert (response.status_code, body) == self.first_answers[request.key], "a replay changed the answer"
            return request
        assert "idempotent-replayed" not in response.headers
        assert (response.status_code, body.get("code"), body.get("outcome")) == (
            decision.status,
            decision.code,
            decision.outcome,
        ), f"{request} was answered {response.status_code} {body}, the model decided {decision}"
        if decision.status == 200:
            expected = {
                "transaction_id": request.transaction_id,
                "operation": request.operation,
                "user_id": request.user_id,
                "amount": request.amount,
                "balance": decision.balance,
                "outcome": decision.outcome,
            }
            assert body == expected
        if decision.recorded:
            self.first_answers[request.key] = (response.status_code, body)
        self.record(request, decision)
        return request

    def learn_from_the_trail(self, request: Request, decision: Decision, replay: bool) -> None:
        """An injected fault hides the outcome; the audit trail tells whether the credit landed."""
        assert request.operation == "credit"
        assert not replay, "a recorded answer must be replayed, never faulted"
        assert decision.recorded, "a request refused before the ledger must not reach fault injection"
        trail = self.get(f"/transactions/{request.transaction_id}")
        credits = [entry for entry in trail["entries"] if entry["operation"] == "credit"]
        if not credits:
            return
        # Faulted after commit: the credit is recorded, so every retry replays it.
        (entry,) = credits
        assert (entry["status"], entry.get("outcome"), entry.get("balance")) == (200, "applied", decision.balance)
        self.first_answers[request.key] = (
            200,
            {
                "transaction_id": request.transaction_id,
                "operation": "credit",
                "user_id": request.user_id,
                "amount": request.amount,
                "balance": decision.balance,
                "outcome": "applied",
            },
        )
        self.record(request, decision)

    def record(self, request: Request, decision: Decision) -> None:
        forward = FORWARD_OF.get(request.operation, request.operation)
        if decision.outcome == "applied":
            assert (request.transaction_id, forward) not in self.voided, f"{request} applied after its void"
        if decision.outcome == "voided":
            self.voided.add((request.transaction_id, forward))
        if decision.outcome in ("applied", "reversed"):
            self.moved[request.operation][request.user_id] += request.amount
        self.model.commit(request, decision)

    # -- invariants --------------------------------------------------------------

    @invariant()
    def balances_are_exactly_what_the_answers_moved(self) -> None:
        # Read from the store, not over HTTP, to keep a step cheap: a failing
        # example is shrunk by replaying thousands of them.
        balances = {account.user_id: account.balance for account in self.run(self.store.accounts())}
        assert all(balance >= 0 for balance in balances.values()), balances
        assert balances == self.model.balances
        moved = self.moved
        for user_id, initial in ACCOUNTS.items():
            assert balances[user_id] == (
                initial
                + moved["credit"][user_id]
                - moved["debit"][user_id]
                + moved["compensate_debit"][user_id]
                - moved["compensate_credit"][user_id]
            ), user_id

    @invariant()
    def the_ledger_agrees_with_its_own_journal(self) -> None:
        self.run(self.store.check_invariants())


class LedgerWithCreditFaultsMachine(LedgerMachine):
    app_settings: ClassVar[dict[str, Any]] = {"credit_fault_rate": 0.25, "credit_fault_after_commit_rate": 0.25}


BOUNDED = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# A pass takes seconds. A failure is shrunk by replaying examples for up to
# Hypothesis's own limit of 300 s; the timeout leaves room for that, so a
# failure is reported with its shortest example rather than cut off.
SHRINKING_ROOM = pytest.mark.timeout(600)


def on_store(machine: type[LedgerMachine], store_name: str) -> type[LedgerMachine]:
    return type(
        f"{machine.__name__}On{store_name.title()}", (machine,), {"open_store": staticmethod(STORES[store_name])}
    )


def bounded_for(store_name: str) -> settings:
    # A database store syncs every commit to disk, which makes an example
    # several times slower; the memory store, as fast as the rules alone, runs
    # the most examples, and the database stores enough to meet every rule.
    return BOUNDED if store_name == "memory" else settings(BOUNDED, max_examples=20)


@SHRINKING_ROOM
@pytest.mark.parametrize("store_name", sorted(STORES))
def test_the_app_follows_the_reference_model(store_name: str) -> None:
    run_state_machine_as_test(on_store(LedgerMachine, store_name), settings=bounded_for(store_name))


@SHRINKING_ROOM
@pytest.mark.parametrize("store_name", sorted(STORES))
def test_the_app_follows_the_reference_model_through_lost_and_refused_credits(store_name: str) -> None:
    run_state_machine_as_test(on_store(LedgerWithCreditFaultsMachine, store_name), settings=bounded_for(store_name))
