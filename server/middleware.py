"""The accounts service's middleware: the bearer token, the ledger's id and position, and the timing on every answer."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.edge import RequestGuardMiddleware
from server.metrics import LatencyMiddleware, RequestLog
from server.problems import PROBLEM_CONTENT_TYPE, problem_body
from server.settings import Settings
from server.timing import RequestTimes, ServerTimingMiddleware

CONTRACT_PATH_PREFIXES = ("/debit", "/credit", "/compensate_", "/accounts", "/transactions/")

#: The header that answers the ledger's position (see LedgerStore.position).
LEDGER_POSITION = "Ledger-Position"


def position_header(position: int) -> dict[str, str]:
    return {LEDGER_POSITION: str(position)}


def presented_bearer(scope: Scope) -> bytes | None:
    """The token of the request's one ``Authorization: Bearer`` header; None without exactly one such header."""
    presented = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(presented) != 1:
        # Two Authorization headers are ambiguous, whatever they hold.
        return None
    scheme, _, credentials = presented[0].partition(b" ")
    # The scheme is case-insensitive (RFC 9110 section 11.1); the token is not.
    return credentials.strip(b" ") if scheme.lower() == b"bearer" else None


def bearer_authorized(scope: Scope, tokens: tuple[str, ...] | None) -> bool:
    """Whether the request carries one of the bearer tokens; every request does when the service asks for none."""
    if tokens is None:
        return True
    presented = presented_bearer(scope)
    if presented is None:
        return False
    # Every token is compared, so the time taken does not tell which one came close.
    matched = [hmac.compare_digest(presented, token.encode()) for token in tokens]
    return any(matched)


class BearerTokenMiddleware:
    """Refuses contract operations (and ``also_guarded`` paths, such as /metrics) without the bearer token."""

    def __init__(
        self, app: ASGIApp, tokens: tuple[str, ...], log: RequestLog, also_guarded: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.log = log
        self.guarded = CONTRACT_PATH_PREFIXES + also_guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(self.guarded)
            and not bearer_authorized(scope, self.tokens)
        ):
            self.log(None, scope["path"], 401, "unauthorized")
            body = problem_body("unauthorized", 401, "this service requires Authorization: Bearer <token>")
            response = Response(
                body, status_code=401, media_type=PROBLEM_CONTENT_TYPE, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LedgerIdMiddleware:
    """Names the ledger in a ``Ledger-Id`` header on every answer of a contract operation, errors included.

    A client that sees the id change knows the service now holds another
    ledger, one that forgot what the old one recorded.
    """

    def __init__(self, app: ASGIApp, ledger_id: Callable[[], str | None]) -> None:
        self.app = app
        self.ledger_id = ledger_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(CONTRACT_PATH_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def send_with_ledger_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                ledger_id = self.ledger_id()
                if ledger_id is not None:
                    message = {**message, "headers": [*message["headers"], (b"ledger-id", ledger_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_ledger_id)


class LedgerPositionMiddleware:
    """Answers ``Ledger-Position`` on an answer of a contract operation that lacks it, when the store can say.

    The endpoints answer the position their own store call read; this covers
    the answers made without one (a refused body, a reused key). Not on a 503:
    the store has just failed, and asking again would only wait for it. Not
    to a request without the token: it must not make the store work, nor
    learn how far the ledger has come.
    """

    def __init__(
        self, app: ASGIApp, position: Callable[[], Awaitable[int | None]], tokens: tuple[str, ...] | None
    ) -> None:
        self.app = app
        self.position = position
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(CONTRACT_PATH_PREFIXES)
            or not bearer_authorized(scope, self.tokens)
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_position(message: Message) -> None:
            if (
                message["type"] == "http.response.start"
                and message["status"] != 503
                and all(name != b"ledger-position" for name, _ in message["headers"])
            ):
                # Read now, after the request arrived: at least what any answer before it said.
                position = await self.position()
                if position is not None:
                    message = {**message, "headers": [*message["headers"], (b"ledger-position", b"%d" % position)]}
            await send(message)

        await self.app(scope, receive, send_with_position)


def add_service_middleware(
    app: FastAPI,
    settings: Settings,
    log: RequestLog,
    ledger_id: Callable[[], str | None],
    position: Callable[[], Awaitable[int | None]],
    times: RequestTimes,
) -> None:
    """Wrap ``app`` in the service's middleware, in the order each needs."""
    # Added last, so it runs first: a refused request costs no body read and no token check.
    accepted_tokens = settings.accepted_tokens
    if accepted_tokens is not None:
        app.add_middleware(
            BearerTokenMiddleware,
            tokens=accepted_tokens,
            log=log,
            also_guarded=() if settings.metrics_public else ("/metrics",),
        )
    app.add_middleware(
        RequestGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_refusal=lambda path, status, code: log(None, path, status, code),
    )
    # Outside the refusals above, so that they carry the position too.
    app.add_middleware(LedgerPositionMiddleware, position=position, tokens=accepted_tokens)
    # Outermost, so that every answer carries it, the refusals above included.
    app.add_middleware(LedgerIdMiddleware, ledger_id=ledger_id)
    # Outside everything else, so that the time of a refused request is measured too.
    app.add_middleware(LatencyMiddleware, metrics=log.metrics)
    # Outermost of all: its total runs from the request's arrival to its answer's headers.
    app.add_middleware(ServerTimingMiddleware, current=times.current, prefixes=CONTRACT_PATH_PREFIXES)
