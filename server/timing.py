"""The ``Server-Timing`` header: the time a request spent in the ledger's store, and in the service."""

from __future__ import annotations

import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The scope key under which a request's clock is kept, for the answers made outside the middleware.
CLOCK_SCOPE_KEY = "server.request_clock"

#: What an answer made before the request reaches the service says: it spent nothing here.
UNTIMED = "store;dur=0.000, total;dur=0.000"


class RequestClock:
    """When one request arrived, and how long its store calls took so far, in nanoseconds."""

    __slots__ = ("started_ns", "store_ns")

    def __init__(self, started_ns: int) -> None:
        self.started_ns = started_ns
        self.store_ns = 0


def server_timing(clock: RequestClock) -> bytes:
    """The header's value for ``clock``'s request, read now."""
    # Integer arithmetic: the header says exactly what was measured, to the microsecond.
    store_us = clock.store_ns // 1000
    total_us = (time.perf_counter_ns() - clock.started_ns) // 1000
    return b"store;dur=%d.%03d, total;dur=%d.%03d" % (*divmod(store_us, 1000), *divmod(total_us, 1000))


class RequestTimes:
    """One app's request clocks: the store adds its calls to the clock of the request that made them.

    A context variable finds that request, since the store is called from
    within the request's task; one per app, so that apps in one process keep
    their times apart.
    """

    def __init__(self) -> None:
        self.current: ContextVar[RequestClock | None] = ContextVar("request_clock", default=None)

    def add_store_time(self, ns: int) -> None:
        clock = self.current.get()
        if clock is not None:
            clock.store_ns += ns


class ServerTimingMiddleware:
    """Answers ``Server-Timing`` on every answer to a request whose path starts with one of ``prefixes``."""

    def __init__(self, app: ASGIApp, current: ContextVar[RequestClock | None], prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.current = current
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        clock = RequestClock(time.perf_counter_ns())
        # Kept in the scope too: an unexpected error is answered outside every middleware.
        scope[CLOCK_SCOPE_KEY] = clock

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"server-timing", server_timing(clock))]
            await send(message)

        token = self.current.set(clock)
        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            self.current.reset(token)
