"""The simulated network between the saga and the accounts services: in-process, seeded, faulty.

One :class:`SimulatedNetwork` is the ``transport=`` of every orchestrator in
a run. It routes each request by URL host to that service's ASGI app and,
on the way, follows a seeded fault plan: it loses requests, loses answers
the server already acted on, delivers copies of requests again much later,
delays requests so that concurrent sagas overtake each other, takes whole
services off the network for a while, crashes and restarts services, and
tells the run when to crash the orchestrator.

The server's side of a request runs as a task of its own, as it would on a
real server: a client that crashes or times out mid-request does not stop a
request already on the wire from landing. A service that crashes takes its
requests with it: those it was handling die where they are, those on the
wire to it and its answers on the way back are lost, and until it is back
every connection to it is refused.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

from saga.simulation.faults import (
    DELAY_REORDER,
    DUPLICATE_LATE,
    INJECTED_500,
    OUTAGE,
    REQUEST_LOST,
    RESPONSE_LOST,
    SERVICE_RESTART,
    STALE_CREDENTIALS,
    FaultRates,
    MillisecondRange,
    TraceEvent,
    fault_counter,
)

LEDGER_STEPS = frozenset({"debit", "credit", "compensate_debit", "compensate_credit"})

#: The bearer token every simulated service takes, and the orchestrators send.
SERVICE_TOKEN = "simulated-service-token"
#: What a request carries while its service's credentials have rotated ahead of the orchestrators'.
STALE_AUTHORIZATION = "Bearer a-token-since-rotated-out"


#: What an outage does to a service's traffic while it lasts.
DROPS_REQUESTS = "drops requests"
DROPS_RESPONSES = "drops responses"
#: A partition that buffers: each client's connection breaks at once, but its
#: request is held and delivered when the partition heals, all of them in a
#: burst and in no particular order. Only this brings a debit or credit to a
#: service after the saga gave up on it and fenced it.
HOLDS_REQUESTS = "holds requests"
OUTAGE_KINDS = (DROPS_REQUESTS, DROPS_RESPONSES, HOLDS_REQUESTS)


@dataclass(frozen=True, slots=True)
class _Outage:
    until: float
    kind: str


@dataclass
class _Service:
    """One accounts service's process, as the network sees it."""

    transport: httpx.ASGITransport
    #: How many times the service crashed: a connection made to one
    #: incarnation dies with it, even if the request arrives after the restart.
    incarnation: int = 0
    down: bool = False
    #: The tasks running a request inside the app right now, with the
    #: request's (transaction_id, step): a crash kills them where they are.
    handling: dict[asyncio.Task[Any], tuple[str, str]] = field(default_factory=dict)


def _transport(app: ASGIApp) -> httpx.ASGITransport:
    # raise_app_exceptions=False: an app that fails answers 500 to its
    # client, as a real server would, instead of raising into the saga.
    return httpx.ASGITransport(app=app, raise_app_exceptions=False)


#: The request extension a sender stamps with its own clock (ms since the epoch) as the request leaves it.
SENT_AT_MS = "simulation.sent_at_ms"


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request as it reached the network: what, for which saga, where, and when it was sent.

    ``sender_ms`` is the sender's own clock as the request left it (the
    :data:`SENT_AT_MS` extension): a saga's deadline is judged on that clock.
    ``at_ms`` is the virtual time it reached the network.
    """

    at_ms: int
    sender_ms: int | None
    transaction_id: str
    #: The ledger operation, or ``read`` for a GET (a trail or a balance).
    step: str
    host: str
    #: The service was down: the connection was refused, and nothing reached it.
    refused: bool = False


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes


@dataclass(frozen=True, slots=True)
class _Fate:
    """What the network decided, when the request was sent, to do with it."""

    request_ms: int
    response_ms: int
    slow: bool
    response_lost: bool
    hang: bool
    duplicate_after_ms: int | None
    during_outage: bool

    def describe(self) -> str:
        decisions = ["outage"] if self.during_outage else []
        if self.slow:
            decisions.append("slow")
        if self.response_lost:
            decisions.append("response_hangs" if self.hang else "response_lost")
        if self.duplicate_after_ms is not None:
            decisions.append(f"duplicate+{self.duplicate_after_ms}ms")
        return ",".join(decisions)


class SimulatedNetwork(httpx.AsyncBaseTransport):
    """An ``httpx`` transport to in-process ASGI apps, one per host, with seeded faults."""

    def __init__(
        self,
        apps: Mapping[str, ASGIApp],
        rates: FaultRates,
        rng: random.Random,
        trace: list[TraceEvent],
    ) -> None:
        self._services = {host: _Service(_transport(app)) for host, app in apps.items()}
        self._rates = rates
        self._rng = rng
        self._trace = trace
        self._outages: dict[str, _Outage] = {}
        #: Until when (virtual seconds) each service refuses the orchestrators' token.
        self._stale_credentials_until: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.counts: Counter[str] = fault_counter()
        self.requests = 0
        #: Every request that reached the network under a transaction id, in order (late copies excluded).
        self.sent: list[SentRequest] = []
        #: Called when the plan says the orchestrator crashes now; set by the run.
        self.on_crash: Callable[[], None] | None = None
        #: Called with a crashed service's host when its downtime is over; it
        #: returns the service's new app. Without it no service ever crashes.
        self.on_restart: Callable[[str], ASGIApp] | None = None
        #: Called as (host, transaction_id, step) right after a server handled
        #: a request, before anything else runs: the moment to look at its state.
        self.on_delivered: Callable[[str, str, str], None] | None = None

    # -- the transport ---------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        service = self._services.get(host)
        if service is None:
            raise httpx.ConnectError(f"no simulated service at {host}", request=request)
        step = request.url.path.lstrip("/")
        self._note_sent(request, host, step if request.method == "POST" else "read")
        if request.method != "POST" or step not in LEDGER_STEPS:
            # Reads are the simulator's own bookkeeping, not the saga's traffic.
            if service.down:
                raise httpx.ConnectError("simulated: connection refused, the service is down", request=request)
            return await _forward(service.transport, request, await request.aread())
        return await self._ledger_request(service, request, host, step)

    async def _ledger_request(self, service: _Service, request: httpx.Request, host: str, step: str) -> httpx.Response:
        body = await request.aread()
        transaction_id = request.headers.get("transaction_id", "")
        self.requests += 1
        self._maybe_crash()
        self._maybe_start_outage()
        self._maybe_restart_a_service()
        self._maybe_rotate_credentials()
        if self._stale_credentials_until.get(host, 0.0) > asyncio.get_running_loop().time():
            request.headers["authorization"] = STALE_AUTHORIZATION
        if service.down:
            self._record("send", transaction_id, step, host, "service down", "-")
            await asyncio.sleep(self._latency(self._rates.latency_ms) / 1000)
            raise httpx.ConnectError("simulated: connection refused, the service is down", request=request)
        outage = self._current_outage(host)
        rng = self._rng
        if outage is not None and outage.kind == HOLDS_REQUESTS:
            return await self._hold(service, request, body, transaction_id, step, host, outage)
        if (outage is not None and outage.kind == DROPS_REQUESTS) or rng.random() < self._rates.request_lost:
            self.counts[REQUEST_LOST] += 1
            fault = "outage:request_lost" if outage is not None else REQUEST_LOST
            self._record("send", transaction_id, step, host, fault, "-")
            await asyncio.sleep(self._latency(self._rates.latency_ms))
            raise httpx.ConnectError("simulated: the request was lost", request=request)
        fate = self._decide(outage)
        connection = service.incarnation
        delivery = asyncio.get_running_loop().create_task(
            self._deliver(service, request, body, transaction_id, step, host, fate, connection)
        )
        self._keep(delivery)
        # Waiting without awaiting the task itself: cancelling this client
        # (a crash, a timeout) must leave the delivery to finish on its own.
        await asyncio.wait({delivery})
        answer = None if delivery.cancelled() else delivery.result()
        if fate.response_lost:
            if fate.hang:
                # Until the saga's own request timeout gives up on it.
                await asyncio.get_running_loop().create_future()
            await asyncio.sleep(fate.response_ms / 1000)
            raise httpx.ReadTimeout("simulated: the response was lost", request=request)
        await asyncio.sleep(fate.response_ms / 1000)
        if answer is None or service.incarnation != connection:
            if answer is not None:
                self._record("dropped", transaction_id, step, host, "answer lost with the crashed service")
            raise httpx.ReadError("simulated: the service crashed, the connection was reset", request=request)
        return httpx.Response(answer.status, headers=answer.headers, content=answer.content, request=request)

    async def _hold(
        self,
        service: _Service,
        request: httpx.Request,
        body: bytes,
        transaction_id: str,
        step: str,
        host: str,
        outage: _Outage,
    ) -> httpx.Response:
        """Break the client's connection now; deliver the request once the outage ends."""
        self.counts[DELAY_REORDER] += 1
        now = asyncio.get_running_loop().time()
        held_ms = math.ceil((outage.until - now) * 1000) + self._latency(self._rates.slow_latency_ms)
        fate = _Fate(held_ms, 0, False, False, False, None, True)
        self._record("send", transaction_id, step, host, f"outage:held {held_ms}ms", "-")
        # The held request is delivered on a connection of its own when the
        # partition heals: it lands on whatever incarnation is up by then.
        self._keep(
            asyncio.get_running_loop().create_task(
                self._deliver(service, request, body, transaction_id, step, host, fate, None)
            )
        )
        await asyncio.sleep(self._latency(self._rates.latency_ms) / 1000)
        raise httpx.ReadError("simulated: the connection broke; the request may still land", request=request)

    def _decide(self, outage: _Outage | None) -> _Fate:
        rates, rng = self._rates, self._rng
        request_ms = self._latency(rates.latency_ms)
        response_ms = self._latency(rates.latency_ms)
        slow = rng.random() < rates.slow
        if slow:
            self.counts[DELAY_REORDER] += 1
            extra = self._latency(rates.slow_latency_ms)
            if rng.random() < 0.5:
                request_ms += extra
            else:
                response_ms += extra
        response_lost = (outage is not None and outage.kind == DROPS_RESPONSES) or rng.random() < rates.response_lost
        hang = response_lost and rng.random() < rates.response_hangs
        if response_lost:
            self.counts[RESPONSE_LOST] += 1
        duplicate_after_ms = None
        if rng.random() < rates.duplicate_late:
            duplicate_after_ms = self._latency(rates.duplicate_delay_ms)
            self.counts[DUPLICATE_LATE] += 1
        return _Fate(request_ms, response_ms, slow, response_lost, hang, duplicate_after_ms, outage is not None)

    async def _deliver(
        self,
        service: _Service,
        request: httpx.Request,
        body: bytes,
        transaction_id: str,
        step: str,
        host: str,
        fate: _Fate,
        connection: int | None,
    ) -> _Answer | None:
        """Land the request and return the answer; None if the service it was sent to crashed first.

        ``connection`` is the incarnation the client connected to, or None
        for a request that opens its connection only when it lands.
        """
        await _arrive_on_a_tick(fate.request_ms)
        if service.down or (connection is not None and connection != service.incarnation):
            self._record("dropped", transaction_id, step, host, "request lost with the crashed service")
            return None
        answer = await self._call(service, request, body, transaction_id, step)
        self._record("send", transaction_id, step, host, fate.describe(), self._summarize(answer))
        if fate.duplicate_after_ms is not None:
            self._keep(
                asyncio.get_running_loop().create_task(
                    self._deliver_duplicate(service, request, body, transaction_id, step, host, fate.duplicate_after_ms)
                )
            )
        return answer

    async def _deliver_duplicate(
        self,
        service: _Service,
        request: httpx.Request,
        body: bytes,
        transaction_id: str,
        step: str,
        host: str,
        after_ms: int,
    ) -> None:
        await asyncio.sleep(after_ms / 1000)
        if service.down:
            self._record("dropped", transaction_id, step, host, f"duplicate +{after_ms}ms: the service is down")
            return
        answer = await self._call(service, request, body, transaction_id, step)
        self._record("duplicate", transaction_id, step, host, f"+{after_ms}ms", self._summarize(answer))

    async def _call(
        self, service: _Service, request: httpx.Request, body: bytes, transaction_id: str, step: str
    ) -> _Answer:
        handler = asyncio.current_task()
        assert handler is not None
        service.handling[handler] = (transaction_id, step)
        try:
            response = await service.transport.handle_async_request(
                httpx.Request(request.method, request.url, headers=request.headers, content=body)
            )
            content = await response.aread()
        finally:
            service.handling.pop(handler, None)
        if self.on_delivered is not None:
            self.on_delivered(request.url.host, transaction_id, step)
        return _Answer(response.status_code, list(response.headers.raw), content)

    def _note_sent(self, request: httpx.Request, host: str, step: str) -> None:
        transaction_id = request.headers.get("transaction_id", "")
        if not transaction_id:
            return
        sender_ms = request.extensions.get(SENT_AT_MS)
        at_ms = round(asyncio.get_running_loop().time() * 1000)
        sender = sender_ms if isinstance(sender_ms, int) else None
        refused = self._services[host].down
        self.sent.append(SentRequest(at_ms, sender, transaction_id, step, host, refused))

    # -- the plan --------------------------------------------------------------

    def _maybe_crash(self) -> None:
        if self._rng.random() < self._rates.crash and self.on_crash is not None:
            self.on_crash()

    def _maybe_start_outage(self) -> None:
        if self._rng.random() >= self._rates.outage:
            return
        host = self._rng.choice(sorted(self._services))
        duration_ms = self._latency(self._rates.outage_ms)
        kind = self._rng.choice(OUTAGE_KINDS)
        self._outages[host] = _Outage(asyncio.get_running_loop().time() + duration_ms / 1000, kind)
        self.counts[OUTAGE] += 1
        self._record("outage", service=host, fault=f"{kind} for {duration_ms}ms")

    def _maybe_restart_a_service(self) -> None:
        restart = self.on_restart
        if self._rng.random() >= self._rates.service_restart or restart is None:
            return
        host = self._rng.choice(sorted(self._services))
        service = self._services[host]
        if service.down:
            return
        downtime_ms = self._latency(self._rates.restart_downtime_ms)
        service.down = True
        service.incarnation += 1
        killed = list(service.handling.items())
        service.handling.clear()
        # The process dies: the requests it was in the middle of stop where
        # they are. A store commits a request whole or not at all.
        for handler, (transaction_id, step) in killed:
            handler.cancel()
            self._record("dropped", transaction_id, step, host, "killed mid-request by the crash")
        self.counts[SERVICE_RESTART] += 1
        self._record("down", service=host, fault=f"crashed; back in {downtime_ms}ms")
        self._keep(asyncio.get_running_loop().create_task(self._restart(service, host, downtime_ms, restart)))

    async def _restart(self, service: _Service, host: str, downtime_ms: int, restart: Callable[[str], ASGIApp]) -> None:
        await asyncio.sleep(downtime_ms / 1000)
        service.transport = _transport(restart(host))
        service.down = False
        self._record("up", service=host, fault=f"incarnation {service.incarnation}")

    def _maybe_rotate_credentials(self) -> None:
        if self._rng.random() >= self._rates.credential_rotation:
            return
        host = self._rng.choice(sorted(self._services))
        duration_ms = self._latency(self._rates.credential_rotation_ms)
        self._stale_credentials_until[host] = asyncio.get_running_loop().time() + duration_ms / 1000
        self.counts[STALE_CREDENTIALS] += 1
        self._record("rotated", service=host, fault=f"the orchestrators' token refused for {duration_ms}ms")

    def _current_outage(self, host: str) -> _Outage | None:
        outage = self._outages.get(host)
        if outage is None or outage.until <= asyncio.get_running_loop().time():
            return None
        return outage

    def _latency(self, span: MillisecondRange) -> int:
        return self._rng.randint(span.low, span.high)

    # -- bookkeeping -----------------------------------------------------------

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _summarize(self, answer: _Answer) -> str:
        try:
            parsed = json.loads(answer.content)
        except ValueError:
            parsed = {}
        replayed = any(name.lower() == b"idempotent-replayed" for name, _ in answer.headers)
        if answer.status == 200 and isinstance(parsed, dict):
            return f"200 {parsed.get('outcome')}{' replayed' if replayed else ''}"
        code = parsed.get("code") if isinstance(parsed, dict) else None
        if code == "injected_fault":
            self.counts[INJECTED_500] += 1
        return f"{answer.status} {code}{' replayed' if replayed else ''}"

    def record(self, kind: str, detail: str = "", transaction_id: str = "") -> None:
        """Note something the run did (a crash, a recovery, an operator's action) in the trace."""
        self._record(kind, transaction_id, fault=detail)

    def _record(
        self, kind: str, transaction_id: str = "", step: str = "", service: str = "", fault: str = "", answer: str = ""
    ) -> None:
        at_ms = round(asyncio.get_running_loop().time() * 1000)
        self._trace.append(TraceEvent(at_ms, kind, transaction_id, step, service, fault, answer))

    @property
    def in_flight(self) -> int:
        """Deliveries and late duplicates not yet landed."""
        return len(self._background)

    async def drain(self) -> None:
        """Wait until every request on the wire, late duplicates included, has landed."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        # Shared by every orchestrator of a run; each one closing its
        # transport must not cut off the requests still on the wire.
        return None


async def _arrive_on_a_tick(latency_ms: int) -> None:
    """Wait out ``latency_ms``, then on to the start of the next whole millisecond.

    A server picks up what arrived since it last looked, and handles it all
    in one go: requests landing within the same millisecond run in the same
    loop iteration, interleaving at every await, as concurrent requests do on
    a busy server. Without ticks, float-valued send times would almost never
    let two requests meet.
    """
    loop = asyncio.get_running_loop()
    arrival = math.ceil(loop.time() * 1000 + latency_ms) / 1000
    await asyncio.sleep(arrival - loop.time())


async def _forward(server: httpx.ASGITransport, request: httpx.Request, body: bytes) -> httpx.Response:
    response = await server.handle_async_request(
        httpx.Request(request.method, request.url, headers=request.headers, content=body)
    )
    content = await response.aread()
    return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)
