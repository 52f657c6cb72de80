"""The orchestrator: runs many sagas at once on one connection pool, and recovers unfinished ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType

import httpx

from saga import workflow
from saga.clients import ServiceClients, longest_request_timeout
from saga.directory import SERVICE_NAME, ServiceDirectory
from saga.ledger_watch import LedgerWatch
from saga.ledgers import LedgerUntrusted
from saga.logs import LeaseLost, SagaLog, SagaLogError
from saga.records import AccountRef, SagaRecord
from saga.replicas import url_problem
from saga.retry import RetryPolicies
from saga.run import CompensationBlocked, SagaRun, TransferResult
from saga.states import SagaState
from saga.steps import AnyClient, timing_clock
from saga.waits import WaitObserver
from server.shared.contract_rules import MAX_AMOUNT, USER_ID, USER_ID_RULE

logger = logging.getLogger("saga")

#: Seconds a claimed saga stays this orchestrator's without a renewal.
DEFAULT_LEASE_SECONDS = 10.0
#: How long a blocked compensation (one the service refused for now: no room
#: for the money given back, a token it does not take) waits before it is
#: tried again, so that a worker does not send it in a tight loop.
DEFAULT_BLOCKED_WAIT_SECONDS = 30.0
#: As many as one claim takes when recovering everything claimable.
_ALL = 1_000_000_000


class InvalidTransfer(ValueError):
    """The transfer was refused before anything was logged or sent."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def default_owner() -> str:
    """A name for this orchestrator that no other process shares: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SagaHeld(ValueError):
    """Another orchestrator holds the saga's lease: this one may not drive it now."""


class Orchestrator:
    """Runs transfer sagas through the generated client.

    Its :attr:`clients` (saga/clients.py) hold the ``token`` and every
    service's client on one ``transport``, so all sagas share one connection
    pool; by default it is :func:`~saga.clients.fast_transport`. ``new_id``,
    ``rng`` and ``now_ms`` exist so that a simulation can make runs
    reproducible. ``waits`` is told what every run waits on, as it happens
    (saga/waits.py).

    Every saga it drives it holds by a lease in the log (``owner``, an epoch,
    ``lease_seconds``), renewed in the background while it drives; every
    commit is conditional on that epoch. On a log that one process holds
    (SQLite) leases only record who drove what; on a shared log they keep
    orchestrators from driving one saga at once, and let another take a saga
    over when this one dies.
    """

    def __init__(
        self,
        log: SagaLog,
        *,
        policies: RetryPolicies | None = None,
        concurrency: int = 64,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        new_id: Callable[[], str] | None = None,
        rng: random.Random | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        directory: ServiceDirectory | None = None,
        blocked_wait_seconds: float = DEFAULT_BLOCKED_WAIT_SECONDS,
        waits: WaitObserver | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not lease_seconds > 0:
            raise ValueError("lease_seconds must be above 0")
        self.owner = owner or default_owner()
        self.lease_ms = max(1, round(lease_seconds * 1000))
        #: transaction_id -> epoch of every saga this orchestrator drives now.
        self._held: dict[str, int] = {}
        self._renewer: asyncio.Task[None] | None = None
        self.leases_lost = 0
        self.log = log
        self.policies = policies or RetryPolicies()
        #: The accounts services' clients, the token and the pool every saga of this orchestrator shares.
        self.clients = ServiceClients(
            token=token,
            transport=transport,
            timeout=longest_request_timeout(self.policies),
            connections=max(concurrency, 1) * 2,
        )
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._rng = rng or random.Random()
        self._now_ms = now_ms
        self._slots = asyncio.Semaphore(concurrency)
        #: Sagas this orchestrator is driving now: recovery must not start a
        #: second runner for any of them.
        self._running: set[str] = set()
        #: The URLs of named services, which take the place of those logged with a saga.
        self.directory = directory or ServiceDirectory()
        #: Every service's ledger mark, and the quarantined services (see saga/ledgers.py).
        self.watch = LedgerWatch(log, now_ms)
        #: A blocked compensation waits this long before anyone tries it again, unless an operator retries it.
        self.blocked_wait_ms = max(0, round(blocked_wait_seconds * 1000))
        #: transaction_id -> the event that wakes its run from a backoff (see retry_now).
        self._nudges: dict[str, asyncio.Event] = {}
        #: Told what every run waits on, as it happens (saga/waits.py).
        self.waits = waits

    # -- public API ---------------------------------------------------------------

    async def transfer(
        self, source: AccountRef, target: AccountRef, amount: int, *, deadline_ms: int | None = None
    ) -> TransferResult:
        """Move ``amount`` minor units from ``source`` to ``target``; returns once the saga ends.

        After ``deadline_ms`` (on this orchestrator's clock) the saga sends no
        new forward request (see saga/workflow.py).
        """
        validate(source, target, amount)
        # Refused before anything is logged or sent: ServiceQuarantined.
        await self.watch.refuse_quarantined(source.service_key, target.service_key)
        now = self._now_ms()
        record = SagaRecord(
            self._new_id(), source, target, amount, created_at_ms=now, updated_at_ms=now, deadline_ms=deadline_ms
        )
        with self._claim(record):
            async with self._slots:
                clock = timing_clock()
                started = clock()
                # Created already leased to this orchestrator, at epoch 1.
                record.owner, record.epoch = self.owner, 1
                record.lease_expires_at_ms = self._now_ms() + self.lease_ms
                # The id is durable before the first request: a crash from here
                # on is recovered under the same id.
                await self.log.create(record, SagaState.DEBITING)
                created_us = int((clock() - started) * 1_000_000)
                record.state = SagaState.DEBITING
                return await self._drive(record, started=started, log_wait_us=created_us)

    async def resume(self, record: SagaRecord) -> TransferResult:
        """Carry an unfinished saga from its logged state to a terminal one, once it is claimable.

        Raises SagaHeld while another orchestrator holds its lease.
        """
        if record.state.is_terminal:
            return TransferResult(record.transaction_id, record.state, record.source, record.target, record.amount, ())
        with self._claim(record):
            claimed = await self.log.claim(
                self.owner,
                limit=1,
                lease_ms=self.lease_ms,
                now_ms=self._now_ms(),
                transaction_id=record.transaction_id,
                include_waiting=True,
            )
            if not claimed:
                raise SagaHeld(f"saga {record.transaction_id} is held by another orchestrator")
            async with self._slots:
                return await self._drive(claimed[0])

    async def claim(self, limit: int, *, include_waiting: bool = False) -> list[SagaRecord]:
        """Lease up to ``limit`` claimable sagas to this orchestrator; drive each with :meth:`drive`.

        ``include_waiting`` also takes blocked compensations before their
        wait is over: a recovery someone started tries everything now.
        """
        return await self.log.claim(
            self.owner, limit=limit, lease_ms=self.lease_ms, now_ms=self._now_ms(), include_waiting=include_waiting
        )

    def retry_now(self, transaction_id: str) -> None:
        """Cut short the backoff of the saga's run here, if this orchestrator drives it (an operator's retry)."""
        nudge = self._nudges.get(transaction_id)
        if nudge is not None:
            nudge.set()

    async def drive(self, record: SagaRecord) -> TransferResult:
        """Drive a saga that :meth:`claim` leased to this orchestrator."""
        with self._claim(record):
            async with self._slots:
                return await self._drive(record)

    async def release(self, record: SagaRecord) -> bool:
        """Hand a claimed saga back for anyone to claim now (after its driver was stopped)."""
        self._held.pop(record.transaction_id, None)
        return await self.log.release(record.transaction_id, record.epoch)

    async def recover(self) -> list[TransferResult]:
        """Claim every saga in the log that no live orchestrator holds, and resume them all."""
        claimed = await self.claim(_ALL, include_waiting=True)
        # A saga still running here whose lease had lapsed: that run stops at
        # its next commit (its epoch is stale now), and this claim takes over.
        unfinished = [record for record in claimed if record.transaction_id not in self._running]
        if unfinished:
            logger.info("recovering %d unfinished sagas", len(unfinished))
        # Claimed together, before any await, so that a concurrent recover()
        # cannot start a second runner for any of them.
        claims = [self._claim(record) for record in unfinished]

        async def drive(record: SagaRecord, claim: contextlib.AbstractContextManager[None]) -> TransferResult:
            with claim:
                async with self._slots:
                    return await self._drive(record)

        return list(
            await asyncio.gather(*(drive(record, claim) for record, claim in zip(unfinished, claims, strict=True)))
        )

    def _claim(self, record: SagaRecord) -> contextlib.AbstractContextManager[None]:
        """Mark a saga as driven by this orchestrator until the returned context exits."""
        if record.transaction_id in self._running:
            raise ValueError(f"saga {record.transaction_id} is already running")
        self._running.add(record.transaction_id)

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            try:
                yield
            finally:
                self._running.discard(record.transaction_id)

        return held()

    def client_for(self, service_url: str) -> AnyClient:
        """The generated client for one URL of a service, on the shared pool."""
        return self.clients.client_for(service_url)

    async def aclose(self) -> None:
        try:
            await self.watch.flush()
        except SagaLogError as error:
            logger.warning("ledger marks not saved: %s", error)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.clients.aclose()

    async def __aenter__(self) -> Orchestrator:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- machinery ----------------------------------------------------------------

    async def _drive(self, record: SagaRecord, *, started: float | None = None, log_wait_us: int = 0) -> TransferResult:
        """Run the saga; ``started`` and ``log_wait_us`` count what came before it, its creation.

        ``started`` is read on :func:`~saga.steps.timing_clock`.
        """
        nudge = self._nudges[record.transaction_id] = asyncio.Event()
        try:
            return await self._run(record, nudge, started, log_wait_us)
        finally:
            # Only once the saga is handed back: an operator's retry asked until then still reaches it.
            self._nudges.pop(record.transaction_id, None)

    async def _run(
        self, record: SagaRecord, nudge: asyncio.Event, started: float | None, log_wait_us: int
    ) -> TransferResult:
        record.source = self.directory.resolve(record.source)
        record.target = self.directory.resolve(record.target)
        clock = timing_clock()
        if started is None:
            started = clock()
        run = SagaRun(
            record,
            self.log,
            self.clients.client_for,
            self.policies,
            self._rng,
            self._now_ms,
            self.clients.replicas,
            self.watch,
            nudge=nudge,
            waits=self.waits,
        )
        error = None
        blocked = False
        self._hold(record)
        lost = False
        try:
            state = await workflow.transfer(run)
        except CompensationBlocked as refused:
            state, error, blocked = run.state, str(refused), True
            logger.warning(
                "saga left in %s, tried again in %g s or when an operator retries it: %s",
                state,
                self.blocked_wait_ms / 1000,
                refused,
                extra={"fields": {"transaction_id": record.transaction_id}},
            )
        except LedgerUntrusted as untrusted:
            error = str(untrusted)
            logger.error("saga needs attention: %s", untrusted)
            try:
                state = await run.finish(SagaState.NEEDS_ATTENTION, because=error, code="ledger_untrusted")
            except LeaseLost as taken:
                state, error, lost = run.state, str(taken), True
                self.leases_lost += 1
        except LeaseLost as taken:
            # Taken over: the new owner drives it on from what the log holds.
            state, error, lost = run.state, str(taken), True
            self.leases_lost += 1
            logger.info("%s", taken)
        finally:
            # Also when stopped (a crash, a cancelled worker): the lease then
            # runs out, or the worker hands it back.
            self._held.pop(record.transaction_id, None)
        if not lost and not state.is_terminal:
            # Anyone may take it up again: a blocked compensation after its wait, anything else at once;
            # and at once too when an operator asked for a retry while its last request was out.
            waits = blocked and self.blocked_wait_ms and not nudge.is_set()
            not_before_ms = self._now_ms() + self.blocked_wait_ms if waits else 0
            try:
                await self.log.release(record.transaction_id, record.epoch, not_before_ms=not_before_ms)
            except Exception as failure:
                logger.warning(
                    "releasing saga %s failed; its lease runs out instead: %s", record.transaction_id, failure
                )
        return TransferResult(
            record.transaction_id,
            state,
            record.source,
            record.target,
            record.amount,
            tuple(run.attempts),
            error or record.last_error,
            clock() - started,
            log_wait_us + run.log_wait_us,
        )

    def _hold(self, record: SagaRecord) -> None:
        self._held[record.transaction_id] = record.epoch
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_while_holding(), name=f"saga-leases-{self.owner}")

    async def _renew_while_holding(self) -> None:
        """Renew every lease held, three times per lease period, for as long as any is held."""
        while self._held:
            await asyncio.sleep(self.lease_ms / 3000)
            held = dict(self._held)
            if not held:
                break
            try:
                lost = await self.log.renew(self.owner, held, lease_ms=self.lease_ms, now_ms=self._now_ms())
            except Exception as error:
                logger.warning("renewing %d leases failed: %s", len(held), error)
                continue
            for transaction_id in sorted(lost):
                # Its run finds out at its next commit, before any further request.
                logger.info("the lease of saga %s was lost to another orchestrator", transaction_id)


def validate(source: AccountRef, target: AccountRef, amount: int) -> None:
    """Raise InvalidTransfer unless the transfer is one the saga can run."""
    if type(amount) is not int:
        raise InvalidTransfer(f"amount must be an integer number of minor units, got {amount!r}")
    if not 1 <= amount <= MAX_AMOUNT:
        raise InvalidTransfer(f"amount must be between 1 and {MAX_AMOUNT} minor units, got {amount}")
    for role, account in (("source", source), ("target", target)):
        if not USER_ID.fullmatch(account.user_id):
            raise InvalidTransfer(f"{role} user_id {account.user_id!r} must be {USER_ID_RULE}")
        if account.service is not None and not SERVICE_NAME.fullmatch(account.service):
            raise InvalidTransfer(f"{role} service name {account.service!r} is not a service name")
        if not account.urls:
            raise InvalidTransfer(f"{role} account {account.user_id!r} has no service URL")
        for url in account.urls:
            problem = url_problem(url)
            if problem is not None:
                raise InvalidTransfer(f"{role} service URL {url!r} {problem}")
    problem = same_account_problem(source, target)
    if problem is not None:
        raise InvalidTransfer(problem)


def same_account_problem(source: AccountRef, target: AccountRef) -> str | None:
    """Why ``source`` and ``target`` cannot be the two ends of one transfer, or None."""
    if source.same_account(target):
        return "source and target are the same account"
    if source.same_service(target) and set(source.urls) != set(target.urls):
        # Balances and audit trails are grouped by the set of a service's URLs:
        # one service listed two ways would be counted as two.
        if source.comparable_urls() == target.comparable_urls():
            return (
                f"source and target name one service in two spellings ({','.join(source.urls)} and "
                f"{','.join(target.urls)}): give it the same URLs both times"
            )
        return "source and target share a service URL but list different URLs for that service"
    return None
