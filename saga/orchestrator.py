"""The orchestrator: runs many sagas at once on one connection pool, and recovers unfinished ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType

import httpx

from generated_client import AuthenticatedClient, Client
from saga import workflow
from saga.log import SagaLog
from saga.records import AccountRef, SagaRecord
from saga.replicas import Replicas, url_problem
from saga.retry import RetryPolicies
from saga.run import CompensationBlocked, SagaRun, TransferResult
from saga.states import SagaState
from saga.steps import AnyClient

logger = logging.getLogger("saga")

MAX_AMOUNT = 10**12
_USER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InvalidTransfer(ValueError):
    """The transfer was refused before anything was logged or sent."""


def fast_transport(max_connections: int = 256) -> httpx.AsyncBaseTransport:
    """httpx over aiohttp: httpx's own async pool collapses under concurrency (httpx #3215)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=None))


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Orchestrator:
    """Runs transfer sagas through the generated client.

    ``transport`` is shared by every service's client, so all sagas share one
    connection pool; by default it is :func:`fast_transport`. ``new_id``,
    ``rng`` and ``now_ms`` exist so that a simulation can make runs
    reproducible.
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
        now_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.log = log
        self.policies = policies or RetryPolicies()
        self.token = token
        self._owns_transport = transport is None
        self._transport = transport or fast_transport(max_connections=max(concurrency, 1) * 2)
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._rng = rng or random.Random()
        self._now_ms = now_ms
        self._slots = asyncio.Semaphore(concurrency)
        self._clients: dict[str, AnyClient] = {}
        #: Which URL of each service to try first, shared by every saga and read.
        self.replicas = Replicas()
        #: Sagas this orchestrator is driving now: recovery must not start a
        #: second runner for any of them.
        self._running: set[str] = set()

    # -- public API ---------------------------------------------------------------

    async def transfer(self, source: AccountRef, target: AccountRef, amount: int) -> TransferResult:
        """Move ``amount`` minor units from ``source`` to ``target``; returns once the saga ends."""
        _validate(source, target, amount)
        now = self._now_ms()
        record = SagaRecord(self._new_id(), source, target, amount, created_at_ms=now, updated_at_ms=now)
        with self._claim(record):
            async with self._slots:
                # The id is durable before the first request: a crash from here
                # on is recovered under the same id.
                await self.log.create(record, SagaState.DEBITING)
                record.state = SagaState.DEBITING
                return await self._drive(record)

    async def resume(self, record: SagaRecord) -> TransferResult:
        """Carry an unfinished saga from its logged state to a terminal one."""
        if record.state.is_terminal:
            return TransferResult(record.transaction_id, record.state, record.source, record.target, record.amount, ())
        with self._claim(record):
            async with self._slots:
                return await self._drive(record)

    async def recover(self) -> list[TransferResult]:
        """Resume every unfinished saga in the log that this orchestrator is not already running."""
        unfinished = [record for record in await self.log.unfinished() if record.transaction_id not in self._running]
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

    @property
    def http_timeout(self) -> httpx.Timeout:
        """Every timeout of the HTTP client: the longest request timeout of any step.

        httpx's default caps each request at 5 seconds, below a longer
        ``request_timeout``; the step's own deadline (saga/steps.py) is the
        one meant to end a request. Balance and trail reads get the same
        allowance. The aiohttp transport takes its connect, read and pool
        timeouts from this per request, in place of its session's defaults.
        """
        policies = self.policies
        longest = max(policy.request_timeout for policy in (policies.debit, policies.credit, policies.compensation))
        return httpx.Timeout(longest)

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> Orchestrator:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- machinery ----------------------------------------------------------------

    async def _drive(self, record: SagaRecord) -> TransferResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        run = SagaRun(record, self.log, self.client_for, self.policies, self._rng, self._now_ms, self.replicas)
        error = None
        try:
            state = await workflow.transfer(run)
        except CompensationBlocked as blocked:
            state, error = run.state, str(blocked)
            logger.warning(
                "saga left in %s for the next recovery: %s",
                state,
                blocked,
                extra={"fields": {"transaction_id": record.transaction_id}},
            )
        return TransferResult(
            record.transaction_id,
            state,
            record.source,
            record.target,
            record.amount,
            tuple(run.attempts),
            error or record.last_error,
            loop.time() - started,
        )

    def client_for(self, service_url: str) -> AnyClient:
        """The generated client for one URL of a service, on the shared pool."""
        client = self._clients.get(service_url)
        if client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            http = httpx.AsyncClient(
                base_url=service_url, transport=self._transport, headers=headers, timeout=self.http_timeout
            )
            generated: AnyClient
            if self.token:
                generated = AuthenticatedClient(base_url=service_url, token=self.token, raise_on_unexpected_status=True)
            else:
                generated = Client(base_url=service_url, raise_on_unexpected_status=True)
            client = generated.set_async_httpx_client(http)
            self._clients[service_url] = client
        return client


def _validate(source: AccountRef, target: AccountRef, amount: int) -> None:
    if type(amount) is not int:
        raise InvalidTransfer(f"amount must be an integer number of minor units, got {amount!r}")
    if not 1 <= amount <= MAX_AMOUNT:
        raise InvalidTransfer(f"amount must be between 1 and {MAX_AMOUNT} minor units, got {amount}")
    for role, account in (("source", source), ("target", target)):
        if not _USER_ID.fullmatch(account.user_id):
            raise InvalidTransfer(f"{role} user_id {account.user_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
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
