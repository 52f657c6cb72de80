"""The HTTP edge: what the service refuses before a request reaches the ledger.

- A body over the limit is refused with 413 without reading past the limit.
- A request with more than one ``transaction_id`` header is refused: which
  one was meant is a guess.
- JSON is read exactly: a repeated key, ``NaN`` or ``Infinity`` is an error,
  and numbers are kept as decimals so that an amount is integral only if its
  exact value is.
- Slow clients cannot hold a connection: the headers and the body each have a
  deadline, and an idle keep-alive connection is closed.
- Past the connection limit, a new connection is answered 503
  ``service_overloaded`` and closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.problems import PROBLEM_CONTENT_TYPE, ErrorCode, problem_body

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_body_bytes: int = 64 * 1024
    #: Seconds from the connection's start (or the end of the last answer's
    #: keep-alive wait) until the request's headers are complete.
    header_timeout: float = 10.0
    #: Seconds from the end of the headers until the body is complete.
    body_timeout: float = 10.0
    #: Seconds an idle keep-alive connection stays open.
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


async def _send_problem(
    send: Send, status: int, code: ErrorCode, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = problem_body(code, status, detail)
    raw_headers = [(b"content-type", PROBLEM_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuardMiddleware:
    """Refuses ambiguous headers and oversized bodies; hands the app a body it has already read.

    ``check_transaction_id`` refuses two ``transaction_id`` headers: the
    accounts service's contract has that header, the transfers service's not.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        on_refusal: Callable[[str, int, str], None],
        check_transaction_id: bool = True,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_refusal = on_refusal
        self.check_transaction_id = check_transaction_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        transaction_ids = [value for name, value in scope["headers"] if name == b"transaction_id"]
        if self.check_transaction_id and len(transaction_ids) > 1:
            self.on_refusal(scope["path"], 400, "invalid_transaction_id")
            await _send_problem(
                send,
                400,
                "invalid_transaction_id",
                f"the request has more than one transaction_id header ({len(transaction_ids)}); send exactly one",
            )
            return
        declared = [value for name, value in scope["headers"] if name == b"content-length"]
        if any(not value.isdigit() or int(value) > self.max_body_bytes for value in declared):
            await self._too_large(scope, send)
            return
        body = bytearray()
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                # Stop reading here: the rest of the body is never taken in.
                await self._too_large(scope, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        self.on_refusal(scope["path"], 413, "request_too_large")
        await _send_problem(
            send,
            413,
            "request_too_large",
            f"the body is larger than this service accepts ({self.max_body_bytes} bytes)",
            {"connection": "close"},
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears more than once")
        result[key] = value
    return result


def parse_json_exactly(text: str | bytes) -> Any:
    """json.loads, but a repeated key or a non-number constant is an error, and fractions stay exact."""
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            raise
        document = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise json.JSONDecodeError(str(error), document, 0) from None


class ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_exactly(await self.body())
        return self._json


class ExactJsonRoute(APIRoute):
    """A route whose JSON body is read by :func:`parse_json_exactly`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(ExactJsonRequest(request.scope, request.receive))

        return exact_handler


def guarded_protocol(limits: EdgeLimits, ledger_id: str | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with read deadlines and a connection limit.

    uvicorn arms only the keep-alive timeout: a client that sends its headers
    or body slowly, or nothing at all, would hold its connection for ever.
    """
    overloaded = _raw_problem_response(
        503,
        "Service Unavailable",
        "service_overloaded",
        f"this service holds {limits.max_connections} connections already; retry later",
        {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"}
        | ({"Ledger-Id": ledger_id} if ledger_id else {}),
    )

    class GuardedProtocol(HttpToolsProtocol):
        read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(overloaded)
                transport.close()
                return
            self._arm(limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(limits.header_timeout)

        def on_headers_complete(self) -> None:
            self._arm(limits.body_timeout)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self.read_deadline = self.loop.call_later(seconds, self._deadline_passed)

        def _disarm(self) -> None:
            if self.read_deadline is not None:
                self.read_deadline.cancel()
                self.read_deadline = None

        def _deadline_passed(self) -> None:
            self.read_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raw_problem_response(status: int, reason: str, code: ErrorCode, detail: str, headers: dict[str, str]) -> bytes:
    body = problem_body(code, status, detail)
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {PROBLEM_CONTENT_TYPE}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
