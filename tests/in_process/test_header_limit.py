"""The header limit of server/edge.py's protocol, fed in-process, split at every point Hypothesis picks.

What a real client cannot show: how many bytes the HTTP parser was given.
A header that never ends must reach the parser no further than the limit,
and requests within the limit must be served however their bytes arrive.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from server.edge import EdgeLimits, guarded_protocol

LIMIT = 512


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it half-closed or closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.half_closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.half_closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


class Connection:
    def __init__(self, protocol: Any, transport: Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.protocol = protocol
        self.transport = transport
        self.loop = loop
        self.fed = 0
        self.requests = 0
        feed = protocol.parser.feed_data

        def counted(data: Any) -> None:
            self.fed += len(data)
            feed(data)

        # The parser is a C type: its method cannot be patched, but the protocol's reference to it can.
        protocol.parser = _Recording(protocol.parser, counted)

    def send(self, data: bytes, splits: list[int]) -> None:
        """``data`` in pieces cut at ``splits``, with the loop run between them as a socket would."""
        cuts = sorted({cut % (len(data) + 1) for cut in splits} | {0, len(data)})
        for start, end in itertools.pairwise(cuts):
            if end > start:
                self.protocol.data_received(data[start:end])
                self.settle()

    def settle(self) -> None:
        for _ in range(20):
            self.loop.run_until_complete(asyncio.sleep(0))

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.transport.written)]


class _Recording:
    def __init__(self, parser: Any, feed_data: Any) -> None:
        self._parser = parser
        self.feed_data = feed_data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


@contextmanager
def connection() -> Iterator[Connection]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    loop = asyncio.new_event_loop()
    config = Config(app, log_config=None, lifespan="off", ws="none")
    protocol_class = guarded_protocol(EdgeLimits(max_header_bytes=LIMIT))
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    peer = Connection(protocol, transport, loop)
    try:
        yield peer
    finally:
        # The app's tasks see the disconnection and end before the loop does.
        protocol.connection_lost(None)
        peer.settle()
        loop.close()


def get(total: int) -> bytes:
    """A GET whose header section is exactly ``total`` bytes."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: "
    return head + b"p" * (total - len(head) - 4) + b"\r\n\r\n"


def chunked_post(body: bytes, trailer: bytes = b"") -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailer)


def post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


splits = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=30)
within_limit = st.one_of(
    st.integers(min_value=40, max_value=LIMIT).map(get),
    st.binary(min_size=0, max_size=3 * LIMIT).map(post),
    st.binary(min_size=1, max_size=3 * LIMIT).map(lambda body: chunked_post(body, b"X-Trailer: t\r\n")),
)


@given(st.lists(within_limit, min_size=1, max_size=5), splits)
def test_requests_within_the_limit_are_served_however_their_bytes_arrive(
    requests: list[bytes], cuts: list[int]
) -> None:
    with connection() as peer:
        peer.send(b"".join(requests), cuts)
        assert peer.statuses() == [200] * len(requests)
        assert not peer.transport.closed


def test_the_count_starts_again_with_each_request() -> None:
    request = get(LIMIT)
    with connection() as peer:
        for _ in range(4):
            # All but the last byte first: the service counts an unfinished section.
            peer.send(request, [LIMIT - 1])
        assert peer.statuses() == [200] * 4


@given(st.integers(min_value=LIMIT + 1, max_value=8 * LIMIT), splits)
def test_a_header_section_over_the_limit_is_answered_431_and_reaches_the_parser_no_further_than_the_limit(
    size: int, cuts: list[int]
) -> None:
    with connection() as peer:
        peer.send(get(size), cuts)
        assert peer.statuses() == [431]
        assert peer.transport.half_closed
        assert peer.fed <= LIMIT


@given(st.lists(within_limit, max_size=3), splits)
# A read that begins inside a body and ends far inside the next header section.
@example([post(b"b" * (3 * LIMIT))], [])
@example([chunked_post(b"b" * (3 * LIMIT))], [])
def test_an_endless_header_after_other_requests_reaches_the_parser_no_further_than_twice_the_limit(
    requests: list[bytes], cuts: list[int]
) -> None:
    before = b"".join(requests)
    endless = b"GET / HTTP/1.1\r\nX-Flood: " + b"f" * (20 * LIMIT)
    with connection() as peer:
        peer.send(before + endless, cuts)
        assert peer.statuses() in ([200] * len(requests) + [431], [200] * len(requests))
        assert peer.transport.closed or peer.transport.half_closed
        assert peer.fed <= len(before) + 2 * LIMIT


@given(st.binary(min_size=1, max_size=2 * LIMIT), splits)
def test_endless_trailers_close_the_connection_without_a_second_answer(body: bytes, cuts: list[int]) -> None:
    request = chunked_post(body)[: -len(b"\r\n")] + b"X-Trailer: " + b"t" * (20 * LIMIT)
    with connection() as peer:
        peer.send(request, cuts)
        assert peer.transport.closed
        assert 431 not in peer.statuses()
        assert peer.fed <= len(request) - 20 * LIMIT + 2 * LIMIT


@pytest.mark.parametrize("max_header_bytes", [0, -1])
def test_the_limit_must_be_at_least_one_byte(max_header_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_header_bytes"):
        EdgeLimits(max_header_bytes=max_header_bytes)


def test_both_services_take_the_flag_and_the_accounts_service_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from saga.cli import build_parser as saga_parser
    from server.__main__ import build_parser as server_parser

    assert server_parser().parse_args([]).max_header_bytes == 16 * 1024
    assert server_parser().parse_args(["--max-header-bytes", "2048"]).max_header_bytes == 2048
    monkeypatch.setenv("ACCOUNTS_MAX_HEADER_BYTES", "4096")
    assert server_parser().parse_args([]).max_header_bytes == 4096
    serve = ["serve", "--service", "bank-a=http://127.0.0.1:1"]
    assert saga_parser().parse_args(serve).max_header_bytes == 16 * 1024
    assert saga_parser().parse_args([*serve, "--max-header-bytes", "2048"]).max_header_bytes == 2048
