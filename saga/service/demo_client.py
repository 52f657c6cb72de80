"""The demo's side of the transfers API: a caller that submits, retries, waits and checks, as any caller should.

Each transfer has its own Idempotency-Key. A POST that got no answer (a
connection that died, a timeout) or a 5xx may or may not have been recorded,
so it is sent again, with the same key and the same body, until the service
answers: the key makes the service record it at most once. Then each
transfer is awaited with ``GET /transfers/{id}?wait=``, the run is listed page
by page, and the answers are judged with :mod:`saga.verify` against the
banks' balances and audit trails.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import httpx

from generated_client.transfers import Client
from generated_client.transfers.api.transfers import (
    create_transfer,
    get_transfer,
    get_transfer_events,
    list_transfers,
)
from generated_client.transfers.models import (
    AccountAt,
    EventKind,
    Problem,
    Transfer,
    TransferAccount,
    TransferEvent,
    TransferEvents,
    TransferPage,
    TransferRequest,
)
from generated_client.transfers.types import UNSET, Response, Unset
from saga import verify
from saga.clients import fast_transport
from saga.drive.batch import PlannedTransfer
from saga.records import AccountRef
from saga.replicas import describe
from saga.service.app import MAX_PAGE, MAX_WAIT_SECONDS
from saga.states import ENDS_IN_ORDER, SagaState

T = TypeVar("T")
R = TypeVar("R")

FIRST_BACKOFF = 0.05
LONGEST_BACKOFF = 1.0
REQUEST_TIMEOUT = 10.0
#: How long one request may go unanswered, over all its tries, before the demo gives up on the service.
PATIENCE_SECONDS = 60.0

#: Checks of the API's own answers, beside :func:`saga.verify.check`'s of the money.
ONE_ID_PER_KEY = "one transaction id per key"
RECORDED_AS_SENT = "the service recorded what was sent"
LISTING_AGREES = "the listing agrees with each transfer"
KEY_INVARIANTS = frozenset({ONE_ID_PER_KEY, RECORDED_AS_SENT, LISTING_AGREES, "every saga terminal"})


class ApiFailure(Exception):
    """The transfers service refused a request, or gave no usable answer in time: the demo cannot go on."""


@dataclass
class Submission:
    """One transfer as the demo sends it, and what became of its POSTs."""

    key: str
    body: TransferRequest
    transaction_id: str | None = None
    #: 200 with Idempotent-Replayed: an earlier POST under the key was recorded, its answer lost.
    replayed: bool = False
    #: Why each POST before the answered one had to be sent again.
    failures: list[str] = field(default_factory=list)

    @property
    def posts(self) -> int:
        return len(self.failures) + (self.transaction_id is not None)


def submissions(run: str, planned: Sequence[PlannedTransfer], names: Mapping[str, str]) -> list[Submission]:
    """The planned transfers as requests to the API under the keys ``demo-<run>-<n>``.

    ``names`` maps each bank's URL to its name, as the transfers service knows it.
    """

    def at(account: AccountRef) -> AccountAt:
        return AccountAt(service=names[account.service_url], user_id=account.user_id)

    return [
        Submission(f"demo-{run}-{number}", TransferRequest(source=at(p.source), target=at(p.target), amount=p.amount))
        for number, p in enumerate(planned, 1)
    ]


def _why(response: Response[Any]) -> str:
    parsed = response.parsed
    if isinstance(parsed, Problem):
        return f"{response.status_code} {parsed.code}: {parsed.detail}"
    return str(response.status_code)


def _expect(response: Response[Any], kind: type[T], what: str) -> T:
    if not isinstance(response.parsed, kind):
        raise ApiFailure(f"{what} was refused: {_why(response)}")
    return response.parsed


def _retry_after(response: Response[Any]) -> float:
    hint = response.headers.get("Retry-After", "")
    return min(float(hint), LONGEST_BACKOFF) if hint.isdigit() else 0.0


class TransfersApi:
    """The generated transfers client on the aiohttp transport, with the retries every caller owes the service."""

    def __init__(
        self,
        url: str,
        *,
        connections: int = 64,
        patience: float = PATIENCE_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.patience = patience
        self._owns_transport = transport is None
        self._transport = transport or fast_transport(max_connections=connections)
        self._client = self._on_transport(url, REQUEST_TIMEOUT)
        # The service holds a wait for up to MAX_WAIT_SECONDS: the client must not time it out first.
        self._waiting = self._on_transport(url, MAX_WAIT_SECONDS + REQUEST_TIMEOUT)
        self._rng = rng or random.Random()

    def _on_transport(self, url: str, timeout: float) -> Client:
        http = httpx.AsyncClient(base_url=url, transport=self._transport, timeout=timeout)
        return Client(base_url=url).set_async_httpx_client(http)

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> TransfersApi:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def answered(
        self, what: str, send: Callable[[], Awaitable[Response[T]]], failures: list[str] | None = None
    ) -> Response[T]:
        """``send()`` until the service answers below 500, backing off between tries; ApiFailure after ``patience``.

        No answer, or a 5xx, says nothing of whether the request took effect:
        only a request that is safe to send twice may be sent again, which a
        read is and a POST is under its Idempotency-Key.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.patience
        delay = FIRST_BACKOFF
        tries = 0
        while True:
            tries += 1
            pause = delay * self._rng.uniform(0.8, 1.2)
            try:
                response = await send()
            except httpx.TransportError as error:
                why = describe(error)
            else:
                if response.status_code < 500:
                    return response
                why = _why(response)
                pause = max(pause, _retry_after(response))
            if failures is not None:
                failures.append(why)
            if loop.time() + pause > give_up:
                raise ApiFailure(f"{what}: no answer in {self.patience:g} s over {tries} tries; the last: {why}")
            await asyncio.sleep(pause)
            delay = min(delay * 2, LONGEST_BACKOFF)

    async def submit(self, submission: Submission) -> None:
        what = f"POST /transfers under {submission.key}"
        send = functools.partial(
            create_transfer.asyncio_detailed, client=self._client, body=submission.body, idempotency_key=submission.key
        )
        response = await self.answered(what, send, submission.failures)
        transfer = _expect(response, Transfer, what)
        submission.transaction_id = transfer.transaction_id
        submission.replayed = response.status_code == 200

    async def final(self, transaction_id: str, give_up: float) -> Transfer:
        """The transfer once it is final, or as it is when the loop's clock reaches ``give_up``."""
        loop = asyncio.get_running_loop()
        what = f"GET /transfers/{transaction_id}"
        while True:
            wait = max(0, min(MAX_WAIT_SECONDS, math.ceil(give_up - loop.time())))
            send = functools.partial(get_transfer.asyncio_detailed, transaction_id, client=self._waiting, wait=wait)
            transfer = _expect(await self.answered(what, send), Transfer, what)
            if SagaState(transfer.state.value).is_terminal or loop.time() >= give_up:
                return transfer

    async def listing(self, key_prefix: str) -> list[Transfer]:
        """Every transfer the service lists whose key starts with ``key_prefix``, page by page."""
        found: list[Transfer] = []
        after: str | Unset = UNSET
        while True:
            send = functools.partial(list_transfers.asyncio_detailed, client=self._client, limit=MAX_PAGE, after=after)
            page = _expect(await self.answered("GET /transfers", send), TransferPage, "GET /transfers")
            found += [t for t in page.transfers if (t.idempotency_key or "").startswith(key_prefix)]
            if not isinstance(page.next_, str):
                return found
            after = page.next_

    async def events(self, transaction_id: str) -> list[TransferEvent]:
        what = f"GET /transfers/{transaction_id}/events"
        send = functools.partial(get_transfer_events.asyncio_detailed, transaction_id, client=self._client)
        return _expect(await self.answered(what, send), TransferEvents, what).events


async def each(
    items: Sequence[T],
    concurrency: int,
    work: Callable[[T], Awaitable[R]],
    progress: Callable[[int, int], None] | None = None,
) -> list[R]:
    """``work`` on every item, ``concurrency`` at a time, in the items' order; the first failure stops the rest."""
    slots = asyncio.Semaphore(concurrency)
    done = 0

    async def one(item: T) -> R:
        nonlocal done
        async with slots:
            result = await work(item)
        done += 1
        if progress is not None:
            progress(done, len(items))
        return result

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in items]
    except BaseExceptionGroup as failed:
        # One failure says why the run cannot go on; the others are its echoes.
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


# -- judging the answers --------------------------------------------------------------


def saga_ends(finals: Iterable[Transfer], urls: Mapping[str, str]) -> list[verify.SagaEnd]:
    """The transfers as :mod:`saga.verify` judges sagas; ``urls`` maps a bank's name to its URL."""

    def account(at: TransferAccount) -> AccountRef:
        if not isinstance(at.service, str) or at.service not in urls:
            raise ApiFailure(f"a transfer names the service {at.service!r}, which the demo did not start")
        return AccountRef(urls[at.service], at.user_id, at.service)

    return [
        verify.SagaEnd(t.transaction_id, SagaState(t.state.value), account(t.source), account(t.target), t.amount)
        for t in finals
    ]


def answer_violations(
    sent: Sequence[Submission], finals: Sequence[Transfer], listed: Sequence[Transfer]
) -> list[verify.Violation]:
    """What the API's answers must agree on: one transfer per key, as sent, listed as it was answered.

    ``finals`` are the answers of ``GET /transfers/{id}``, one per submission
    in the same order; ``listed`` is every transfer the listing holds under
    the run's keys.
    """
    violations = []
    ids = Counter(submission.transaction_id for submission in sent)
    shared = sorted(str(transaction_id) for transaction_id, count in ids.items() if count > 1)
    if shared:
        violations.append(
            verify.Violation(ONE_ID_PER_KEY, f"{len(shared)} transaction ids answer more than one key", tuple(shared))
        )
    by_key: dict[str | None, list[Transfer]] = defaultdict(list)
    for transfer in listed:
        by_key[transfer.idempotency_key].append(transfer)
    unlisted, doubled, mislisted, changed, misrecorded = [], [], [], [], []
    for submission, final in zip(sent, finals, strict=True):
        found = by_key.pop(submission.key, [])
        if not found:
            unlisted.append(submission.key)
        elif len(found) > 1 or found[0].transaction_id != submission.transaction_id:
            doubled.append(submission.key)
        elif found[0].state != final.state:
            changed.append(submission.key)
        if final.transaction_id != submission.transaction_id:
            mislisted.append(submission.key)
        asked = submission.body
        if (final.source.service, final.source.user_id, final.target.service, final.target.user_id, final.amount) != (
            asked.source.service,
            asked.source.user_id,
            asked.target.service,
            asked.target.user_id,
            asked.amount,
        ):
            misrecorded.append(submission.key)
    strangers = sorted(str(key) for key in by_key)
    for invariant, keys, detail in (
        (ONE_ID_PER_KEY, unlisted, "keys answered 201 or 200 are missing from the listing"),
        (ONE_ID_PER_KEY, doubled, "keys are listed with more than one transfer, or with another transaction id"),
        (ONE_ID_PER_KEY, mislisted, "keys' transaction ids answer GET /transfers/{id} with another transfer"),
        (ONE_ID_PER_KEY, strangers, "keys the demo never sent are listed"),
        (RECORDED_AS_SENT, misrecorded, "transfers differ from the body POSTed under their key"),
        (LISTING_AGREES, changed, "transfers are listed in another state than GET /transfers/{id} answered"),
    ):
        if keys:
            violations.append(verify.Violation(invariant, f"{len(keys)} {detail}", tuple(keys[:10])))
    return violations


# -- the report -----------------------------------------------------------------------


@dataclass
class DemoReport:
    sent: list[Submission]
    #: One per submission, in the same order: GET /transfers/{id}?wait= once final.
    finals: list[Transfer]
    #: The run's transfers as the listing shows them.
    listed: list[Transfer]
    timelines: dict[str, list[TransferEvent]]
    #: Bank name -> URL.
    banks: dict[str, str]
    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]
    #: From the first POST to the last transfer's final answer.
    seconds: float
    violations: list[verify.Violation]

    @property
    def states(self) -> Counter[SagaState]:
        return Counter(SagaState(transfer.state.value) for transfer in self.listed)

    @property
    def pending(self) -> int:
        return sum(1 for transfer in self.finals if not SagaState(transfer.state.value).is_terminal)

    @property
    def posts(self) -> int:
        return sum(submission.posts for submission in self.sent)

    @property
    def posts_again(self) -> int:
        return sum(len(submission.failures) for submission in self.sent)

    @property
    def replayed(self) -> int:
        return sum(1 for submission in self.sent if submission.replayed)

    @property
    def requests(self) -> int:
        return sum(transfer.attempts for transfer in self.finals)

    @property
    def retries(self) -> int:
        """Requests to the banks beyond the first of each step."""
        return sum(1 for events in self.timelines.values() for event in events if _attempt_number(event) > 1)

    @property
    def compensations(self) -> int:
        return sum(1 for events in self.timelines.values() if any(_compensates(event) for event in events))

    @property
    def resumed(self) -> int:
        """Sagas driven by more than one process: the transfers service's, and the one started again after it."""
        return sum(1 for events in self.timelines.values() if len(_workers(events)) > 1)

    @property
    def money_conserved(self) -> bool:
        return verify.total(self.before) == verify.total(self.after)

    @property
    def keys_hold(self) -> bool:
        """Every key has exactly one transfer, as sent, and every transfer is final."""
        return not any(violation.invariant in KEY_INVARIANTS for violation in self.violations)

    def latency(self, quantile: float) -> float:
        """Seconds from a transfer's submission to its final state, as the API dates them."""
        latencies = sorted((t.updated_at - t.created_at).total_seconds() for t in self.finals)
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))]

    def render(self) -> str:
        ids = {submission.transaction_id for submission in self.sent}
        rows = [
            ("transfers", str(len(self.sent))),
            *((state.value.lower(), str(self.states[state])) for state in _SHOWN_STATES),
            ("still pending", str(self.pending)),
            (
                "POSTs sent",
                f"{self.posts} ({self.posts_again} sent again under their keys, {self.replayed} answered as replays)",
            ),
            ("transaction ids", f"{len(ids)} for {len(self.sent)} keys"),
            ("retries", str(self.retries)),
            ("compensations", str(self.compensations)),
            ("requests to the banks", str(self.requests)),
            ("sagas resumed by a new process", str(self.resumed)),
        ]
        for name, url in self.banks.items():
            rows.append((f"total at {name}", f"{sum(self.before[url].values())} -> {sum(self.after[url].values())}"))
        rows += [
            ("total over all services", f"{verify.total(self.before)} -> {verify.total(self.after)}"),
            ("money conserved", "yes" if self.money_conserved else "NO"),
            ("negative balances", str(sum(1 for a in self.after.values() for balance in a.values() if balance < 0))),
            ("audit of every saga", "checked"),
            ("balances against the sagas", "compared"),
            ("invariants", "all hold" if not self.violations else f"{len(self.violations)} BROKEN"),
            ("latency p50 / p99", f"{self.latency(0.5) * 1000:.1f} ms / {self.latency(0.99) * 1000:.1f} ms"),
            ("throughput", f"{len(self.sent) / max(self.seconds, 1e-9):.1f} transfers/s over {self.seconds:.2f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
        lines += [f"  ! {violation}" for violation in self.violations]
        return "\n".join(lines)

    def example(self) -> tuple[Submission, Transfer] | None:
        """The transfer whose timeline shows the most: resumed by a new process, hit by an outage, compensated."""

        def interest(pair: tuple[Submission, Transfer]) -> tuple[bool, bool, bool, bool]:
            submission, transfer = pair
            events = self.timelines.get(transfer.transaction_id, [])
            return (
                len(_workers(events)) > 1,
                any(isinstance(event.error, str) for event in events),
                any(_compensates(event) for event in events),
                bool(submission.failures) or any(_attempt_number(event) > 1 for event in events),
            )

        pairs = list(zip(self.sent, self.finals, strict=True))
        return max(pairs, key=interest) if pairs else None

    def timeline(self, submission: Submission, transfer: Transfer) -> list[str]:
        events = self.timelines.get(transfer.transaction_id, [])
        posts = f"{submission.posts} POSTs" if submission.posts != 1 else "1 POST"
        lines = [
            f"  {transfer.transaction_id}: {transfer.amount} from {transfer.source.user_id} at "
            f"{transfer.source.service} to {transfer.target.user_id} at {transfer.target.service}, {transfer.state}",
            f"  submitted under {submission.key} in {posts}",
        ]
        start = events[0].at if events else transfer.created_at
        for event in events:
            # The log dates events to the millisecond.
            at_ms = round((event.at - start).total_seconds() * 1000)
            lines.append(f"    {at_ms:>6d} ms  {describe_event(event)}")
        return lines


_SHOWN_STATES = ENDS_IN_ORDER


def _attempt_number(event: TransferEvent) -> int:
    return event.attempt if event.kind is EventKind.ATTEMPT and isinstance(event.attempt, int) else 0


def _compensates(event: TransferEvent) -> bool:
    return event.kind is EventKind.ATTEMPT and str(event.step).startswith("compensate")


def _workers(events: Iterable[TransferEvent]) -> set[str]:
    return {event.worker for event in events if event.kind is EventKind.CLAIM and isinstance(event.worker, str)}


def describe_event(event: TransferEvent) -> str:
    """One event of a timeline, as a line for a person."""
    if event.kind is EventKind.CLAIM:
        return f"claimed by {event.worker} (lease epoch {event.epoch})"
    if event.kind is EventKind.STATE:
        because = f" ({event.because})" if isinstance(event.because, str) else ""
        return f"-> {event.state}{because}"
    answer = str(event.status) if isinstance(event.status, int) else str(event.error or "no answer")
    if isinstance(event.code, str):
        answer += f" {event.code}"
    latency = f" in {event.latency_us / 1000:.1f} ms" if isinstance(event.latency_us, int) else ""
    return f"{event.step} attempt {event.attempt} at {event.service}: {answer}{latency}"
