"""The transfers service seen from outside: its generated client, and the banks' own view of what it did.

Everything here speaks HTTP to real processes: the transfers service through
``generated_client.transfers``, the accounts services through
``generated_client.accounts``. A transfer is judged by what the banks say,
never by what the transfers service says about itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from generated_client.accounts import Client as AccountsClient
from generated_client.accounts.api.accounts import get_transaction, list_accounts
from generated_client.accounts.models import AccountList, Outcome, TrailEntry, TransactionTrail
from generated_client.transfers import AuthenticatedClient, Client
from generated_client.transfers.api.transfers import create_transfer, get_transfer, get_transfer_events, list_transfers
from generated_client.transfers.models import (
    AccountAt,
    EventKind,
    Problem,
    Transfer,
    TransferEvent,
    TransferEvents,
    TransferPage,
    TransferRequest,
    TransferState,
)
from generated_client.transfers.types import UNSET, Response, Unset
from saga import verify
from saga.records import AccountRef
from saga.states import SagaState

#: The states a transfer may end in here: no bank in these tests forgets a transfer.
ENDS = frozenset({TransferState.COMPLETED, TransferState.COMPENSATED, TransferState.FAILED})
FINAL = ENDS | {TransferState.NEEDS_ATTENTION, TransferState.CANCELLED, TransferState.RESOLVED}
#: Longer than the longest ``?wait`` the contract allows, so a held answer is never cut short by the client.
CLIENT_TIMEOUT = httpx.Timeout(45.0)
#: What a caller sees of a service that died or is not up yet: the request may or may not have been taken.
CONNECTION_LOST = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

#: Every state change a saga may log after the one before it (saga/workflow.py).
NEXT_STATES: Mapping[TransferState, frozenset[TransferState]] = {
    TransferState.PENDING: frozenset({TransferState.DEBITING}),
    TransferState.DEBITING: frozenset({TransferState.CREDITING, TransferState.FAILED, TransferState.COMPENSATING}),
    TransferState.CREDITING: frozenset({TransferState.COMPLETED, TransferState.COMPENSATING}),
    TransferState.COMPENSATING: frozenset({TransferState.COMPENSATED, TransferState.COMPLETED}),
}
#: The bank that each step goes to.
SOURCE_STEPS = frozenset({"debit", "compensate_debit"})

TransfersClient = Client | AuthenticatedClient


def transfers_client(url: str, token: str | None = None) -> TransfersClient:
    if token is None:
        return Client(base_url=url, timeout=CLIENT_TIMEOUT)
    return AuthenticatedClient(base_url=url, token=token, timeout=CLIENT_TIMEOUT)


def transfer_request(source: tuple[str, str], target: tuple[str, str], amount: int) -> TransferRequest:
    """A request body from (service, user_id) pairs."""
    return TransferRequest(
        source=AccountAt(service=source[0], user_id=source[1]),
        target=AccountAt(service=target[0], user_id=target[1]),
        amount=amount,
    )


def new_key(prefix: str = "key") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def problem_code(answer: Response[Any] | httpx.Response) -> str:
    """The ``code`` of a problem answer, read from the bytes, so that any status can be judged the same way."""
    content = answer.content
    assert content, f"answer {answer.status_code} has no body"
    body = json.loads(content)
    code = body.get("code") if isinstance(body, dict) else None
    assert isinstance(code, str), f"not a problem: {content!r}"
    return code


def submit(client: TransfersClient, body: TransferRequest, key: str) -> Response[Problem | Transfer]:
    return create_transfer.sync_detailed(client=client, body=body, idempotency_key=key)


def submitted(client: TransfersClient, body: TransferRequest, key: str) -> Transfer:
    """Submit once; the transfer the service recorded now (201)."""
    answer = create_transfer.sync_detailed(client=client, body=body, idempotency_key=key)
    assert answer.status_code == 201, answer.content
    assert isinstance(answer.parsed, Transfer)
    return answer.parsed


async def submit_until_answered(
    client: TransfersClient,
    body: TransferRequest,
    key: str,
    *,
    within: float = 60.0,
    on_lost: Callable[[], None] = lambda: None,
) -> tuple[list[int], Transfer]:
    """Send the same submission until the service answers it, as a caller that lost answers would.

    Returns every status answered on the way (a 503 included) and the
    transfer of the answer that took: 201, or 200 when an earlier send of
    this key had been recorded and its answer lost.
    """
    statuses: list[int] = []
    deadline = time.monotonic() + within
    pause = 0.02
    while True:
        try:
            answer = await create_transfer.asyncio_detailed(client=client, body=body, idempotency_key=key)
        except CONNECTION_LOST:
            statuses.append(0)
            on_lost()
        else:
            statuses.append(answer.status_code)
            if answer.status_code in (200, 201):
                assert isinstance(answer.parsed, Transfer)
                return statuses, answer.parsed
            assert answer.status_code == 503, answer.content
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} was not answered within {within:g} s: {statuses}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


def read(client: TransfersClient, transaction_id: str, *, wait: int | Unset = UNSET) -> Transfer:
    answer = get_transfer.sync_detailed(transaction_id, client=client, wait=wait)
    assert answer.status_code == 200, answer.content
    assert isinstance(answer.parsed, Transfer)
    return answer.parsed


def wait_for_end(client: TransfersClient, transaction_id: str, *, within: float = 60.0) -> Transfer:
    """The transfer once it is final, held by ``?wait`` rather than polled."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        transfer = read(client, transaction_id, wait=max(1, min(30, int(remaining))))
        if transfer.state in FINAL:
            return transfer
        if remaining <= 0:
            raise AssertionError(f"{transaction_id} is still {transfer.state} after {within:g} s")


async def await_end(client: TransfersClient, transaction_id: str, *, within: float = 90.0) -> Transfer:
    """:func:`wait_for_end` for many transfers at once; connection errors are retried until the deadline."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        try:
            answer = await get_transfer.asyncio_detailed(
                transaction_id, client=client, wait=max(1, min(30, int(remaining)))
            )
        except CONNECTION_LOST:
            answer = None
        if answer is not None:
            assert answer.status_code == 200, answer.content
            assert isinstance(answer.parsed, Transfer)
            if answer.parsed.state in FINAL:
                return answer.parsed
        if remaining <= 0:
            raise AssertionError(f"{transaction_id} did not end within {within:g} s")
        if answer is None:
            await asyncio.sleep(0.1)


def every_transfer(
    client: TransfersClient, *, limit: int = 500, state: TransferState | Unset = UNSET
) -> list[Transfer]:
    """Every transfer in the log, page by page, in the order the pages give them."""
    transfers: list[Transfer] = []
    after: str | Unset = UNSET
    while True:
        answer = list_transfers.sync_detailed(client=client, limit=limit, after=after, state=state)
        assert answer.status_code == 200, answer.content
        page = answer.parsed
        assert isinstance(page, TransferPage)
        transfers += page.transfers
        if not isinstance(page.next_, str):
            return transfers
        assert page.transfers, "a page with a next cursor must not be empty"
        after = page.next_


def events_of(client: TransfersClient, transaction_id: str) -> list[TransferEvent]:
    answer = get_transfer_events.sync_detailed(transaction_id, client=client)
    assert answer.status_code == 200, answer.content
    assert isinstance(answer.parsed, TransferEvents)
    assert answer.parsed.transaction_id == transaction_id
    return answer.parsed.events


# -- the banks' side ------------------------------------------------------------------

Balances = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Banks:
    """The accounts services a transfers service was started with: name -> URL."""

    urls: Mapping[str, str]
    _clients: dict[str, AccountsClient] = field(default_factory=dict, init=False, repr=False, compare=False)

    def accounts(self, name: str) -> AccountsClient:
        # One client per bank: a new one per read would open a connection (and build a TLS context) each time.
        if name not in self._clients:
            self._clients[name] = AccountsClient(base_url=self.urls[name], timeout=httpx.Timeout(30.0))
        return self._clients[name]

    def balances(self) -> Balances:
        """URL -> user_id -> balance, for every account of every bank, as GET /accounts answers."""
        balances: Balances = {}
        for name, url in self.urls.items():
            answer = list_accounts.sync(client=self.accounts(name), transaction_id=f"read-{uuid.uuid4()}")
            assert isinstance(answer, AccountList), answer
            balances[url] = {account.user_id: account.balance for account in answer.accounts}
        return balances

    def ledger_ids(self) -> dict[str, str]:
        """Name -> the Ledger-Id the bank answers with now."""
        ids = {}
        for name in self.urls:
            answer = list_accounts.sync_detailed(client=self.accounts(name), transaction_id=f"read-{uuid.uuid4()}")
            assert answer.status_code == 200, answer.content
            ids[name] = answer.headers["ledger-id"]
        return ids

    def trail(self, name: str, transaction_id: str) -> list[TrailEntry]:
        """What the bank recorded under ``transaction_id``: GET /transactions/{id}."""
        answer = get_transaction.sync(
            transaction_id, client=self.accounts(name), transaction_id_header=f"read-{uuid.uuid4()}"
        )
        assert isinstance(answer, TransactionTrail), answer
        return answer.entries

    def trails(self, transfers: Sequence[Transfer]) -> dict[tuple[str, str], list[TrailEntry]]:
        """(bank name, transaction_id) -> trail, for both sides of every transfer."""
        return {
            (name, transfer.transaction_id): self.trail(name, transfer.transaction_id)
            for transfer in transfers
            for name in sorted({service_of(transfer.source), service_of(transfer.target)})
        }

    def saga_end(self, transfer: Transfer) -> verify.SagaEnd:
        return verify.SagaEnd(
            transfer.transaction_id,
            SagaState(transfer.state.value),
            AccountRef(self.urls[service_of(transfer.source)], transfer.source.user_id),
            AccountRef(self.urls[service_of(transfer.target)], transfer.target.user_id),
            transfer.amount,
        )

    def judge(
        self,
        before: Balances,
        transfers: Sequence[Transfer],
        trails: Mapping[tuple[str, str], Sequence[TrailEntry]],
    ) -> list[verify.Violation]:
        """saga/verify.py's invariants over the banks' balances now and their trails: [] when the money is right.

        ``transfers`` must be every transfer that moved money on these banks since ``before``.
        """
        by_url = {
            (self.urls[name], transaction_id): [
                verify.TrailItem(
                    entry.operation.value,
                    entry.user_id,
                    entry.amount,
                    entry.outcome.value if isinstance(entry.outcome, Outcome) else None,
                )
                for entry in entries
            ]
            for (name, transaction_id), entries in trails.items()
        }
        ends = [self.saga_end(transfer) for transfer in transfers]
        return verify.check(before, self.balances(), ends, by_url)


def service_of(account: object) -> str:
    service = getattr(account, "service", None)
    assert isinstance(service, str), f"{account} names no service"
    return service


def _attempt_mismatches(
    transfer: Transfer,
    event: TransferEvent,
    numbers: dict[str, int],
    ledger_ids: Mapping[str, str],
    answered: set[tuple[str, str, int]],
) -> list[str]:
    tid = transfer.transaction_id
    if isinstance(event.step, Unset) or not isinstance(event.latency_us, int) or not isinstance(event.attempt, int):
        return [f"{tid}: an attempt needs a step, a number and a latency: {event}"]
    problems = []
    step = event.step.value
    # Numbers count the requests of one run of a step; each claim runs its steps afresh.
    if event.attempt != numbers.get(step, 0) + 1:
        problems.append(f"{tid}: {step} attempt {event.attempt} follows {numbers.get(step, 0)}")
    numbers[step] = event.attempt
    bank = service_of(transfer.source) if step in SOURCE_STEPS else service_of(transfer.target)
    if event.service != bank:
        problems.append(f"{tid}: {step} went to {event.service}, not {bank}")
    if event.latency_us < 0 or event.worker is None or event.epoch is None:
        problems.append(f"{tid}: an attempt needs a latency, a worker and an epoch: {event}")
    if isinstance(event.status, int):
        if event.ledger_id != ledger_ids[bank]:
            problems.append(f"{tid}: {step} answered by ledger {event.ledger_id}, {bank} is {ledger_ids[bank]}")
        if event.status < 500:
            # The ledger's own answers; a 5xx (an injected fault) is refused before the ledger sees it.
            answered.add((bank, step, event.status))
    elif not event.error:
        problems.append(f"{tid}: {step} attempt has neither a status nor an error: {event}")
    return problems


def story_mismatches(
    transfer: Transfer,
    events: Sequence[TransferEvent],
    trails: Mapping[tuple[str, str], Sequence[TrailEntry]],
    ledger_ids: Mapping[str, str],
) -> list[str]:
    """Where a final transfer's events disagree with themselves or with the banks' audit trails; [] if nowhere.

    The events must run in time order from PENDING along the saga's
    transitions to the transfer's state; every attempt must name its step,
    bank, answer, latency, worker and lease epoch, and be written under the
    latest claim; every answer a bank gave must be in that bank's trail with
    the same status, and every entry of a trail must be an answer the log
    recorded, so that neither side knows of a request the other does not.
    """
    tid = transfer.transaction_id
    problems: list[str] = []
    times = [event.at for event in events]
    if times != sorted(times):
        problems.append(f"{tid}: events out of time order")
    states = [event.state for event in events if event.kind is EventKind.STATE]
    if not states or states[0] is not TransferState.PENDING or states[-1] is not transfer.state:
        problems.append(f"{tid}: states {states} do not run from PENDING to {transfer.state}")
    for before, after in itertools.pairwise(states):
        if isinstance(before, Unset) or isinstance(after, Unset) or after not in NEXT_STATES.get(before, ()):
            problems.append(f"{tid}: {before} -> {after} is no transition of the saga")
    attempts = [event for event in events if event.kind is EventKind.ATTEMPT]
    if len(attempts) != transfer.attempts:
        problems.append(f"{tid}: {len(attempts)} attempt events, the transfer counts {transfer.attempts}")
    lease: tuple[str, int] | None = None
    numbers: dict[str, int] = {}
    answered: set[tuple[str, str, int]] = set()
    for event in events:
        if event.kind is EventKind.CLAIM:
            if event.worker is None or event.epoch is None or (lease is not None and event.epoch <= lease[1]):
                problems.append(f"{tid}: a claim needs a worker and a newer epoch: {event}")
            else:
                lease, numbers = (event.worker, event.epoch), {}
            continue
        if lease is not None and (event.worker, event.epoch) != lease:
            problems.append(f"{tid}: {event.kind} written by {event.worker}/{event.epoch}, the lease is {lease}")
        if event.kind is EventKind.ATTEMPT:
            problems += _attempt_mismatches(transfer, event, numbers, ledger_ids, answered)
    recorded = {
        (name, entry.operation.value, entry.status.value)
        for (name, transaction_id), entries in trails.items()
        if transaction_id == tid
        for entry in entries
    }
    if answered != recorded:
        problems.append(f"{tid}: the log has the answers {sorted(answered)}, the banks' trails {sorted(recorded)}")
    return problems


def story_mismatches_of(client: TransfersClient, banks: Banks, transfers: Sequence[Transfer]) -> list[str]:
    """:func:`story_mismatches` of every transfer, its events read from the service and its trails from the banks."""
    trails = banks.trails(transfers)
    ledger_ids = banks.ledger_ids()
    return [
        problem
        for transfer in transfers
        for problem in story_mismatches(transfer, events_of(client, transfer.transaction_id), trails, ledger_ids)
    ]
