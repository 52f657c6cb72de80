"""The HTTP edge: what the service refuses before a request reaches the ledger.

- A body over the limit is refused with 413 without reading past the limit.
- A request with more than one ``transaction_id`` header is refused: which
  one was meant is a guess.
- JSON is read exactly: a repeated key, ``NaN`` or ``Infinity`` is an error,
  and numbers are kept as decimals so that an amount is integral only if its
  exact value is.
- A request line and headers over the limit are refused with 431 as they
  arrive: the parser is never given much more than the limit of them.
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
from server.timing import UNTIMED

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 1
#: How long, and how much, a connection refused with 431 is still read (and
#: the bytes dropped) after the answer. Closing a socket that has unread bytes
#: resets the connection, and the reset can destroy the answer before the
#: client reads it; reading for ever would let a client keep the connection.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_body_bytes: int = 64 * 1024
    #: Bytes of a request's header section: the request line, every header
    #: line and the blank line that ends them.
    max_header_bytes: int = 16 * 1024
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
        if self.max_header_bytes < 1:
            raise ValueError("max_header_bytes must be at least 1")
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
    """json.loads, but a repeated key or a non-number constant is an error, and fractions stay exact.

    Whatever is wrong with the text, the error is a JSONDecodeError, which
    both services answer 422 ``invalid_request``.
    """
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        # The parser recurses once per nested array or object, so a body of a
        # few thousand brackets, well inside the size limit, exhausts the stack;
        # left to escape, that error became FastAPI's 400 or the transfers service's 500.
        reason = "the JSON is nested too deeply" if isinstance(error, RecursionError) else str(error)
        document = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise json.JSONDecodeError(reason, document, 0) from None


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
    """uvicorn's HTTP protocol with read deadlines, a header size limit and a connection limit.

    uvicorn arms only the keep-alive timeout: a client that sends its headers
    or body slowly, or nothing at all, would hold its connection for ever.

    Nor does it limit the headers' size: httptools keeps an unfinished header
    line in memory, growing it by concatenation, and hands it over only once
    the line ends, so a header that never ends grows without bound and costs
    quadratic time. The count is therefore kept here, on the bytes as they are
    fed to the parser: while a header section is unfinished, the parser is
    given at most what is left of the limit, and past it the request is
    answered 431 and the connection closed. The trailer fields after a chunked
    body are kept the same way and count the same; past the limit there the
    connection is closed, since the request's answer has begun or is owed.
    """
    # The request never reached the service: it spent no time there, nor in the store.
    ledger = ({"Ledger-Id": ledger_id} if ledger_id else {}) | {"Server-Timing": UNTIMED}
    overloaded = _raw_problem_response(
        503,
        "Service Unavailable",
        "service_overloaded",
        f"this service holds {limits.max_connections} connections already; retry later",
        {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"} | ledger,
    )
    header_too_large = _raw_problem_response(
        431,
        "Request Header Fields Too Large",
        "request_header_too_large",
        f"the request line and headers are larger than this service accepts ({limits.max_header_bytes} bytes)",
        {"Connection": "close"} | ledger,
    )

    class GuardedProtocol(HttpToolsProtocol):
        read_deadline: asyncio.TimerHandle | None = None
        #: Between messages, or inside a request's header section.
        in_header_section = True
        #: After a chunk's size line and before any of its data: a chunk of
        #: size 0 is followed by the trailer fields, a field section too.
        after_chunk_header = False
        #: Bytes of the unfinished field section given to the parser so far.
        field_bytes = 0
        #: Counts every parser event that ends a field section or shows that
        #: none was being read: a step with none of them was all field bytes.
        events = 0
        #: Bytes dropped since the 431; None until then.
        lingered: int | None = None

        def data_received(self, data: bytes) -> None:
            if self.lingered is not None:
                self.lingered += len(data)
                if self.lingered > LINGER_BYTES and not self.transport.is_closing():
                    self.transport.close()
                return
            view = memoryview(data)
            while view:
                counting = self.in_header_section or self.after_chunk_header
                if counting:
                    room = limits.max_header_bytes - self.field_bytes
                    if room <= 0:
                        self._refuse_fields()
                        return
                    step = view[:room]
                else:
                    # A body is fed in steps of the limit too: a field section
                    # that begins inside a step is counted from the next step
                    # on, so it can reach at most twice the limit.
                    step = view[: limits.max_header_bytes]
                view = view[len(step) :]
                events = self.events
                # httptools reads any buffer: the steps are views, not copies.
                super().data_received(step)  # type: ignore[arg-type]
                if self.transport.is_closing() or self.transport.get_protocol() is not self:
                    # A 400 from the parser, or an upgrade to another protocol.
                    return
                if counting and self.events == events:
                    self.field_bytes += len(step)

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
            self._field_section_ends(in_header_section=False)
            self._arm(limits.body_timeout)
            super().on_headers_complete()

        def on_chunk_header(self) -> None:
            self._field_section_ends(in_header_section=False)
            self.after_chunk_header = True

        def on_body(self, body: bytes) -> None:
            self._field_section_ends(in_header_section=False)
            super().on_body(body)

        def on_chunk_complete(self) -> None:
            self._field_section_ends(in_header_section=False)

        def on_message_complete(self) -> None:
            self._field_section_ends(in_header_section=True)
            self._disarm()
            super().on_message_complete()

        def _field_section_ends(self, in_header_section: bool) -> None:
            self.in_header_section = in_header_section
            self.after_chunk_header = False
            self.field_bytes = 0
            self.events += 1

        def _refuse_fields(self) -> None:
            self.lingered = 0
            where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            section = "header" if self.in_header_section else "trailer"
            self.logger.warning("%s sent a %s section over %d bytes: refused", where, section, limits.max_header_bytes)
            if not self.in_header_section:
                # Trailers come after the request's headers: its answer has
                # begun or is owed, and no other answer can take its place.
                self.transport.close()
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # The answer to an earlier, pipelined request is still being
                # written: a 431 now would land inside it. The connection
                # closes once that answer is complete.
                self.cycle.keep_alive = False
                self.flow.pause_reading()
                return
            self.transport.write(header_too_large)
            # Half-closed: the client reads the answer and then the end of
            # the stream, while what it still sends is read and dropped.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._arm(LINGER_SECONDS)

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
